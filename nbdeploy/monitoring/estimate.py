"""``nd.estimate``: a served version's performance before its labels arrive.

Calibrated on the labelled held-out data last given to ``nd.test`` for that version
(stored with it, hash-verified), weighted towards the served population by a density
ratio of the features; :mod:`nbdeploy.monitoring.estimation` has the math. Every
number is an :class:`Estimate` with a 95% interval for the realized value, and the
report says plainly that it is an estimate; where feedback labels exist for the same
rows, the realized metrics sit beside it.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring import logged
from nbdeploy.monitoring.estimation import Estimate

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Estimate", "PerformanceEstimate", "estimate"]

LABEL = "estimated without labels (calibrated on nd.test's held-out data)"


@dataclass(frozen=True, repr=False)
class PerformanceEstimate:
    """Label-free estimates of a version's metrics on logged traffic (95% intervals)."""

    name: str
    ref: str
    task: str  # binary | multiclass | regression
    rows: int
    accuracy: Estimate | None = None
    f1: Estimate | None = None
    roc_auc: Estimate | None = None
    mae: Estimate | None = None
    rmse: Estimate | None = None
    #: metrics measured on the rows that have feedback labels (empty without labels)
    realized: dict[str, float] = field(default_factory=dict)
    labelled: int = 0
    notes: tuple[str, ...] = ()

    def estimates(self) -> dict[str, Estimate]:
        named = {"accuracy": self.accuracy, "f1": self.f1, "roc_auc": self.roc_auc,
                 "mae": self.mae, "rmse": self.rmse}  # fmt: skip
        return {k: v for k, v in named.items() if v is not None}

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {
                "metric": k,
                "estimate": e.value,
                "ci_low": e.ci_low,
                "ci_high": e.ci_high,
                "realized": self.realized.get(k, math.nan),
            }
            for k, e in self.estimates().items()
        ]
        return pd.DataFrame(rows).set_index("metric")

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.estimates().items())
        return f"PerformanceEstimate({self.ref}, {self.rows} rows, {LABEL}: {shown})"

    def _repr_html_(self) -> str:
        from nbdeploy.monitoring.render import table

        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (
            f"<div><b>{html.escape(self.ref)}</b>: {self.rows} predictions, "
            f"{self.labelled} with labels — <i>{LABEL}</i>{table(self.frame())}"
            f"<ul style='font-size:11px'>{notes}</ul></div>"
        )


def estimate(name: str, since: Any = None, *, weighted: bool = True) -> PerformanceEstimate:
    """Estimate accuracy, F1 and ROC-AUC (classifiers) or MAE and RMSE (regressors) of
    ``name``'s logged predictions since ``since``, without their labels.

    ``weighted=False`` skips the density-ratio weighting (plain confidence-based
    estimation, as NannyML's CBPE).
    """
    from nbdeploy import registry

    frame = logged.rows(name, since)
    version = logged.latest_version(frame)
    same = (frame["model_name"] == version.name) & (frame["model_version"] == version.version)
    frame = frame[same].reset_index(drop=True)
    holdout = registry.load_holdout(registry.resolve(version.ref))
    if holdout is None:
        raise NbdeployError(
            f"{version.ref} has no held-out data to calibrate on; run nd.test({version.ref!r}, "
            "X_holdout, y_holdout) on labelled data the model was not trained on, then retry"
        )
    return _estimate(name, version, frame, holdout, weighted=weighted)


def _features(version: logged.Version, holdout: pd.DataFrame, frame: pd.DataFrame) -> tuple:
    from nbdeploy.monitoring.estimation import encode

    usable = [c for c in version.features if c not in version.pii and c in holdout]
    current: dict[str, Any] = {}
    for c in usable:
        logged_name = f"feature.{c}" if f"feature.{c}" in frame else c
        current[c] = frame[logged_name].to_numpy() if logged_name in frame else None
    usable = [c for c in usable if current[c] is not None]
    if not usable:
        return None, None
    return encode({c: holdout[c].to_numpy() for c in usable}, {c: current[c] for c in usable})


def _estimate(
    name: str,
    version: logged.Version,
    frame: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    weighted: bool = True,
) -> PerformanceEstimate:
    from nbdeploy.monitoring import estimation

    notes = [f"{len(holdout)} held-out rows from nd.test calibrate the estimate"]
    if version.pii:
        notes.append(f"left out of the density ratio (pii): {', '.join(sorted(version.pii))}")
    ref_x, cur_x = _features(version, holdout, frame) if weighted else (None, None)
    labels = frame.get("label")
    known = labels.notna().to_numpy() if labels is not None else np.zeros(len(frame), bool)
    common: dict[str, Any] = {
        "name": name,
        "ref": version.ref,
        "rows": len(frame),
        "labelled": int(known.sum()),
    }
    if version.task == "regression":
        ref_pred = holdout["__prediction__"].to_numpy(float)
        cur_pred = frame["prediction"].to_numpy(float)
        if ref_x is None:
            ref_x, cur_x = np.zeros((len(holdout), 1)), np.zeros((len(frame), 1))
        est = estimation.regressor(
            ref_x, ref_pred, holdout["__label__"].to_numpy(float), cur_x, cur_pred,
            weight=weighted,
        )  # fmt: skip
        measured: dict[str, float] = {}
        if known.sum() >= 10:
            err = cur_pred[known] - labels[known].to_numpy(float)
            measured = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}
        notes.append("regression: direct loss estimation (models of |error| and error²)")
        return PerformanceEstimate(task="regression", mae=est["mae"], rmse=est["rmse"],
                                   realized=measured, notes=tuple(notes), **common)  # fmt: skip
    classes = [c[len("__proba_") : -2] for c in holdout.columns if c.startswith("__proba_")]
    if not classes or not any(c.startswith("proba_") for c in frame.columns):
        raise NbdeployError(
            f"{version.ref} gives no class probabilities, so its accuracy cannot be estimated "
            "without labels; register a model with predict_proba (e.g. wrap it in "
            "sklearn's CalibratedClassifierCV)"
        )
    binary = len(classes) == 2
    ref_truth = np.array(logged.label_text(holdout["__label__"]), dtype=object)
    ref_pred = np.array(logged.label_text(holdout["__prediction__"]), dtype=object)
    cur_pred = np.array(logged.label_text(frame["prediction"]), dtype=object)
    ref_proba = holdout[[f"__proba_{c}__" for c in classes]].to_numpy(float)
    cur_proba = frame[[f"proba_{c}" for c in classes]].to_numpy(float)
    if binary:
        pos = logged.label_text([classes[-1]])[0]
        est = estimation.classifier(
            ref_proba[:, 1], (ref_pred == pos).astype(int), (ref_truth == pos).astype(int),
            cur_proba[:, 1], (cur_pred == pos).astype(int), ref_x, cur_x,
        )  # fmt: skip
    else:
        est = estimation.classifier(
            ref_proba.max(axis=1), ref_pred, ref_truth, cur_proba.max(axis=1), cur_pred,
            ref_x, cur_x, binary=False,
        )  # fmt: skip
        notes.append("multiclass: accuracy is estimated; F1 and ROC-AUC only for binary models")
    realized: dict[str, float] = {}
    if known.sum() >= 10 and labels is not None:
        from nbdeploy.monitoring.metrics import _classification

        realized = {k: v for k, v in _classification(frame[known], labels[known]).items()
                    if v == v}  # fmt: skip
    return PerformanceEstimate(
        task="binary" if binary else "multiclass",
        accuracy=est["accuracy"],
        f1=est.get("f1"),
        roc_auc=est.get("roc_auc"),
        realized=realized,
        notes=tuple(notes),
        **common,
    )
