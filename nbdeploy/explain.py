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
- ``shap``: when the ``shap`` package is installed, a permutation explainer over a
  small background drawn around the baseline.
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
    result = _shap(model, x, base, cls)
    if result is None:
        result = _linear(model, x, base, cls)
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


def _shap(
    model: LoadedModel, x: dict[str, Any], base: dict[str, Any], cls: int | None
) -> tuple[dict[str, float], str] | None:
    try:
        import shap
    except ImportError:
        return None
    names = model.schema.names
    try:
        # work on a row of "take x's value / take the baseline's" switches, so shap never
        # has to understand strings or categories
        def g(mask: np.ndarray) -> np.ndarray:
            rows = [{n: x[n] if m[j] else base[n] for j, n in enumerate(names)} for m in mask]
            return _g(model, rows, cls)

        explainer = shap.explainers.Permutation(g, np.zeros((1, len(names))))
        values = explainer(np.ones((1, len(names))), silent=True).values[0]
        return {n: float(v) for n, v in zip(names, values, strict=True)}, "shap (permutation)"
    except Exception:
        return None


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
