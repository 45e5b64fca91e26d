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
MAX_FIT_ROWS = 3000
#: standardized features are clipped to this many standard deviations
CLIP_Z = 5.0
#: a correction this many standard errors out of its noise is kept by half
HALF_KEPT_AT = 2.0


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


class Encoder:
    """Features as numbers for the domain classifier, fitted once on the reference:
    standardized numeric columns (+ squares, + missing flags where the reference has
    gaps) and one-hot top categories. Fitting on the reference alone lets it be encoded
    once and every analysis chunk be compared with it."""

    def __init__(self, ref: dict[str, np.ndarray]) -> None:
        self.numeric: dict[str, tuple[float, float, bool]] = {}
        self.categories: dict[str, np.ndarray] = {}
        for name, column in ref.items():
            a = np.asarray(column)
            if a.dtype.kind in "fiub":
                a = a.astype(float)
                mu, sd = float(np.nanmean(a)) if len(a) else 0.0, float(np.nanstd(a)) or 1.0
                self.numeric[name] = (0.0 if mu != mu else mu, sd, bool(np.isnan(a).any()))
            else:
                # hashing, not sorting strings: pandas' factorize is the fast way
                codes, values = _factorize(a)
                counts = np.bincount(codes[codes >= 0], minlength=len(values))
                self.categories[name] = np.asarray(values)[np.argsort(-counts, kind="stable")[:20]]

    def transform(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(columns.values()))) if columns else 0
        width = sum(3 if flag else 2 for _, _, flag in self.numeric.values())
        # float32: half the memory of a large reference; the domain classifier's Newton
        # steps run twice as fast (clipped features keep its Hessian well conditioned)
        out = np.zeros((n, width + sum(len(top) for top in self.categories.values())), np.float32)
        j = 0
        for name, (mu, sd, flag) in self.numeric.items():
            a = _as_float(columns[name])
            # clipped: one far outlier's square would otherwise steer the domain
            # classifier, and which reference rows it is fitted on would decide the estimate
            z = np.clip(np.nan_to_num((a - mu) / sd), -CLIP_Z, CLIP_Z)
            out[:, j], out[:, j + 1] = z, z**2 / 4
            if flag:
                out[:, j + 2] = np.isnan(a)
            j += 3 if flag else 2
        for name, top in self.categories.items():
            codes, values = _factorize(np.asarray(columns[name]))
            lookup = {v: i for i, v in enumerate(values)}
            for v in top:  # compare small integer codes, not strings
                i = lookup.get(v)
                if i is not None:
                    out[:, j] = codes == i
                j += 1
        return out


def _factorize(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    codes, values = pd.factorize(np.asarray(a, dtype=object))
    return codes, np.asarray(values, dtype=object)


def _as_float(column: np.ndarray) -> np.ndarray:
    a = np.asarray(column)
    if a.dtype.kind in "fiub":
        return a.astype(float)
    import pandas as pd  # a numeric reference column that arrives as objects

    return pd.to_numeric(pd.Series(a), errors="coerce").to_numpy(float)


def encode(ref: dict[str, np.ndarray], cur: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Both samples encoded by an :class:`Encoder` fitted on the reference."""
    encoder = Encoder(ref)
    return encoder.transform(ref), encoder.transform(cur)


def fit_rows(n: int, seed: int = 0) -> np.ndarray:
    """Which of ``n`` rows the density ratio is fitted on: all, or ``MAX_FIT_ROWS`` of
    them at random (in order). Encode only these rows of a served chunk."""
    if n <= MAX_FIT_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_FIT_ROWS, replace=False))


def density_ratio(
    ref_x: np.ndarray,
    cur_x: np.ndarray,
    ref_extra: np.ndarray | None = None,
    cur_extra: np.ndarray | None = None,
) -> np.ndarray:
    """p_cur(x) / p_ref(x) at the reference rows, from a logistic domain classifier.

    ``cur_x`` may be all served rows or only those :func:`fit_rows` picks (encoding
    the rest would be wasted). ``*_extra``: one more feature column per side (the
    score's logit), given apart so that no copy of the whole feature matrices is made
    to append it.
    """
    from sklearn.linear_model import LogisticRegression

    # a few thousand rows per side fit a linear domain classifier as well as all of them
    if len(ref_x) == 0 or len(cur_x) == 0:
        return np.ones(len(ref_x))  # nothing to tell the two apart: no reweighting
    pick_r, pick_c = fit_rows(len(ref_x)), fit_rows(len(cur_x), seed=1)
    fit_r, fit_c = ref_x[pick_r], cur_x[pick_c]
    if ref_extra is not None and cur_extra is not None:
        fit_r = np.column_stack([fit_r, ref_extra[pick_r]])
        fit_c = np.column_stack([fit_c, cur_extra[pick_c]])
    x = np.vstack([fit_r, fit_c]).astype(np.float32, copy=False)
    d = np.r_[np.zeros(len(fit_r)), np.ones(len(fit_c))]
    # balanced classes, so the odds are the density ratio itself
    sw = np.where(d == 1, len(fit_r) / len(fit_c), 1.0)
    # second order: converges in a few steps even with hundreds of one-hot columns
    clf = LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=50)
    clf.fit(x, d, sample_weight=sw)
    coef = clf.coef_[0]
    logit = (ref_x @ coef[: ref_x.shape[1]].astype(ref_x.dtype)).astype(float)
    logit += clf.intercept_[0]
    if ref_extra is not None and cur_extra is not None:
        logit += ref_extra * coef[-1]
    w = np.exp(logit)
    w = np.minimum(w / w.mean(), MAX_WEIGHT)
    return w / w.mean()


def _correction(w: np.ndarray, residual: np.ndarray) -> tuple[float, float]:
    """The weighted mean residual of the reference, and its variance.

    Shrunk towards 0 by c² / (c² + 4 var), so half of it is kept at two standard errors
    out of its noise: with little shift it is mostly noise and plain calibration is the
    better estimate (on NannyML's car-loan data even c² / (c² + var) let enough noise
    through to lose to plain calibration); a correction well out of its noise is kept. A
    large correction means calibration broke under the shift and the weights that fix
    it are themselves uncertain, so its size counts as uncertainty too.
    """
    correction = float(np.sum(w * residual) / np.sum(w))
    n_eff = np.sum(w) ** 2 / np.sum(w**2)
    var = float(np.average((residual - correction) ** 2, weights=w)) / n_eff
    shrink = correction**2 / (correction**2 + HALF_KEPT_AT**2 * var) if var > 0 else 1.0
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


class ClassifierReference:
    """The labelled held-out data, prepared once for any number of analysis chunks:
    the plain calibration, each row's residual, and the encoded features.

    Binary: ``score`` is P(positive), ``pred`` and ``y`` are 0/1. Multiclass: ``score``
    is the top-class probability, ``pred == y`` is correctness. ``x``: encoded features
    for the density ratio (None: no weighting, plain calibration).
    """

    def __init__(
        self,
        score: np.ndarray,
        pred: np.ndarray,
        y: np.ndarray,
        x: np.ndarray | None = None,
        *,
        binary: bool = True,
    ) -> None:
        self.score, self.binary = np.asarray(score, float), binary
        pred = np.asarray(pred)
        self.y = np.asarray(y)
        correct = (pred == self.y).astype(float)
        if binary:
            self.plain = _isotonic(self.score, self.y.astype(float), None)
            p = self.plain.predict(self.score)  # type: ignore[attr-defined]
            c = np.where(pred == 1, p, 1 - p)
        else:
            self.plain = _isotonic(self.score, correct, None)
            c = self.plain.predict(self.score)  # type: ignore[attr-defined]
        self.residual = correct - c
        self.x = x
        # the score's logit is a feature of the density ratio too
        self.logit = _logit(self.score) / 4

    def estimate(
        self,
        score: np.ndarray,
        pred: np.ndarray,
        x: np.ndarray | None = None,
        *,
        x_rows: np.ndarray | None = None,
        n_sim: int = 200,
        seed: int = 0,
        accuracy_only: bool = False,
    ) -> dict[str, Estimate]:
        """Accuracy (and, when binary and not ``accuracy_only``, F1 and ROC-AUC) of one
        chunk of served rows. ``x``: their encoded features, or only those of rows
        ``x_rows`` (as :func:`fit_rows` picks them: all the density ratio reads)."""
        score, pred = np.asarray(score, float), np.asarray(pred)
        if self.x is not None and x is not None:
            logit = _logit(score if x_rows is None else score[x_rows]) / 4
            w = density_ratio(self.x, x, self.logit, logit)
        else:
            w = np.ones(len(self.score))
        p_cur = self.plain.predict(score)  # type: ignore[attr-defined]
        c_cur = np.where(pred == 1, p_cur, 1 - p_cur) if self.binary else p_cur
        n = len(c_cur)
        correction, var = _correction(w, self.residual)
        value = min(max(float(c_cur.mean()) + correction, 0.0), 1.0)  # a share, whatever w says
        var += np.sum(c_cur * (1 - c_cur)) / n**2
        half = Z * math.sqrt(var)
        out = {"accuracy": Estimate(value, max(value - half, 0.0), min(value + half, 1.0))}
        if not self.binary or accuracy_only:
            return out
        weighted = _isotonic(self.score, self.y.astype(float), w)
        p = weighted.predict(score)  # type: ignore[attr-defined]
        tp, fp, fn = (p * pred).sum(), ((1 - p) * pred).sum(), (p * (1 - pred)).sum()
        f1, auc = _f1(tp, fp, fn), _expected_auc(p, score)
        f1s, aucs = [], []
        groups = score_groups(score)
        rng = np.random.default_rng(seed)
        for _ in range(n_sim):  # the realized metric's spread when labels follow p
            y = rng.random(n) < p
            f1s.append(_f1((y & (pred == 1)).sum(), (~y & (pred == 1)).sum(),
                           (y & (pred == 0)).sum()))  # fmt: skip
            aucs.append(_sim_auc(y, groups))
        out["f1"] = _interval(f1, np.asarray(f1s))
        out["roc_auc"] = _interval(auc, np.asarray(aucs))
        return out


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
    """One chunk's estimates (see :class:`ClassifierReference`, which prepares the
    reference once for many chunks)."""
    reference = ClassifierReference(ref_score, ref_pred, ref_y, ref_x, binary=binary)
    return reference.estimate(cur_score, cur_pred, cur_x, n_sim=n_sim, seed=seed)


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


class RegressorReference:
    """Direct loss estimation, prepared once: gradient-boosted models of |error| and
    error² from the features and the prediction, fitted on the reference, with 2-fold
    cross-fitted residuals for the weighted correction."""

    def __init__(
        self, features: np.ndarray, pred: np.ndarray, y: np.ndarray, *, seed: int = 0
    ) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.features = features
        xr = np.column_stack([features, pred])
        err = np.asarray(y, float) - np.asarray(pred, float)
        fold = np.random.default_rng(seed).random(len(err)) < 0.5
        self.models, self.targets, self.residuals = {}, {}, {}
        for metric, target in (("mae", np.abs(err)), ("rmse", err**2)):
            model = HistGradientBoostingRegressor(max_iter=100, random_state=seed)
            cross = np.empty(len(err))
            for part in (fold, ~fold):  # each half predicted by a model that never saw it
                cross[part] = model.fit(xr[~part], target[~part]).predict(xr[part])
            self.models[metric] = HistGradientBoostingRegressor(max_iter=100, random_state=seed)
            self.models[metric].fit(xr, target)
            self.targets[metric], self.residuals[metric] = target, target - cross

    def estimate(
        self, features: np.ndarray, pred: np.ndarray, *, weight: bool = True
    ) -> dict[str, Estimate]:
        """MAE and RMSE of one chunk of served rows."""
        xc = np.column_stack([features, pred])
        n_ref = len(self.features)
        w = density_ratio(self.features, features) if weight else np.ones(n_ref)
        out = {}
        for metric, model in self.models.items():
            target = self.targets[metric]
            cur = np.maximum(model.predict(xc), 0.0)
            correction, spread = _correction(w, self.residuals[metric])
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
    """One chunk's MAE and RMSE (see :class:`RegressorReference`)."""
    reference = RegressorReference(ref_features, ref_pred, ref_y, seed=seed)
    return reference.estimate(cur_features, cur_pred, weight=weight)
