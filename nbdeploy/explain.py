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
- ``baseline-substitution`` (any model): ``g(x) - g(x with column j set to its
  baseline)``, where ``g`` is the probability of the predicted class, or the
  predicted value for a regressor.
- ``shap``: when the ``shap`` package is installed, a permutation explainer over a
  small background drawn around the baseline.
"""

from __future__ import annotations

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
        variants = [x] + [{**x, n: base[n]} for n in names]
        g = _g(model, variants, cls)
        result = ({n: float(g[0] - g[i + 1]) for i, n in enumerate(names)}, "baseline-substitution")
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
