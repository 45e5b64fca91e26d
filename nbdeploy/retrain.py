"""What the packaged ``retrain`` notebook calls: training data, a split, the estimator.

Retraining keeps the champion's recipe and changes only the data: :func:`estimator`
clones the native estimator of the version an alias points at (same
hyperparameters, unfitted), :func:`training_data` reads a CSV/Parquet file or,
when none is given, the production log joined with its feedback labels, and
:func:`split` is a seeded, stratified split. The same data and seed give the same
split, the same model and the same data fingerprint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbdeploy.exceptions import JobError

if TYPE_CHECKING:
    import pandas as pd

_OUTPUTS = ("prediction", "score", "fallback", "fallback_reason")


def estimator(ref: str, *, seed: int | None = None) -> Any:
    """An unfitted clone of the native estimator ``ref`` serves (same hyperparameters):
    a scikit-learn estimator, or for a native XGBoost/LightGBM booster a
    :class:`~nbdeploy.boosters.Recipe`. Either way ``estimator(ref).fit(X, y)`` returns
    the model to register.

    ``seed`` sets every ``random_state`` parameter (a booster's seed), so a rerun gives
    the same model.
    """
    from sklearn.base import clone

    from nbdeploy import boosters
    from nbdeploy.serving.adapter import load

    loaded = load(ref)
    if isinstance(loaded.model, boosters.NativeBooster):
        return boosters.Recipe(loaded.model, seed=seed)
    if loaded.flavor != "sklearn":
        raise JobError(
            f"{ref} is a {loaded.flavor} model; the retrain notebook refits scikit-learn "
            "estimators and XGBoost/LightGBM boosters only; retrain it in your own notebook "
            "and run that with nd.run_job"
        )
    model = clone(loaded.model)
    if seed is not None:
        seeded = {k: seed for k in model.get_params(deep=True) if k.endswith("random_state")}
        model.set_params(**seeded)
    return model


def features(ref: str) -> list[str]:
    """The input columns ``ref`` was registered with."""
    from nbdeploy import registry

    mv = registry.resolve(ref)
    meta = registry.fetch_verified(mv).json(registry.METADATA)
    return [c["name"] for c in meta["schema"]["columns"]]


def training_data(
    model_name: str,
    data: str | os.PathLike[str] | None = None,
    target: str | None = None,
    *,
    alias: str = "champion",
) -> tuple[pd.DataFrame, pd.Series]:
    """``(X, y)`` from a CSV/Parquet file, or from the production log with its feedback.

    The columns of ``X`` are the ones the version at ``alias`` was registered with,
    in the same order, so the new version serves the same requests.
    """
    import pandas as pd

    columns = features(f"{model_name}@{alias}")
    if data is None:
        frame = labelled(model_name)
        target = "label"
    else:
        path = Path(data)
        if not path.is_file():
            raise JobError(f"training data {str(data)!r} not found")
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
        if target is None or target not in frame.columns:
            raise JobError(
                f"name the label column of {path.name} with target= "
                f"(columns: {', '.join(map(str, frame.columns))})"
            )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise JobError(f"the training data lacks the model's columns {missing}")
    return frame[columns].reset_index(drop=True), frame[target].reset_index(drop=True)


def labelled(model_name: str) -> pd.DataFrame:
    """Logged served and batch predictions that have feedback, with a ``label`` column.

    The last label recorded for a prediction wins.
    """
    import pandas as pd

    from nbdeploy.auditlog import labels as feedback_labels
    from nbdeploy.auditlog import logs

    truth = feedback_labels(model_name)
    labels = dict(zip(truth["prediction_id"], truth["label"], strict=True))
    if not labels:
        raise JobError(
            f"no feedback recorded for {model_name!r}: record labels with nd.feedback, "
            "or pass data= (a CSV or Parquet file) and target="
        )
    frame = logs(model_name)
    frame = frame[frame["role"].isin(["served", "batch"])]
    frame = frame[frame["prediction_id"].isin(labels)].copy()
    frame.columns = [c.removeprefix("feature.") for c in frame.columns]
    frame["label"] = frame["prediction_id"].map(labels)
    return pd.DataFrame(frame).reset_index(drop=True)


def split(X: Any, y: Any, *, test_size: float = 0.25, seed: int = 0) -> list[Any]:
    """A seeded train/test split, stratified for class labels."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    labels = np.asarray(y)
    stratify = None
    if labels.dtype.kind != "f":  # class labels: keep their shares in both parts
        counts = np.unique(labels, return_counts=True)[1]
        stratify = y if len(counts) and counts.min() >= 2 else None
    return list(train_test_split(X, y, test_size=test_size, random_state=seed, stratify=stratify))
