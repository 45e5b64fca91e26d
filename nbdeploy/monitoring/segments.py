"""``nd.segments``: drift, data quality and performance per value of a logged column.

A model can be fine on average and failing one region, one channel or one customer
tier. ``nd.segments(name, by="region")`` computes, for each value of any logged column
(a feature, a passthrough column, an output), what the monitor computes for the whole
window: the largest feature PSI and the number of drifted features against the
training profile, the worst missing / out-of-range / unseen rates, accuracy or MAE
from feedback labels, and the anomaly rate. Segments with fewer than ``min_rows``
rows are kept, NaN and flagged. ``nd.monitor(name, by=...)`` shows the same table in
its Drift, Quality and Performance tabs and in the offline snapshot.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from nbdeploy.monitoring import logged

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.monitoring.data import Window

MIN_ROWS = 50
#: the segments shown at most (most rows first); the rest are summed up as a note
MAX_SEGMENTS = 20


def table(w: Window, by: str, *, min_rows: int = MIN_ROWS) -> pd.DataFrame:
    """One row per value of ``by`` among the window's served rows."""
    import pandas as pd

    from nbdeploy.monitoring import metrics

    if not len(w.served):
        return pd.DataFrame()
    version = logged.version_of(w.ref) if w.ref else None
    keys = logged.column(w.served, by, w.name, version)
    keys = pd.Series(logged.label_text(keys), index=w.served.index).fillna("(missing)")
    scored = _anomalies(w)
    out = []
    counts = keys.value_counts()
    for value in counts.index[:MAX_SEGMENTS]:
        rows = w.served[keys == value]
        sub = dataclasses.replace(w, served=rows)
        row: dict[str, Any] = {by: value, "rows": len(rows), "share": len(rows) / len(w.served)}
        enough = len(rows) >= min_rows
        row["flagged"] = not enough
        drift = metrics.feature_drift(sub) if enough else None
        psi = drift.columns["psi"].astype(float) if drift is not None else None
        row["max_feature_psi"] = float(psi.max()) if psi is not None else math.nan
        row["drifted_features"] = int(drift.columns["drifted"].sum()) if drift else math.nan
        quality = metrics.quality(sub) if enough else None
        for metric in ("missing_rate", "out_of_range_rate", "unseen_rate"):
            worst = quality[metric].astype(float).max() if quality is not None else math.nan
            row[f"max_{metric}"] = float(worst) if worst == worst else math.nan
        perf = metrics.performance(sub, 1)
        overall = perf.loc["all"] if len(perf) else {}
        row["labelled"] = int(overall.get("labelled", 0)) if len(perf) else 0
        for metric in ("accuracy", "f1", "mae", "rmse"):
            if metric in overall:
                row[metric] = float(overall[metric])
        if scored is not None:
            part = scored.loc[rows.index, "anomalous"]
            row["anomaly_rate"] = float(part.mean()) if enough else math.nan
        out.append(row)
    frame = pd.DataFrame(out).set_index(by)
    frame.attrs["hidden"] = int(len(counts) - min(len(counts), MAX_SEGMENTS))
    return frame


def _anomalies(w: Window) -> pd.DataFrame | None:
    from nbdeploy.exceptions import NbdeployError
    from nbdeploy.monitoring.anomalies import score_rows

    try:
        return score_rows(w.served)
    except NbdeployError:
        return None


def segments(name: str, by: str, since: Any = None, *, min_rows: int = MIN_ROWS) -> pd.DataFrame:
    """Drift, quality, performance and anomaly rate of ``name`` per value of ``by``.

    ``by``: any logged column (a feature, a passthrough column registered with
    ``nd.register(..., passthrough=[...])``, or ``prediction``); ``since``: a time or a
    duration back from now (``"24h"``); default everything logged.
    """
    import time

    from nbdeploy.auditlog import parse_time
    from nbdeploy.monitoring.data import Window, reference_profile

    frame = logged.rows(name, since)  # served and batch rows, with labels
    version = logged.latest_version(frame)
    labels = frame.loc[frame["label"].notna(), ["prediction_id", "label"]]
    w = Window(
        name=name,
        since=parse_time(since),
        until=time.time(),
        served=frame.drop(columns=["label"]),
        shadow=frame.iloc[:0],
        labels=labels.reset_index(drop=True),
        rejections=frame.iloc[:0],
        ref=version.ref,
        profile=reference_profile(version.ref),
    )
    return table(w, by, min_rows=min_rows)


def worst(frame: pd.DataFrame, column: str) -> tuple[float, str]:
    """The largest value of ``column`` over unflagged segments, and which segment."""
    if column not in frame or not len(frame):
        return math.nan, ""
    values = frame.loc[~frame["flagged"].astype(bool), column].astype(float).dropna()
    if not len(values):
        return math.nan, ""
    return float(values.max()), str(values.idxmax())
