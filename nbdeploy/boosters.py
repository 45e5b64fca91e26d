"""Native XGBoost and LightGBM boosters, served like scikit-learn classifiers and regressors.

A ``xgboost.Booster`` or ``lightgbm.Booster`` knows its objective but not the labels it
was trained on, and has no ``predict_proba``. :class:`NativeBooster` gives it the face
the server and the gate already use (``predict``, ``predict_proba``, ``classes_``),
with the labels recorded at registration: class ``i`` of the booster is ``classes[i]``.
Binary objectives give P(class 1); the label is ``classes[p > 0.5]``, which is also the
argmax of ``[1 - p, p]``, so one call answers both.

:func:`contributions` gives the model's own exact per-feature contributions
(``pred_contribs`` / ``pred_contrib``, TreeSHAP inside the library) for native boosters
and the scikit-learn API alike; with the bias they add up to the raw score.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nbdeploy.integrity import Verified

#: MLflow flavors served by :class:`NativeBooster`
FLAVORS = ("xgboost", "lightgbm")


class NativeBooster:
    """A native booster with the scikit-learn prediction methods the server calls."""

    def __init__(self, raw: Any, kind: str, classes: list[Any] | None) -> None:
        self.raw = raw
        self.kind = kind
        self.objective = objective(raw, kind)
        self.task = task_of(self.objective)
        self.classes_ = _labels(classes)
        self.feature_names = list(raw.feature_names if kind == "xgboost" else raw.feature_name())

    def _matrix(self, X: Any) -> Any:
        values = np.asarray(X, dtype=np.float64)
        if self.kind == "xgboost":
            import xgboost

            return xgboost.DMatrix(values, feature_names=self.feature_names or None)
        return values

    def _scores(self, X: Any) -> np.ndarray:
        return np.asarray(self.raw.predict(self._matrix(X)))

    def predict_proba(self, X: Any) -> np.ndarray:
        scores = self._scores(X)
        if scores.ndim == 1:  # binary: P(class 1)
            scores = np.column_stack([1 - scores, scores])
        return scores

    def predict(self, X: Any) -> np.ndarray:
        if self.task != "classification" or self.classes_ is None:
            return self._scores(X)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def _labels(classes: list[Any] | None) -> np.ndarray | None:
    if classes is None:
        return None
    numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes)
    return np.asarray(classes) if numeric else np.asarray(classes, dtype=object)


def objective(raw: Any, kind: str) -> str:
    """The training objective's name: ``binary:logistic``, ``multiclass``, ``regression``..."""
    if kind == "xgboost":
        return str(json.loads(raw.save_config())["learner"]["objective"]["name"])
    for line in raw.model_to_string().splitlines():
        if line.startswith("objective="):
            return line.split("=", 1)[1].split()[0]
    return "unknown"


def task_of(name: str) -> str:
    if name in ("binary:logistic", "multi:softprob", "binary", "multiclass"):
        return "classification"
    if name.startswith(("reg:", "regression", "count:", "huber", "fair", "poisson", "quantile")):
        return "regression"
    return "unknown"


def is_native(model: Any) -> str | None:
    """``"xgboost"`` / ``"lightgbm"`` for a native Booster, else None."""
    kind = type(model).__module__.split(".")[0]
    return kind if kind in FLAVORS and type(model).__name__ == "Booster" else None


def load(verified: Verified, kind: str, classes: list[Any] | None) -> NativeBooster:
    """The booster of a verified MLflow ``xgboost``/``lightgbm`` folder, from the bytes
    that were checked (never read from the folder again)."""
    import yaml

    conf = yaml.safe_load(verified.files["MLmodel"])["flavors"][kind]
    data = verified.files[conf["data"]]
    if kind == "xgboost":
        import xgboost

        raw: Any = xgboost.Booster()
        raw.load_model(bytearray(data))
    else:
        import lightgbm

        raw = lightgbm.Booster(model_str=data.decode())
    return NativeBooster(raw, kind, classes)


def contributions(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, str] | None:
    """``(contributions, raw scores, library)`` of a booster (native or scikit-learn API).

    ``contributions`` has shape (n, k, d + 1): per class, per feature, then the bias;
    ``raw scores`` (n, k) is what they add up to (k = 1 for binary and regression).
    """
    if isinstance(model, NativeBooster):
        raw, kind = model.raw, model.kind
    elif type(model).__module__.split(".")[0] in FLAVORS:
        kind = type(model).__module__.split(".")[0]
        raw = model.get_booster() if kind == "xgboost" else getattr(model, "booster_", None)
    else:
        return None
    if raw is None:
        return None
    values = np.asarray(X, dtype=np.float64)
    n, d = values.shape
    if kind == "xgboost":
        import xgboost

        matrix = xgboost.DMatrix(values, feature_names=raw.feature_names or None)
        contrib = np.asarray(raw.predict(matrix, pred_contribs=True), dtype=np.float64)
        margin = np.asarray(raw.predict(matrix, output_margin=True), dtype=np.float64)
    else:
        contrib = np.asarray(raw.predict(values, pred_contrib=True), dtype=np.float64)
        margin = np.asarray(raw.predict(values, raw_score=True), dtype=np.float64)
    return contrib.reshape(n, -1, d + 1), margin.reshape(n, -1), kind
