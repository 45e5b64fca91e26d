"""Performance without labels: the math behind ``nd.estimate`` (numpy and scikit-learn only).

Reference data is the labelled held-out set given to ``nd.test``; analysis data is
what was served since. Two ingredients, each of which is enough alone when it holds:

1. **Calibration** (confidence-based estimation, as NannyML's CBPE): an isotonic map
   from the model's score to P(y = positive) fitted on the reference, so each served
   row's chance of being answered correctly is known without its label.
2. **Importance weights**: a small logistic "which sample is this row from" model on
   the features (and their squares) plus the score's logit gives each reference row
   the density ratio p_served(x) / p_reference(x), so the reference can stand in for
   the served population (weights clipped to bound their variance).

Accuracy is estimated *doubly robustly*: the mean calibrated correctness of the served
rows, plus the weighted mean of the reference rows' residuals (correct − calibrated
correctness), shrunk by how far it stands out of its noise. Where calibration holds the
residual term is ~0; where a large shift
breaks it (scores saturate, the model is misspecified where the reference was thin),
the weights put the error back. F1 and ROC-AUC use the weighted calibration. The
interval adds the chunk's own label noise (sum of c(1 − c)) to the variance of the
correction and the square of the correction itself (a large one means calibration
broke and the weights that fix it are uncertain too), so it covers the *realized*
value, not only the estimate's mean.

Regressors use direct loss estimation: gradient-boosted models of |error| and error²
from the features and the prediction, fitted on the reference with 2-fold cross-fitting,
with the same weighted residual correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z = 1.959964
MAX_WEIGHT = 20.0
MAX_FIT_ROWS = 5000


@dataclass(frozen=True)
class Estimate:
    """An estimated metric with its 95% interval (for the realized value)."""

    value: float
    ci_low: float
    ci_high: float

    def __repr__(self) -> str:
        return f"Estimate({self.value:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}])"

    def contains(self, x: float) -> bool:
        return self.ci_low <= x <= self.ci_high


NAN = Estimate(math.nan, math.nan, math.nan)


def encode(ref: dict[str, np.ndarray], cur: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Standardized numeric columns (+ squares, + missing flags) and one-hot top
    categories, fitted on both samples so neither dominates the scaling."""
    ref_parts, cur_parts = [], []
    for name in ref:
        a, b = np.asarray(ref[name]), np.asarray(cur[name])
        if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
            a, b = a.astype(float), b.astype(float)
            both = np.concatenate([a, b])
            mu, sd = np.nanmean(both), np.nanstd(both) or 1.0
            za, zb = np.nan_to_num((a - mu) / sd), np.nan_to_num((b - mu) / sd)
            ref_parts += [za, za**2 / 4]
            cur_parts += [zb, zb**2 / 4]
            if np.isnan(both).any():
                ref_parts.append(np.isnan(a).astype(float))
                cur_parts.append(np.isnan(b).astype(float))
        else:
            a, b = a.astype(str), b.astype(str)
            values, counts = np.unique(np.concatenate([a, b]), return_counts=True)
            for v in values[np.argsort(-counts)][:20]:
                ref_parts.append((a == v).astype(float))
                cur_parts.append((b == v).astype(float))
    return np.column_stack(ref_parts), np.column_stack(cur_parts)


def density_ratio(ref_x: np.ndarray, cur_x: np.ndarray) -> np.ndarray:
    """p_cur(x) / p_ref(x) at the reference rows, from a logistic domain classifier."""
    from sklearn.linear_model import LogisticRegression

    # a few thousand rows per side fit a linear domain classifier as well as all of them
    if len(ref_x) == 0 or len(cur_x) == 0:
        return np.ones(len(ref_x))  # nothing to tell the two apart: no reweighting
    rng = np.random.default_rng(0)
    fit_r = ref_x[rng.permutation(len(ref_x))[:MAX_FIT_ROWS]]
    fit_c = cur_x[rng.permutation(len(cur_x))[:MAX_FIT_ROWS]]
    x = np.vstack([fit_r, fit_c])
    d = np.r_[np.zeros(len(fit_r)), np.ones(len(fit_c))]
    # balanced classes, so the odds are the density ratio itself
    sw = np.where(d == 1, len(fit_r) / len(fit_c), 1.0)
    # second order: converges in a few steps even with hundreds of one-hot columns
    clf = LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=50)
    clf.fit(x, d, sample_weight=sw)
    w = np.exp(clf.decision_function(ref_x))
    w = np.minimum(w / w.mean(), MAX_WEIGHT)
    return w / w.mean()


def _correction(w: np.ndarray, residual: np.ndarray) -> tuple[float, float]:
    """The weighted mean residual of the reference, and its variance.

    Shrunk towards 0 by c² / (c² + var): with little shift it is mostly noise and plain
    calibration is the better estimate; a correction well out of its noise is kept. A
    large correction means calibration broke under the shift and the weights that fix
    it are themselves uncertain, so its size counts as uncertainty too.
    """
    correction = float(np.sum(w * residual) / np.sum(w))
    n_eff = np.sum(w) ** 2 / np.sum(w**2)
    var = float(np.average((residual - correction) ** 2, weights=w)) / n_eff
    shrink = correction**2 / (correction**2 + var) if var > 0 else 1.0
    return shrink * correction, var + correction**2


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _isotonic(score: np.ndarray, target: np.ndarray, weight: np.ndarray | None) -> object:
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
        score, target, sample_weight=weight
    )


def _expected_auc(p: np.ndarray, s: np.ndarray) -> float:
    """E[AUC] when row i is positive with probability p_i, scores s (ties count half)."""
    order = np.argsort(s, kind="mergesort")
    p, s = p[order], s[order]
    neg_below = np.cumsum(1 - p) - (1 - p)  # negatives strictly before, ties fixed below
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    for i, c in zip(start, counts, strict=True):
        if c > 1:
            block = slice(i, i + c)
            neg_below[block] = neg_below[i] + 0.5 * (1 - p[block]).sum() - 0.5 * (1 - p[block])
    pos, neg = p.sum(), (1 - p).sum()
    return float((p * neg_below).sum() / (pos * neg)) if pos > 0 and neg > 0 else math.nan


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else math.nan


def classifier(
    ref_score: np.ndarray,
    ref_pred: np.ndarray,
    ref_y: np.ndarray,
    cur_score: np.ndarray,
    cur_pred: np.ndarray,
    ref_x: np.ndarray | None = None,
    cur_x: np.ndarray | None = None,
    *,
    binary: bool = True,
    n_sim: int = 200,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Estimates of accuracy (and, when ``binary``, F1 and ROC-AUC) on the current rows.

    Binary: ``*_score`` is P(positive), ``*_pred`` and ``ref_y`` are 0/1.
    Multiclass: ``*_score`` is the top-class probability, ``*_pred == ref_y`` is
    correctness. ``ref_x``/``cur_x``: encoded features for the density ratio (None: no
    weighting, plain calibration).
    """
    rng = np.random.default_rng(seed)
    ref_pred, cur_pred = np.asarray(ref_pred), np.asarray(cur_pred)
    if ref_x is not None and cur_x is not None:
        extra_r, extra_c = _logit(ref_score)[:, None] / 4, _logit(cur_score)[:, None] / 4
        w = density_ratio(np.hstack([ref_x, extra_r]), np.hstack([cur_x, extra_c]))
    else:
        w = np.ones(len(ref_score))
    correct_ref = (ref_pred == ref_y).astype(float)
    if binary:
        plain = _isotonic(ref_score, ref_y.astype(float), None)
        weighted = _isotonic(ref_score, ref_y.astype(float), w)
        p_ref = plain.predict(ref_score)  # type: ignore[attr-defined]
        p_cur = plain.predict(cur_score)  # type: ignore[attr-defined]
        c_ref = np.where(ref_pred == 1, p_ref, 1 - p_ref)
        c_cur = np.where(cur_pred == 1, p_cur, 1 - p_cur)
    else:
        plain = _isotonic(ref_score, correct_ref, None)
        c_ref = plain.predict(ref_score)  # type: ignore[attr-defined]
        c_cur = plain.predict(cur_score)  # type: ignore[attr-defined]
    n = len(c_cur)
    residual = correct_ref - c_ref
    correction, var = _correction(w, residual)
    value = float(c_cur.mean()) + correction
    var += np.sum(c_cur * (1 - c_cur)) / n**2
    half = Z * math.sqrt(var)
    out = {"accuracy": Estimate(value, max(value - half, 0.0), min(value + half, 1.0))}
    if not binary:
        return out
    p = weighted.predict(cur_score)  # type: ignore[attr-defined]
    tp, fp, fn = (p * cur_pred).sum(), ((1 - p) * cur_pred).sum(), (p * (1 - cur_pred)).sum()
    f1, auc = _f1(tp, fp, fn), _expected_auc(p, cur_score)
    f1s, aucs = [], []
    groups = score_groups(cur_score)
    for _ in range(n_sim):  # the realized metric's spread when labels follow p
        y = rng.random(n) < p
        f1s.append(_f1((y & (cur_pred == 1)).sum(), (~y & (cur_pred == 1)).sum(),
                       (y & (cur_pred == 0)).sum()))  # fmt: skip
        aucs.append(_sim_auc(y, groups))
    out["f1"] = _interval(f1, np.asarray(f1s))
    out["roc_auc"] = _interval(auc, np.asarray(aucs))
    return out


def score_groups(s: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's index among the sorted distinct scores (ties share one), and how many."""
    values, index = np.unique(s, return_inverse=True)
    return index, len(values)


def grouped_auc(index: np.ndarray, n_groups: int, pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC-AUC from per-row positive and negative weights (labels, bootstrap counts),
    ties counting half: one pass over the distinct scores, no sorting per call."""
    p = np.bincount(index, pos, n_groups)
    q = np.bincount(index, neg, n_groups)
    total_p, total_q = p.sum(), q.sum()
    if total_p <= 0 or total_q <= 0:
        return math.nan
    below = np.cumsum(q) - q
    return float((p * (below + 0.5 * q)).sum() / (total_p * total_q))


def _sim_auc(y: np.ndarray, groups: tuple[np.ndarray, int]) -> float:
    return grouped_auc(groups[0], groups[1], y.astype(float), (~y).astype(float))


def _interval(value: float, draws: np.ndarray) -> Estimate:
    draws = draws[np.isfinite(draws)]
    if value != value or not len(draws):
        return NAN
    lo, hi = np.percentile(draws - np.mean(draws), [2.5, 97.5])
    return Estimate(float(value), float(value + lo), float(value + hi))


def regressor(
    ref_features: np.ndarray,
    ref_pred: np.ndarray,
    ref_y: np.ndarray,
    cur_features: np.ndarray,
    cur_pred: np.ndarray,
    *,
    weight: bool = True,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Direct loss estimation of MAE and RMSE on the current rows."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    xr = np.column_stack([ref_features, ref_pred])
    xc = np.column_stack([cur_features, cur_pred])
    err = np.asarray(ref_y, float) - np.asarray(ref_pred, float)
    w = density_ratio(ref_features, cur_features) if weight else np.ones(len(err))
    rng = np.random.default_rng(seed)
    fold = rng.random(len(err)) < 0.5
    out = {}
    for metric, target in (("mae", np.abs(err)), ("rmse", err**2)):
        model = HistGradientBoostingRegressor(max_iter=100, random_state=seed)
        cross = np.empty(len(err))
        for part in (fold, ~fold):  # each half predicted by a model that never saw it
            cross[part] = model.fit(xr[~part], target[~part]).predict(xr[part])
        cur = np.maximum(model.fit(xr, target).predict(xc), 0.0)
        residual = target - cross
        correction, spread = _correction(w, residual)
        level: float = max(float(cur.mean()) + correction, 0.0)
        # the chunk's own spread of losses plus the correction's uncertainty
        spread += float(np.average((target - target.mean()) ** 2, weights=w)) / len(cur)
        half = Z * math.sqrt(spread)
        if metric == "rmse":  # an interval for the mean squared error, then its root
            out[metric] = Estimate(math.sqrt(level), math.sqrt(max(level - half, 0.0)),
                                   math.sqrt(level + half))  # fmt: skip
        else:
            out[metric] = Estimate(level, max(level - half, 0.0), level + half)
    return out
