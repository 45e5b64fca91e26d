"""``nd.fairness``: how each group of a logged column is served, with uncertainty.

Per group (say each ``region``): ``n`` predictions and the selection rate (share
predicted positive, needs no labels), and over the rows with feedback labels the
accuracy, true and false positive rates and ROC-AUC. Every rate has a bootstrap
95% interval (rows resampled within the group), so a gap between two small groups
is not mistaken for bias. A group with fewer than ``min_group`` rows (labelled rows
for the label metrics) is shown as NaN and flagged, never dropped.

The two headline numbers are fairlearn's own: ``demographic_parity_difference``
(over all predictions) and ``equalized_odds_difference`` (over labelled rows),
computed by fairlearn on the groups large enough to judge. They are defined for
binary classifiers; multiclass models get per-group accuracy and its largest gap,
regressors per-group MAE/RMSE and the largest MAE gap relative to the overall MAE;
``.metrics`` and ``.notes`` say which applied. ``.disparity`` is the number alert
rules test (``disparity > 0.1``): the demographic parity difference for binary
classifiers, the accuracy gap for multiclass, the relative MAE gap for regressors.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring import logged

if TYPE_CHECKING:
    import pandas as pd

MIN_GROUP = 30
N_BOOT = 200
LABEL_METRICS = {"binary": ("accuracy", "tpr", "fpr"), "multiclass": ("accuracy",),
                 "regression": ("mae", "rmse")}  # fmt: skip


@dataclass(frozen=True, repr=False)
class FairnessReport:
    """Per-group metrics of one logged column, and fairlearn's disparity measures."""

    name: str
    by: str
    task: str  # binary | multiclass | regression
    by_group: pd.DataFrame
    demographic_parity_difference: float
    equalized_odds_difference: float
    disparity: float
    metrics: tuple[str, ...]
    positive: str | None = None
    notes: tuple[str, ...] = ()
    rows: int = 0
    labelled: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"FairnessReport({self.name!r} by {self.by!r}: {len(self.by_group)} groups, "
            f"{self.task}, disparity={self.disparity:.3g})"
        )

    def _repr_html_(self) -> str:
        from nbdeploy.monitoring.render import table

        shown = self.by_group[["n", "labelled", *self.metrics, "flagged"]]
        heads = (
            f"<b>fairness of {html.escape(self.name)} by {html.escape(self.by)}</b> "
            f"({self.task}; {self.rows} predictions, {self.labelled} labelled)<br>"
            f"demographic parity difference: {_fmt(self.demographic_parity_difference)}, "
            f"equalized odds difference: {_fmt(self.equalized_odds_difference)}, "
            f"disparity: {_fmt(self.disparity)}"
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return f"<div>{heads}{table(shown)}<ul style='font-size:11px'>{notes}</ul></div>"


def _fmt(x: float) -> str:
    return "–" if x != x else f"{x:.3f}"


def fairness(
    name: str,
    by: str,
    since: Any = None,
    *,
    min_group: int = MIN_GROUP,
    positive: Any = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> FairnessReport:
    """Per-group metrics of ``name``'s logged predictions, grouped by logged column ``by``.

    ``since``: a time or a duration back from now (``"7d"``). ``positive``: the class
    counted as selected (default: the model's last class, e.g. ``"yes"`` or ``1``).
    """
    frame = logged.rows(name, since)
    version = logged.latest_version(frame)
    groups = logged.column(frame, by, name, version)
    return evaluate(
        name,
        by,
        groups,
        frame,
        version,
        min_group=min_group,
        positive=positive,
        n_boot=n_boot,
        seed=seed,
    )


def evaluate(
    name: str,
    by: str,
    groups: pd.Series,
    frame: pd.DataFrame,
    version: logged.Version,
    *,
    min_group: int = MIN_GROUP,
    positive: Any = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> FairnessReport:
    """The report for rows ``frame`` (``prediction``, ``label``, ``proba_*``) by ``groups``."""
    import pandas as pd

    keys = pd.Series(logged.label_text(groups), index=frame.index).fillna("(missing)")
    classes = [c[len("proba_") :] for c in frame.columns if c.startswith("proba_")]
    classes = classes or list(version.classes)
    regression = version.task == "regression"
    task = "regression" if regression else ("binary" if len(classes) == 2 else "multiclass")
    pred = frame["prediction"]
    label = frame["label"] if "label" in frame else pd.Series(np.nan, index=frame.index)
    known = label.notna().to_numpy()
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    pos = None
    if task == "binary":
        pos = logged.label_text([positive])[0] if positive is not None else classes[-1]
        if pos not in classes:
            raise NbdeployError(f"positive={positive!r} is not a class ({', '.join(classes)})")
        yp = np.array([v == pos for v in logged.label_text(pred)])
        yt = np.array([v == pos for v in logged.label_text(label)])
        score = frame[f"proba_{pos}"].to_numpy(float) if f"proba_{pos}" in frame else None
        metric_names = ["selection_rate", "accuracy", "tpr", "fpr"]
        metric_names += ["roc_auc"] if score is not None else []
    elif task == "multiclass":
        yp = np.array(logged.label_text(pred), dtype=object)
        yt = np.array(logged.label_text(label), dtype=object)
        score = None
        metric_names = ["accuracy"]
        notes.append(
            "multiclass: per-group accuracy applies; selection rate, TPR/FPR and the "
            "demographic parity / equalized odds differences are defined for binary "
            "classifiers only (disparity = largest accuracy gap)"
        )
    else:
        yp = pred.to_numpy(float)
        yt = pd.to_numeric(label, errors="coerce").to_numpy(float)
        score = None
        metric_names = ["mae", "rmse", "mean_prediction"]
        notes.append(
            "regression: per-group MAE/RMSE apply; the fairlearn differences are for "
            "binary classifiers (disparity = largest MAE gap / overall MAE)"
        )
    table = []
    for group, idx in keys.groupby(keys, sort=True).groups.items():
        at = frame.index.get_indexer(idx)
        row = _group(task, yp[at], yt[at], known[at], score, at, min_group, n_boot, rng)
        row["group"] = group
        table.append(row)
    by_group = pd.DataFrame(table).set_index("group")
    by_group.index.name = by
    small = by_group.index[by_group["flagged"]].tolist()
    if small:
        notes.append(
            f"{len(small)} group(s) with fewer than {min_group} rows (labelled rows for "
            f"label metrics) shown as NaN and flagged: {', '.join(map(str, small[:10]))}"
        )
    dpd, eod, disparity, extra = _differences(
        task, keys.to_numpy(), yp, yt, known, by_group, min_group
    )
    if task != "regression" and not known.any():
        notes.append("no feedback labels yet: only the selection rate can be judged")
    return FairnessReport(
        name=name,
        by=by,
        task=task,
        by_group=by_group,
        demographic_parity_difference=dpd,
        equalized_odds_difference=eod,
        disparity=disparity,
        metrics=tuple(metric_names),
        positive=pos,
        notes=tuple(notes),
        rows=len(frame),
        labelled=int(known.sum()),
        extra=extra,
    )


def _rates(task: str, yp: np.ndarray, yt: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics over the last axis of (bootstrap, rows) arrays."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if task == "binary":
            pos, neg = yt.sum(-1), (~yt).sum(-1)
            return {
                "accuracy": (yp == yt).mean(-1),
                "tpr": np.where(pos > 0, (yp & yt).sum(-1) / pos, np.nan),
                "fpr": np.where(neg > 0, (yp & ~yt).sum(-1) / neg, np.nan),
            }
        if task == "multiclass":
            return {"accuracy": (yp == yt).mean(-1)}
        error = yp - yt
        return {"mae": np.abs(error).mean(-1), "rmse": np.sqrt((error**2).mean(-1))}


def _group(
    task: str,
    yp: np.ndarray,
    yt: np.ndarray,
    known: np.ndarray,
    score: np.ndarray | None,
    at: np.ndarray,
    min_group: int,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    n, m = len(yp), int(known.sum())
    row: dict[str, Any] = {"n": n, "labelled": m}
    values: dict[str, tuple[float, float, float]] = {}
    if task == "binary":
        values["selection_rate"] = _with_ci(yp.astype(float), n >= min_group, n_boot, rng)
    if task == "regression":
        values["mean_prediction"] = _with_ci(yp, n >= min_group, n_boot, rng)
    enough = m >= min_group
    lp, lt = yp[known], yt[known]
    point = _rates(task, lp, lt) if enough else dict.fromkeys(LABEL_METRICS[task], math.nan)
    boot = {}
    if enough and n_boot:
        draw = rng.integers(0, m, size=(n_boot, m))
        boot = _rates(task, lp[draw], lt[draw])
    for metric, value in point.items():
        if not enough:
            values[metric] = (math.nan, math.nan, math.nan)
            continue
        lo, hi = np.nanpercentile(boot[metric], [2.5, 97.5]) if boot else (math.nan, math.nan)
        values[metric] = (float(value), float(lo), float(hi))
    if score is not None:
        values["roc_auc"] = _auc(lt, score[at][known], enough, n_boot, rng)
    for metric, (value, lo, hi) in values.items():
        row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = value, lo, hi
    # too few rows to judge; a group with no labels at all is unlabelled, not small
    row["flagged"] = bool(n < min_group or 0 < m < min_group)
    return row


def _with_ci(
    values: np.ndarray, enough: bool, n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    if not enough:
        return math.nan, math.nan, math.nan
    if not n_boot:
        return float(values.mean()), math.nan, math.nan
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(lo), float(hi)


def _auc(
    yt: np.ndarray, score: np.ndarray, enough: bool, n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    if not enough or yt.all() or not yt.any():
        return math.nan, math.nan, math.nan
    value = float(roc_auc_score(yt, score))
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(yt), len(yt))
        if yt[i].any() and not yt[i].all():
            draws.append(roc_auc_score(yt[i], score[i]))
    lo, hi = np.percentile(draws, [2.5, 97.5]) if draws else (math.nan, math.nan)
    return value, float(lo), float(hi)


def _differences(
    task: str,
    keys: np.ndarray,
    yp: np.ndarray,
    yt: np.ndarray,
    known: np.ndarray,
    by_group: pd.DataFrame,
    min_group: int,
) -> tuple[float, float, float, dict[str, float]]:
    """fairlearn's measures over the groups large enough to judge (NaN with fewer than 2)."""
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
    )

    big = set(by_group.index[by_group["n"] >= min_group])
    judged = set(by_group.index[by_group["labelled"] >= min_group])
    rows = np.isin(keys, list(big))
    labelled = known & np.isin(keys, list(judged))
    dpd = eod = disparity = math.nan
    extra: dict[str, float] = {}
    if task == "binary":
        if len(big) >= 2:
            # selection rates need no labels: every prediction of the group counts
            dpd = float(
                demographic_parity_difference(
                    yp[rows], yp[rows], sensitive_features=keys[rows], method="between_groups"
                )
            )
        if len(judged) >= 2:
            eod = float(
                equalized_odds_difference(
                    yt[labelled], yp[labelled], sensitive_features=keys[labelled]
                )
            )
        disparity = dpd
    elif len(judged) >= 2:
        from sklearn.metrics import accuracy_score, mean_absolute_error

        fn = accuracy_score if task == "multiclass" else mean_absolute_error
        frame = MetricFrame(
            metrics=fn,
            y_true=list(yt[labelled]) if task == "multiclass" else yt[labelled],
            y_pred=list(yp[labelled]) if task == "multiclass" else yp[labelled],
            sensitive_features=keys[labelled],
        )
        gap = float(frame.difference(method="between_groups"))
        extra["accuracy_difference" if task == "multiclass" else "mae_difference"] = gap
        overall = float(frame.overall)
        disparity = gap if task == "multiclass" else (gap / overall if overall else math.nan)
    return dpd, eod, disparity, extra


def disparity_of(
    y_pred: Any, sensitive: Any, y_true: Any = None, *, classes: list[Any], task: str
) -> tuple[float, str]:
    """The gate's ``disparity`` on test data: fairlearn's demographic parity difference
    for binary classifiers (positive = the last class), the accuracy gap otherwise."""
    from fairlearn.metrics import MetricFrame, demographic_parity_difference

    keys = np.array(logged.label_text(list(sensitive)), dtype=object)
    predicted = logged.label_text(list(y_pred))
    if task != "regression" and len(classes) == 2:
        positive = logged.label_text([classes[-1]])[0]
        yp = np.array([p == positive for p in predicted], dtype=int)
        value = demographic_parity_difference(yp, yp, sensitive_features=keys)
        return float(value), "demographic parity difference"
    if task == "regression":
        from sklearn.metrics import mean_absolute_error

        frame = MetricFrame(
            metrics=mean_absolute_error,
            y_true=np.asarray(y_true, float),
            y_pred=np.asarray(y_pred, float),
            sensitive_features=keys,
        )
        overall = float(frame.overall)
        gap = float(frame.difference())
        return (gap / overall if overall else math.nan), "MAE gap / overall MAE"
    from sklearn.metrics import accuracy_score

    frame = MetricFrame(
        metrics=accuracy_score,
        y_true=logged.label_text(list(y_true)),
        y_pred=predicted,
        sensitive_features=keys,
    )
    return float(frame.difference()), "accuracy gap between groups"
