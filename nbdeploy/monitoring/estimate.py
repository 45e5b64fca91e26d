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
from nbdeploy.monitoring import estimation, logged
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
    return Estimator(name, version, holdout, frame).estimate(frame, weighted=weighted)


class Estimator:
    """A version's held-out data prepared once (calibration, encoded features, loss
    models), then any number of windows of its logged rows estimated against it: the
    monitor estimates every time bucket with one."""

    def __init__(
        self, name: str, version: logged.Version, holdout: pd.DataFrame, frame: pd.DataFrame
    ) -> None:
        self.name, self.version = name, version
        notes = [f"{len(holdout)} held-out rows from nd.test calibrate the estimate"]
        if version.pii:
            notes.append(f"left out of the density ratio (pii): {', '.join(sorted(version.pii))}")
        # the features the log keeps in usable form, under their logged names
        self.logged_as: dict[str, str] = {}
        for c in version.features:
            if c in version.pii or c not in holdout:
                continue
            for logged_name in (f"feature.{c}", c):
                if logged_name in frame:
                    self.logged_as[c] = logged_name
                    break
        reference = {c: holdout[c].to_numpy() for c in self.logged_as}
        self.encoder = estimation.Encoder(reference) if reference else None
        ref_x = self.encoder.transform(reference) if self.encoder else None
        self.regressor: estimation.RegressorReference | None = None
        self.classifier: estimation.ClassifierReference | None = None
        if version.task == "regression":
            if ref_x is None:
                ref_x = np.zeros((len(holdout), 1))
            self.regressor = estimation.RegressorReference(
                ref_x, holdout["__prediction__"].to_numpy(float),
                holdout["__label__"].to_numpy(float),
            )  # fmt: skip
            notes.append("regression: direct loss estimation (models of |error| and error²)")
            self.notes = tuple(notes)
            return
        self.classes = [
            c[len("__proba_") : -2] for c in holdout.columns if c.startswith("__proba_")
        ]
        if not self.classes or not any(c.startswith("proba_") for c in frame.columns):
            raise NbdeployError(
                f"{version.ref} gives no class probabilities, so its accuracy cannot be "
                "estimated without labels; register a model with predict_proba (e.g. wrap it "
                "in sklearn's CalibratedClassifierCV)"
            )
        self.binary = len(self.classes) == 2
        ref_truth = np.array(logged.label_text(holdout["__label__"]), dtype=object)
        ref_pred = np.array(logged.label_text(holdout["__prediction__"]), dtype=object)
        ref_proba = holdout[[f"__proba_{c}__" for c in self.classes]].to_numpy(float)
        if self.binary:
            self.positive = logged.label_text([self.classes[-1]])[0]
            self.classifier = estimation.ClassifierReference(
                ref_proba[:, 1], (ref_pred == self.positive).astype(int),
                (ref_truth == self.positive).astype(int), ref_x,
            )  # fmt: skip
        else:
            self.classifier = estimation.ClassifierReference(
                ref_proba.max(axis=1), ref_pred, ref_truth, ref_x, binary=False
            )
            notes.append("multiclass: accuracy is estimated; F1 and ROC-AUC only for binary models")
        self.notes = tuple(notes)

    def _features(self, frame: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray | None:
        """The encoded features of ``frame`` (of its ``rows`` only, when given)."""
        if self.encoder is None:
            return None
        pick = slice(None) if rows is None else rows
        columns = {c: frame[n].to_numpy()[pick] for c, n in self.logged_as.items()}
        return self.encoder.transform(columns)

    def estimate(self, frame: pd.DataFrame, *, weighted: bool = True) -> PerformanceEstimate:
        """Estimates for ``frame`` (logged rows of this version); ``weighted=False``:
        plain calibration, no density ratio."""
        labels = frame.get("label")
        known = labels.notna().to_numpy() if labels is not None else np.zeros(len(frame), bool)
        common: dict[str, Any] = {
            "name": self.name,
            "ref": self.version.ref,
            "rows": len(frame),
            "labelled": int(known.sum()),
            "notes": self.notes,
        }
        if self.regressor is not None:
            cur_pred = frame["prediction"].to_numpy(float)
            cur_x = self._features(frame)  # the loss models read them, weighted or not
            if cur_x is None:
                cur_x = np.zeros((len(frame), self.regressor.features.shape[1]))
            est = self.regressor.estimate(cur_x, cur_pred, weight=weighted)
            measured: dict[str, float] = {}
            if known.sum() >= 10 and labels is not None:
                err = cur_pred[known] - labels[known].to_numpy(float)
                measured = {"mae": float(np.abs(err).mean()),
                            "rmse": float(np.sqrt((err**2).mean()))}  # fmt: skip
            return PerformanceEstimate(task="regression", mae=est["mae"], rmse=est["rmse"],
                                       realized=measured, **common)  # fmt: skip
        assert self.classifier is not None
        rows = estimation.fit_rows(len(frame))  # all the density ratio reads
        cur_x = self._features(frame, rows) if weighted else None
        cur_pred = np.array(logged.label_text(frame["prediction"]), dtype=object)
        cur_proba = frame[[f"proba_{c}" for c in self.classes]].to_numpy(float)
        if self.binary:
            est = self.classifier.estimate(
                cur_proba[:, 1], (cur_pred == self.positive).astype(int), cur_x, x_rows=rows
            )
        else:
            est = self.classifier.estimate(cur_proba.max(axis=1), cur_pred, cur_x, x_rows=rows)
        realized: dict[str, float] = {}
        if known.sum() >= 10 and labels is not None:
            from nbdeploy.monitoring.metrics import _classification

            realized = {k: v for k, v in _classification(frame[known], labels[known]).items()
                        if v == v}  # fmt: skip
        return PerformanceEstimate(
            task="binary" if self.binary else "multiclass",
            accuracy=est["accuracy"],
            f1=est.get("f1"),
            roc_auc=est.get("roc_auc"),
            realized=realized,
            **common,
        )
