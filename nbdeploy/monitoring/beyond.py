"""The monitor's fairness, anomaly, estimate and segment views, computed for one window.

:func:`compute` adds to a :class:`~nbdeploy.monitoring.report.MonitorReport` what
``nd.fairness`` (per passthrough column, over time), ``nd.anomalies``, ``nd.estimate``
and ``nd.segments`` say about the same window; :func:`indicators` feeds the alert
rules ``disparity``, ``anomaly_rate`` and ``estimated_accuracy``; :func:`extend` puts
the views into the tabs (a Fairness tab; the Quality, Performance and, with ``by=``,
Drift tabs get a section each). Each part that cannot be computed (no detector, no
held-out data, no passthrough columns) says why in its place and never breaks the rest.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring import logged

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.monitoring.data import Window
    from nbdeploy.monitoring.report import MonitorReport

_NOTE = "<p style='color:#777;font-size:12px'>{}</p>"
_TOP_ANOMALIES = 5


def _labelled(w: Window) -> pd.DataFrame:
    truth = dict(zip(w.labels["prediction_id"], w.labels["label"], strict=True))
    return w.served.assign(label=w.served["prediction_id"].map(truth))


def compute(w: Window, by: str | None = None) -> dict[str, Any]:
    from nbdeploy.monitoring import metrics

    out: dict[str, Any] = {"notes": {}}
    if not len(w.served) or w.ref is None:
        return out
    version = logged.version_of(w.ref)
    frame = _labelled(w)
    fair = {}
    for column in version.passthrough:
        try:
            from nbdeploy.monitoring.fairness import evaluate

            keys = logged.column(frame, column, w.name, version)
            report = evaluate(w.name, column, keys, frame, version, n_boot=100)
            over_time = _over_time(frame, keys, metrics.buckets(w, 6), report)
            fair[column] = (report, over_time)
        except (NbdeployError, ImportError) as exc:
            out["notes"][f"fairness {column}"] = str(exc)
    out["fairness"] = fair
    try:
        from nbdeploy.monitoring.anomalies import score_rows

        out["anomalies"] = score_rows(w.served)
    except NbdeployError as exc:
        out["notes"]["anomalies"] = str(exc)
    try:
        out["estimate"] = _estimates(w, version, frame)
    except NbdeployError as exc:
        out["notes"]["estimate"] = str(exc)
    if by:
        from nbdeploy.monitoring.segments import table

        out["segments"] = table(w, by)
        out["by"] = by
    return out


def _over_time(
    frame: pd.DataFrame, keys: pd.Series, buckets: pd.Series, report: Any
) -> pd.DataFrame:
    """Per time bucket and group: the selection rate (binary), else accuracy or MAE."""
    import pandas as pd

    groups = pd.Series(logged.label_text(keys), index=frame.index).fillna("(missing)")
    if report.task == "binary":
        value = pd.Series([v == report.positive for v in logged.label_text(frame["prediction"])],
                          index=frame.index, dtype=float)  # fmt: skip
    elif report.task == "multiclass":
        hit = [
            p == t if t is not None else None
            for p, t in zip(
                logged.label_text(frame["prediction"]),
                logged.label_text(frame["label"]),
                strict=True,
            )
        ]
        value = pd.Series(hit, index=frame.index, dtype=float)  # fmt: skip
    else:
        err = frame["prediction"].astype(float) - pd.to_numeric(frame["label"], errors="coerce")
        value = err.abs()
    table = value.groupby([buckets, groups]).mean().unstack()
    return table.reindex(columns=list(report.by_group.index))


def _estimates(w: Window, version: logged.Version, frame: pd.DataFrame) -> pd.DataFrame:
    """Estimate and realized metrics per time bucket and for the whole window."""
    import pandas as pd

    from nbdeploy import registry
    from nbdeploy.monitoring import metrics
    from nbdeploy.monitoring.estimate import Estimator

    holdout = registry.load_holdout(registry.resolve(version.ref))
    if holdout is None:
        raise NbdeployError(
            f"no label-free estimate: run nd.test({version.ref!r}, X_holdout, y_holdout) "
            "to give it held-out data to calibrate on"
        )
    same = (frame["model_name"] == version.name) & (frame["model_version"] == version.version)
    frame = frame[same]
    if frame.empty:  # e.g. a version just promoted, not yet answering: nothing to estimate
        return pd.DataFrame(columns=["rows", "labelled"]).rename_axis("bucket")
    rows = []
    estimator = Estimator(w.name, version, holdout, frame)
    groups = list(frame.groupby(metrics.buckets(w, 6).loc[frame.index]).groups.items())
    for bucket, idx in [*groups, ("all", frame.index)]:
        part = frame.loc[idx]
        # per bucket plain calibration (cheap); the whole window also weighted by density
        est = estimator.estimate(part, weighted=bucket == "all")
        row: dict[str, Any] = {"bucket": bucket, "rows": len(part), "labelled": est.labelled}
        for metric, e in est.estimates().items():
            row[f"estimated {metric}"] = e.value
            row[f"{metric} 95% low"], row[f"{metric} 95% high"] = e.ci_low, e.ci_high
            row[f"realized {metric}"] = est.realized.get(metric, math.nan)
        rows.append(row)
    return pd.DataFrame(rows).set_index("bucket")


def indicators(extras: dict[str, Any], rows: int) -> dict[str, tuple[float, int, str]]:
    out: dict[str, tuple[float, int, str]] = {}
    worst = (-math.inf, 0, "")
    for column, (report, _) in (extras.get("fairness") or {}).items():
        if report.disparity == report.disparity and report.disparity > worst[0]:
            worst = (report.disparity, report.rows, f"by {column} ({report.task})")
    if worst[0] > -math.inf:
        out["disparity"] = worst
    scored = extras.get("anomalies")
    if scored is not None:
        from nbdeploy.monitoring.anomalies import rate

        top = scored.loc[scored["anomalous"], "anomaly_features"].head(1).tolist()
        detail = f"e.g. {top[0]}" if top and top[0] else ""
        out["anomaly_rate"] = (rate(scored), int(scored["anomaly_score"].notna().sum()), detail)
    est = extras.get("estimate")
    if est is not None and "estimated accuracy" in est:
        row = est.loc["all"]
        ci = f"95% interval {row['accuracy 95% low']:.3f}–{row['accuracy 95% high']:.3f}"
        out["estimated_accuracy"] = (float(row["estimated accuracy"]), rows, ci)
    return out


def _fairness_tab(r: MonitorReport) -> str:
    from nbdeploy.monitoring.render import bars

    extras = r.extras
    fair = extras.get("fairness") or {}
    if not fair:
        note = extras.get("notes", {})
        why = "; ".join(v for k, v in note.items() if k.startswith("fairness")) or (
            "no passthrough columns to compare groups by: register the model with "
            "nd.register(..., passthrough=['region']) and send that column with requests"
        )
        return _NOTE.format(html.escape(why))
    parts = []
    for column, (report, over_time) in fair.items():
        parts.append(report._repr_html_())
        what = {"binary": f"selection rate ({report.positive})", "multiclass": "accuracy",
                "regression": "MAE"}[report.task]  # fmt: skip
        charts = []
        for bucket, row in over_time.iterrows():
            values = row.to_numpy(float)
            labels = [str(g) for g in over_time.columns]
            title = f"{bucket:%m-%d %H:%M}" if hasattr(bucket, "strftime") else str(bucket)
            charts.append(bars(f"{what} by {column}, from {title}", labels, None,
                               np.nan_to_num(values)))  # fmt: skip
        parts.append(f"<div><b>{html.escape(what)} per group over time</b></div>"
                     f"<div>{''.join(charts)}</div>")  # fmt: skip
    return "".join(parts)


def _quality_extra(r: MonitorReport) -> str:
    from nbdeploy.monitoring.render import table

    scored = r.extras.get("anomalies")
    if scored is None:
        why = r.extras.get("notes", {}).get("anomalies", "")
        return f"<b>anomalous inputs</b>{_NOTE.format(html.escape(why))}" if why else ""
    from nbdeploy.monitoring.anomalies import rate

    top = scored[scored["anomalous"]].sort_values("anomaly_score", ascending=False)
    shown = top[["prediction_id", "anomaly_score", "anomaly_features"]].head(_TOP_ANOMALIES)
    value = rate(scored)
    return (
        f"<b>anomalous inputs</b>: {'–' if value != value else f'{value:.1%}'} of the window's "
        f"rows (the detector flags 1% of held-out training rows by default)"
        f"{table(shown.set_index('prediction_id'))}"
    )


def _performance_extra(r: MonitorReport) -> str:
    from nbdeploy.monitoring.estimate import LABEL
    from nbdeploy.monitoring.render import table

    est = r.extras.get("estimate")
    if est is None:
        why = r.extras.get("notes", {}).get("estimate", "")
        return f"<b>label-free estimate</b>{_NOTE.format(html.escape(why))}" if why else ""
    shown = est.copy()
    shown.index = [b if isinstance(b, str) else b.strftime("%m-%d %H:%M") for b in shown.index]
    shown.index.name = "from"
    return (f"<b>estimate beside realized</b> <i>({html.escape(LABEL)}; realized from "
            f"feedback labels where they exist)</i>{table(shown)}")  # fmt: skip


def _segments(r: MonitorReport, columns: tuple[str, ...]) -> str:
    from nbdeploy.monitoring.render import table

    seg = r.extras.get("segments")
    if seg is None or not len(seg):
        return ""
    keep = [c for c in ("rows", "share", *columns, "flagged") if c in seg]
    hidden = seg.attrs.get("hidden", 0)
    more = f" ({hidden} smaller segments not shown)" if hidden else ""
    return f"<b>by {html.escape(r.extras['by'])}</b>{more}{table(seg[keep])}"


def extend(r: MonitorReport, sections: dict[str, str]) -> dict[str, str]:
    """Add the views to the tab contents (called by ``render.sections``)."""
    sections["Fairness"] = _fairness_tab(r)
    sections["Quality"] += _quality_extra(r) + _segments(
        r, ("max_missing_rate", "max_out_of_range_rate", "max_unseen_rate", "anomaly_rate")
    )
    sections["Performance"] += _performance_extra(r) + _segments(
        r, ("labelled", "accuracy", "f1", "mae", "rmse")
    )
    sections["Drift"] += _segments(r, ("max_feature_psi", "drifted_features"))
    return sections
