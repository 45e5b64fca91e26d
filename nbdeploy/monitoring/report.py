"""``monitoring.report``: everything the monitor shows for one window, computed once.

The panel (``nd.monitor``), its offline ``text/html`` snapshot, the standalone page
(``nbdeploy monitor NAME --html``) and the alert rules all read the same
:class:`MonitorReport`, so they never disagree.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring import metrics
from nbdeploy.monitoring.data import Window, load_window

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.models import Comparison
    from nbdeploy.monitoring.driftstats import DriftReport


@dataclass(frozen=True, repr=False)
class MonitorReport:
    """Overview, drift, quality, performance, alerts and comparison of one window."""

    name: str
    window: str
    generated: float
    overview: dict[str, Any]
    drift: DriftReport | None
    prediction_drift: DriftReport | None
    quality: pd.DataFrame
    rejections: pd.DataFrame
    performance: pd.DataFrame
    is_classifier: bool
    alerts: pd.DataFrame
    comparison: Comparison | None
    data: Window = field(repr=False, compare=False)
    #: the other versions that answered in the window, each against its own profile
    other_versions: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    #: fairness, anomalies, label-free estimate and segments (``monitoring.beyond``)
    extras: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def indicators(self) -> dict[str, tuple[float, int, str]]:
        """What alert rules test: metric -> (value, rows it rests on, detail)."""
        rows = self.overview["predictions"]
        out: dict[str, tuple[float, int, str]] = {}
        if self.drift is not None:
            cols = self.drift.columns
            psi = cols["psi"].astype(float)
            high = ", ".join(f"{c} ({v:.2f})" for c, v in psi[psi > 0.2].sort_values().items())
            drifted = ", ".join(str(c) for c in cols.index[cols["drifted"]])
            out["max_feature_psi"] = (float(psi.max()), rows, high and f"PSI above 0.2: {high}")
            out["drifted_share"] = (float(cols["drifted"].mean()), rows, drifted)
            out["dataset_drift"] = (float(self.drift.drifted), rows, drifted)
        if (
            self.prediction_drift is not None
            and "prediction" in self.prediction_drift.columns.index
        ):
            out["prediction_psi"] = (
                float(self.prediction_drift.columns.loc["prediction", "psi"]),
                rows,
                "",
            )
        total = self.overview["requests"] + self.overview["rejected"]
        if total:
            codes = ", ".join(f"{r.code}: {r.count}" for r in self.rejections.itertuples())
            out["error_rate"] = (float(self.overview["error_rate"]), total, codes)
        if len(self.performance):
            overall = self.performance.loc["all"]
            for metric in ("accuracy", "f1", "roc_auc", "mae", "rmse", "estimated_accuracy"):
                value = overall.get(metric, math.nan)
                if value == value and value is not None:
                    n = rows if metric == "estimated_accuracy" else int(overall["labelled"])
                    out[metric] = (float(value), n, "")
        for column, row in self.quality.iterrows():
            for metric in ("missing_rate", "out_of_range_rate", "unseen_rate"):
                value = float(row[metric])
                key = f"max_{metric}"
                if value == value and value > out.get(key, (-1.0, 0, ""))[0]:
                    out[key] = (value, int(row["rows"]), str(column))
        from nbdeploy.monitoring.beyond import indicators

        out.update(indicators(self.extras, rows))
        return out

    def __repr__(self) -> str:
        o, drifted = self.overview, self.drift.n_drifted if self.drift is not None else 0
        return (
            f"MonitorReport({self.name!r}, window={self.window!r}: {o['requests']} requests, "
            f"{o['predictions']} predictions, {o['rejected']} rejected, "
            f"{drifted} drifted features, model {o['ref']})"
        )

    def sections(self) -> dict[str, str]:
        """Tab title -> HTML (charts are inline SVG)."""
        from nbdeploy.monitoring import render

        return render.sections(self)

    def to_html(self) -> str:
        """A standalone page: no scripts, no CDN, readable offline."""
        from nbdeploy.monitoring import render

        return render.page(self)

    def _repr_html_(self) -> str:
        from nbdeploy.monitoring import render

        return render.snapshot(self)


def report(
    name: str,
    window: str | float | None = "1h",
    *,
    now: float | None = None,
    by: str | None = None,
    extras: bool = True,
) -> MonitorReport:
    """Compute the monitor's numbers for deployment (or model) ``name`` over ``window``.

    ``by``: a logged column to slice drift, quality and performance by (``nd.segments``).
    ``extras=False`` skips fairness, anomalies and the label-free estimate (alert checks
    that need none of them stay cheap).
    """
    from nbdeploy.monitoring.beyond import compute
    from nbdeploy.monitoring.rules import alerts

    w = load_window(name, window, now=now)
    if w.ref is None:
        from nbdeploy.hints import unknown_name

        raise unknown_name(name) or NbdeployError(
            f"no deployment or logged predictions named {name!r}; serve a model first "
            "(see nd.deployments())"
        )
    comparison = None
    if len(w.shadow) or (len(w.served) and w.served["model_version"].nunique() > 1):
        from nbdeploy.comparison import compare

        try:
            comparison = compare(name, since=w.since)
        except NbdeployError:
            comparison = None
    label = window if isinstance(window, str) else _label(window)
    return MonitorReport(
        name=name,
        window=label,
        generated=time.time() if now is None else now,
        overview=metrics.overview(w),
        drift=metrics.feature_drift(w),
        prediction_drift=metrics.prediction_drift(w),
        quality=metrics.quality(w),
        rejections=metrics.rejections(w),
        performance=metrics.performance(w),
        is_classifier=w.is_classifier,
        alerts=alerts(name, limit=50),
        comparison=comparison,
        data=w,
        other_versions=metrics.version_drift(w),
        extras=compute(w, by) if extras else {},
    )


def _label(seconds: float | None) -> str:
    if seconds is None:
        return "all"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
