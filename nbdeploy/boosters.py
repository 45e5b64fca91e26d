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


class Recipe:
    """A native booster's recipe without its trees: kind, training parameters, number
    of rounds and class labels. What the retrain notebook refits: ``fit(X, y)`` trains
    a new native booster of the same kind on new data and returns it, so it registers
    (and serves) exactly as the version it replaces."""

    def __init__(self, native: NativeBooster, *, seed: int | None = None) -> None:
        raw, self.kind, self.classes = native.raw, native.kind, native.classes_
        if self.kind == "xgboost":
            conf = json.loads(raw.save_config())["learner"]
            booster = conf["gradient_booster"]
            # the tree parameters as trained; empty constraint lists are not parameters
            params: dict[str, Any] = {
                k: v for k, v in booster.get("tree_train_param", {}).items() if v not in ("", "()")
            }
            method = booster.get("gbtree_train_param", {}).get("tree_method")
            if method:
                params["tree_method"] = method
            train = conf["learner_train_param"]
            params.update(objective=train["objective"], booster=train["booster"])
            num_class = int(conf["learner_model_param"].get("num_class", "0"))
            if num_class > 1:
                params["num_class"] = num_class
            params["seed"] = int(conf["generic_param"].get("seed", 0)) if seed is None else seed
            self.rounds = int(raw.num_boosted_rounds())
        else:
            params = dict(raw.params)
            params.pop("num_iterations", None)  # the rounds are given to train() below
            params["verbosity"] = -1
            if seed is not None:
                params["seed"] = seed
            self.rounds = int(raw.current_iteration())
        self.params = params

    def _targets(self, y: Any) -> np.ndarray:
        if self.classes is None:
            return np.asarray(y, dtype=np.float64)
        from nbdeploy.exceptions import JobError
        from nbdeploy.monitoring.metrics import label_text

        index = {label_text(c): i for i, c in enumerate(self.classes)}
        texts = [label_text(v) for v in np.asarray(y, dtype=object)]
        present = set(texts)
        unknown = sorted(present - set(index))
        if unknown:
            raise JobError(
                f"labels {unknown[:5]} are not among the classes the booster was trained on "
                f"({', '.join(index)}); a new class needs a new model, not a retrain"
            )
        # class i of the booster is the i-th of the sorted labels it is registered with
        absent = [t for t in index if t not in present]
        if absent:
            raise JobError(
                f"the training data has no rows of class {absent}; a booster retrained "
                "without them would mislabel the others"
            )
        return np.asarray([index[t] for t in texts], dtype=np.float64)

    def fit(self, X: Any, y: Any) -> Any:
        """A new native booster trained on ``X``, ``y`` with this recipe."""
        values = np.asarray(X, dtype=np.float64)
        names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        target = self._targets(y)
        if self.kind == "xgboost":
            import xgboost

            data = xgboost.DMatrix(values, label=target, feature_names=names)
            return xgboost.train(self.params, data, num_boost_round=self.rounds)
        import lightgbm

        dataset = lightgbm.Dataset(values, label=target, feature_name=names or "auto")
        return lightgbm.train(self.params, dataset, num_boost_round=self.rounds)


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
