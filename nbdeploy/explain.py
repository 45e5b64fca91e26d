"""Per-feature explanations of one prediction, for ``nd.audit``.

Every method compares the prediction with a *baseline* row built from the version's
training profile (median of each numeric column, most frequent category of each
categorical one):

- ``linear``: for a linear model (``decision_function``) over per-column transforms
  (scaling, one-hot encoding), the decision value is a sum of per-input-column
  terms, so ``g(baseline with column j set to x_j) - g(baseline)`` is exactly column
  j's share of ``g(x) - g(baseline)`` (the coefficient times the transformed
  difference, mapped back to the input column). nbdeploy checks that the shares add
  up before calling them exact.
- ``shapley`` (any model): interventional Shapley values of the game
  ``v(S) = g(x with the columns in S from x and the rest from the baseline)``, where
  ``g`` is the probability of the predicted class, or the predicted value for a
  regressor. They add up to ``g(x) - g(baseline)`` (the method string states both
  values so the total can be checked). With up to 12 columns they are exact: all
  ``2**d`` coalitions are predicted in one batch and combined with the weights
  ``|S|! (d - |S| - 1)! / d!``. With more columns they are estimated from 64 random
  permutations (32 antithetic pairs, fixed seed), each walking from the baseline to
  ``x`` one column at a time; every walk telescopes, so the estimate still adds up
  exactly. A column without a baseline (never observed in training) is held at its
  value in ``x`` and gets no share.

Gradient-boosted trees (XGBoost, LightGBM, native or scikit-learn API) explain
themselves first: the library's own ``pred_contribs`` / ``pred_contrib`` give each
feature's exact share of the raw score (log-odds for classifiers), which with the
bias add up to it; the method string states the bias and the raw score. A bare
scikit-learn tree ensemble gets TreeSHAP (``shap.TreeExplainer``, exact for trees)
when shap is installed, and the Shapley values above otherwise. Neither needs a
baseline row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from nbdeploy.serving.adapter import LoadedModel


def baseline(profile: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The typical training row: numeric medians, most frequent categories."""
    row: dict[str, Any] = {}
    for name in names:
        col = profile.get("columns", {}).get(name, {})
        if col.get("kind") == "numeric" and col.get("quantiles"):
            value = col["quantiles"][len(col["quantiles"]) // 2]
            row[name] = value
        elif col.get("frequencies"):
            freqs = {k: v for k, v in col["frequencies"].items() if k != "__other__"}
            row[name] = max(freqs, key=freqs.__getitem__)
        else:
            row[name] = None
    return row


def _rows(model: LoadedModel, rows: list[dict[str, Any]]) -> Any:
    columns = {n: [r[n] for r in rows] for n in model.schema.names}
    return model.schema.from_columns(columns)


def _target(model: LoadedModel, x: dict[str, Any]) -> tuple[Any, int | None]:
    out = model.predict(_rows(model, [x]))
    if out.proba is None:
        return out.predictions[0], None
    return out.predictions[0], int(np.argmax(out.proba[0]))


def explain(
    model: LoadedModel, x: dict[str, Any], profile: dict[str, Any]
) -> tuple[dict[str, float], str]:
    """``({feature: contribution}, method)`` for one input row, largest first."""
    names = model.schema.names
    base = baseline(profile, names)
    for col in model.schema.columns:  # a median of integers is not always one
        if col.type == "long" and isinstance(base[col.name], float):
            base[col.name] = round(base[col.name])
    _, cls = _target(model, x)
    result = _boosted(model, x, cls) or _treeshap(model, x, cls) or _linear(model, x, base, cls)
    if result is None:
        result = _shapley(model, x, base, cls)
    shares, method = result
    ordered = sorted(shares.items(), key=lambda kv: -abs(kv[1]))
    return {k: round(v, 10) for k, v in ordered}, method


def _g(model: LoadedModel, rows: list[dict[str, Any]], cls: int | None) -> np.ndarray:
    out = model.predict(_rows(model, rows))
    if out.proba is not None and cls is not None:
        return np.asarray(out.proba[:, cls], dtype=np.float64)
    return np.asarray(out.predictions, dtype=np.float64)


def _matrix(model: LoadedModel, x: dict[str, Any]) -> np.ndarray | None:
    """``x`` as a one-row float matrix, when every column is numeric and the model is bare."""
    if not model.native or hasattr(model.model, "steps") or not model.schema.numeric:
        return None
    try:
        return np.array([[float(x[n]) for n in model.schema.names]], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _boosted(
    model: LoadedModel, x: dict[str, Any], cls: int | None
) -> tuple[dict[str, float], str] | None:
    """The booster's own exact per-feature contributions to its raw score."""
    from nbdeploy import boosters

    row = _matrix(model, x)
    found = boosters.contributions(model.model, row) if row is not None else None
    if found is None:
        return None
    contrib, margin, library = found
    k = 0 if contrib.shape[1] == 1 else (cls or 0)
    values, raw = contrib[0, k], float(margin[0, k])
    sign = -1.0 if contrib.shape[1] == 1 and cls == 0 else 1.0  # binary: speak for class 0
    bias, shares = (
        sign * float(values[-1]),
        {n: sign * float(v) for n, v in zip(model.schema.names, values[:-1], strict=True)},
    )
    if not np.isclose(bias + sum(shares.values()), sign * raw, rtol=1e-5, atol=1e-5):
        return None
    option = "pred_contribs" if library == "xgboost" else "pred_contrib"
    return shares, (
        f"{library} {option} (exact; bias {bias:.10g} + sum = raw score {sign * raw:.10g}"
        f"{' (log-odds)' if cls is not None else ''})"
    )


#: scikit-learn tree ensembles that shap's TreeExplainer explains exactly
_TREES = (
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
)


def _treeshap(
    model: LoadedModel, x: dict[str, Any], cls: int | None
) -> tuple[dict[str, float], str] | None:
    """TreeSHAP (exact, path-dependent) for a bare scikit-learn tree ensemble."""
    row = _matrix(model, x)
    if row is None or model.flavor != "sklearn" or type(model.model).__name__ not in _TREES:
        return None
    try:
        import shap
    except ImportError:
        return None
    try:
        explainer = shap.TreeExplainer(model.model)
        values = np.asarray(explainer.shap_values(row), dtype=np.float64)
        expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    except Exception:
        return None
    values = values.reshape(values.shape[0], len(model.schema.names), -1)[0]  # (d, k)
    k = 0 if values.shape[1] == 1 else (cls or 0)
    sign = -1.0 if values.shape[1] == 1 and cls == 0 else 1.0  # binary log-odds: class 1's
    shares = {n: sign * float(v) for n, v in zip(model.schema.names, values[:, k], strict=True)}
    base = sign * float(expected[min(k, len(expected) - 1)])
    total = base + sum(shares.values())
    return shares, (
        f"treeshap (exact, path-dependent; expected value {base:.10g} + sum = "
        f"model output {total:.10g})"
    )


def _linear(
    model: LoadedModel, x: dict[str, Any], base: dict[str, Any], cls: int | None
) -> tuple[dict[str, float], str] | None:
    native: Any = model.model if model.flavor == "sklearn" else None
    final = native.steps[-1][1] if hasattr(native, "steps") else native
    if final is None or not hasattr(final, "coef_") or any(v is None for v in base.values()):
        return None
    names = model.schema.names
    rows = [base, x] + [{**base, n: x[n]} for n in names]
    try:
        features = model.features(_rows(model, rows))
        if hasattr(native, "decision_function"):
            g: Any = np.asarray(native.decision_function(features), dtype=np.float64)
        else:
            g = np.asarray(native.predict(features), dtype=np.float64)
    except Exception:
        return None
    if g.ndim == 2:  # multiclass: the predicted class's decision value
        g = g[:, cls or 0]
    elif cls == 0:  # binary: decision_function speaks for classes_[1]
        g = -g
    shares = {n: float(g[i + 2] - g[0]) for i, n in enumerate(names)}
    if not np.isclose(sum(shares.values()), g[1] - g[0], rtol=1e-6, atol=1e-9):
        return None  # interactions between columns: not additive, so not exact
    return shares, "linear (exact decision-function shares vs the training baseline)"


#: Up to this many columns, Shapley values are computed exactly (2**d predictions).
EXACT_MAX_FEATURES = 12
#: Permutations sampled (in antithetic pairs) above ``EXACT_MAX_FEATURES`` columns.
PERMUTATIONS = 64
_SEED = 0


def _shapley(
    model: LoadedModel, x: dict[str, Any], base: dict[str, Any], cls: int | None
) -> tuple[dict[str, float], str]:
    """Interventional Shapley values of ``g`` between the baseline and ``x``."""
    names = model.schema.names
    players = [n for n in names if base[n] is not None]
    held = [n for n in names if base[n] is None]  # no baseline: stays at x
    start = {n: x[n] if base[n] is None else base[n] for n in names}
    d = len(players)
    if d == 0:
        return {n: 0.0 for n in names}, "shapley (no column has a training baseline)"

    def rows_for(masks: np.ndarray) -> list[dict[str, Any]]:
        """One row per boolean mask over ``players``: True takes x's value."""
        rows = []
        for mask in masks:
            row = dict(start)
            for j in np.flatnonzero(mask):
                row[players[j]] = x[players[j]]
            rows.append(row)
        return rows

    if d <= EXACT_MAX_FEATURES:
        values, g_base, g_x, how = _exact(d, rows_for, model, cls)
    else:
        values, g_base, g_x, how = _sampled(d, rows_for, model, cls)
    shares = {n: 0.0 for n in names}
    shares.update({n: float(v) for n, v in zip(players, values, strict=True)})
    method = (
        f"shapley ({how}, baseline: training medians/modes; "
        f"sum = g(x) - g(baseline) = {g_x:.10g} - {g_base:.10g})"
    )
    if held:
        method += f"; held at x (no baseline): {', '.join(held)}"
    return shares, method


def _exact(
    d: int,
    rows_for: Callable[[np.ndarray], list[dict[str, Any]]],
    model: LoadedModel,
    cls: int | None,
) -> tuple[np.ndarray, float, float, str]:
    """Exact Shapley values from all ``2**d`` coalitions, predicted in one batch."""
    codes = np.arange(2**d)
    bits = 1 << np.arange(d)
    masks = (codes[:, None] & bits[None, :]) != 0  # coalition code -> member columns
    g = _g(model, rows_for(masks), cls)
    size = masks.sum(axis=1)
    fact = np.array([math.factorial(k) for k in range(d + 1)], dtype=np.float64)
    weight = fact[:-1] * fact[::-1][1:] / fact[d]  # |S|! (d - |S| - 1)! / d! by |S|
    values = np.empty(d)
    for j in range(d):
        without = codes[~masks[:, j]]  # coalitions S not containing j
        values[j] = float(np.sum(weight[size[without]] * (g[without | bits[j]] - g[without])))
    return values, float(g[0]), float(g[-1]), f"exact, {2**d} coalitions"


def _sampled(
    d: int,
    rows_for: Callable[[np.ndarray], list[dict[str, Any]]],
    model: LoadedModel,
    cls: int | None,
) -> tuple[np.ndarray, float, float, str]:
    """Shapley values averaged over sampled permutations, all predicted in one batch."""
    rng = np.random.default_rng(_SEED)
    half = [rng.permutation(d) for _ in range(PERMUTATIONS // 2)]
    perms = [p for perm in half for p in (perm, perm[::-1])]  # antithetic pairs
    masks = np.zeros((len(perms) * (d + 1), d), dtype=bool)
    for i, perm in enumerate(perms):
        for k in range(1, d + 1):  # row k of walk i: the first k columns of perm from x
            masks[i * (d + 1) + k, perm[:k]] = True
    g = _g(model, rows_for(masks), cls).reshape(len(perms), d + 1)
    values = np.zeros(d)
    for i, perm in enumerate(perms):
        values[perm] += np.diff(g[i])
    values /= len(perms)
    g_base, g_x = float(g[:, 0].mean()), float(g[:, -1].mean())
    return values, g_base, g_x, f"{len(perms)} sampled permutations, seed {_SEED}"
