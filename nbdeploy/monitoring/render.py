"""HTML and inline-SVG rendering of a :class:`MonitorReport` (no scripts, no CDN).

The same section strings fill the widget's tabs, its ``text/html`` snapshot and the
standalone page, so what a notebook shows offline is what the live panel showed.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.monitoring.metrics import ESTIMATE_LABEL

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.monitoring.report import MonitorReport

TABS = ("Overview", "Drift", "Quality", "Performance", "Fairness", "Alerts", "Compare")
_TABLE = "border-collapse:collapse;font-size:12px;margin:4px 0"
_CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:right"
_REF, _CUR, _BAD = "#b0b7c3", "#2f6fba", "#d9534f"
_HISTOGRAMS = 6


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def table(frame: pd.DataFrame, *, index: bool = True, digits: int = 3) -> str:
    """A compact HTML table with every value escaped."""
    if frame is None or not len(frame):
        return "<p style='color:#777'>nothing in this window</p>"
    head = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    rows = []
    for key, row in frame.astype(object).iterrows():  # object: ints stay ints
        cells = ([_num(key)] if index else []) + [_num(v, digits) for v in row.tolist()]
        rows.append("<tr>" + "".join(f"<td style='{_CELL}'>{c}</td>" for c in cells) + "</tr>")
    top = "".join(f"<th style='{_CELL}'>{html.escape(h)}</th>" for h in head)
    return f"<table style='{_TABLE}'><tr>{top}</tr>{''.join(rows)}</table>"


def bars(
    title: str,
    labels: list[str],
    ref: np.ndarray | None,
    cur: np.ndarray,
    *,
    y_axis: str | None = None,
) -> str:
    """Reference (grey) and current (blue) shares side by side, as inline SVG.

    ``y_axis`` names the vertical axis and draws it, with ticks at 0, half and the peak.
    """
    left = 34 if y_axis else 0
    width, height, top = 280 + left, 110, 16
    n = max(len(cur), 1)
    peak = max(float(np.max(cur)) if len(cur) else 0.0,
               float(np.max(ref)) if ref is not None and len(ref) else 0.0, 1e-12)  # fmt: skip
    step = (width - left) / n
    parts = [f"<text x='0' y='11' font-size='11'>{html.escape(title)}</text>"]
    for i in range(len(cur)):
        for j, (series, color) in enumerate(((ref, _REF), (cur, _CUR))):
            if series is None:
                continue
            h = (height - top - 12) * float(series[i]) / peak
            x = left + (i * step + j * step / 2 if ref is not None else i * step)
            w = (step / 2 if ref is not None else step) - 1
            parts.append(
                f"<rect x='{x:.1f}' y='{height - 12 - h:.1f}' width='{max(w, 0.5):.1f}' "
                f"height='{h:.1f}' fill='{color}'><title>{html.escape(labels[i])}: "
                f"{float(series[i]):.3g}</title></rect>"
            )
    if y_axis:
        bottom, span = height - 12, height - top - 12
        parts.append(
            f"<line x1='{left - 2}' y1='{top}' x2='{left - 2}' y2='{bottom}' stroke='#888'/>"
        )
        for share in (0.0, 0.5, 1.0):
            y = bottom - span * share
            parts.append(
                f"<line x1='{left - 5}' y1='{y:.1f}' x2='{left - 2}' y2='{y:.1f}' stroke='#888'/>"
                f"<text x='{left - 7}' y='{y + 3:.1f}' font-size='9' text-anchor='end'>"
                f"{peak * share:.3g}</text>"
            )
        parts.append(
            f"<text x='9' y='{bottom - span / 2:.1f}' font-size='9' text-anchor='middle' "
            f"transform='rotate(-90 9 {bottom - span / 2:.1f})'>{html.escape(y_axis)}</text>"
        )
    if labels:
        parts.append(
            f"<text x='{left}' y='{height - 1}' font-size='9'>{html.escape(labels[0])}</text>"
        )
        parts.append(
            f"<text x='{width}' y='{height - 1}' font-size='9' text-anchor='end'>"
            f"{html.escape(labels[-1])}</text>"
        )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"style='margin:4px 12px 4px 0'>{''.join(parts)}</svg>"
    )


def _histogram(column: str, prof: dict[str, Any], values: pd.Series, stat: str) -> str:
    from nbdeploy.profiling import OTHER, as_float, category_counts

    if prof["kind"] == "numeric":
        q = np.asarray(prof["quantiles"], float)
        cur = as_float(values)
        cur = cur[np.isfinite(cur)]
        if not len(q) or not len(cur):
            return ""
        lo = min(q[5], float(np.quantile(cur, 0.005)))
        hi = max(q[995], float(np.quantile(cur, 0.995)))
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
        cdf = np.interp(edges[1:-1], q, np.linspace(0, 1, len(q)))
        ref = np.diff(np.concatenate(([0.0], cdf, [1.0])))
        cur_share = np.histogram(np.clip(cur, edges[0], edges[-1]), edges)[0] / len(cur)
        labels = [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(20)]
        labels[0], labels[-1] = f"{edges[0]:.3g}", f"{edges[-1]:.3g}"
        return bars(f"{column} ({stat})", labels, ref, cur_share)
    counts = category_counts(values)
    freqs = {k: v for k, v in prof["frequencies"].items() if k != OTHER}
    keys = list(dict.fromkeys([*list(freqs)[:8], *list(counts.index[:4])]))
    total = max(int(counts.sum()), 1)
    ref_share = np.array([freqs.get(k, 0.0) for k in keys])
    cur_share = np.array([counts.get(k, 0) / total for k in keys])
    return bars(f"{column} ({stat})", keys, ref_share, cur_share)


def overview(r: MonitorReport) -> str:
    o = r.overview
    cards = [("requests", o["requests"]), ("predictions", o["predictions"]),
             ("rejected", o["rejected"]), ("error rate", _pct(o["error_rate"])),
             ("latency p50 (ms)", o["latency_p50_ms"]), ("latency p99 (ms)", o["latency_p99_ms"]),
             ("model", o["ref"])]  # fmt: skip
    kpis = "".join(
        f"<div style='display:inline-block;margin:4px 16px 4px 0'><div style='color:#666;"
        f"font-size:11px'>{k}</div><div style='font-size:18px'>{_num(v)}</div></div>"
        for k, v in cards
    )
    import pandas as pd

    from nbdeploy.monitoring.metrics import bucket_starts, buckets

    chart = ""
    if o["predictions"]:
        per = r.data.served.groupby(buckets(r.data, 12)).size()
        per = per.reindex(bucket_starts(r.data, 12), fill_value=0)
        labels = [t.strftime("%H:%M") for t in per.index]
        chart = bars(
            "predictions per interval", labels, None, per.to_numpy(float), y_axis="predictions"
        )
    versions = pd.DataFrame(o["versions"])
    answering = table(versions, index=False)
    return f"<div>{kpis}</div>{chart}<div><b>versions answering</b>{answering}</div>"


def drift(r: MonitorReport) -> str:
    others = ""
    if r.other_versions is not None and len(r.other_versions):
        others = ("<div><b>other versions in this window</b> (each against its own "
                  f"training profile){table(r.other_versions, index=False)}</div>")  # fmt: skip
    if r.drift is None:
        return f"<p style='color:#777'>no predictions of {html.escape(str(r.data.ref))}, the " \
            f"version answering now, in this window</p>{others}"  # fmt: skip
    cols = r.drift.columns
    order = (cols["statistic"] / cols["threshold"]).fillna(np.inf).sort_values(ascending=False)
    charts = []
    frame = r.data.feature_frame(r.data.current)
    profiles = (r.data.profile or {})["columns"]
    for column in list(order.index)[:_HISTOGRAMS]:
        row = cols.loc[column]
        stat = f"{row['method']} {_num(row['statistic'])}{' DRIFT' if row['drifted'] else ''}"
        charts.append(_histogram(str(column), profiles[column], frame[column], stat))
    legend = (f"<span style='color:{_REF}'>&#9632;</span> training "
              f"<span style='color:{_CUR}'>&#9632;</span> served")  # fmt: skip
    pred = r.prediction_drift._repr_html_() if r.prediction_drift is not None else ""
    whose = (f"<p style='margin:2px 0'>traffic of {html.escape(str(r.data.ref))}, the version "
             "answering now, against its training profile</p>")  # fmt: skip
    return f"{whose}{r.drift._repr_html_()}<div>{legend}</div><div>{''.join(charts)}</div>" + (
        f"<div><b>prediction drift</b> (served outputs vs training outputs){pred}</div>{others}"
    )


def quality(r: MonitorReport) -> str:
    return (
        f"<b>per feature</b> (rates of the window's rows; range and categories from training)"
        f"{table(r.quality)}<b>rejected requests</b> (never logged; by error code)"
        f"{table(r.rejections, index=False)}"
    )


def performance(r: MonitorReport) -> str:
    perf = r.performance
    if not len(perf):
        return "<p style='color:#777'>no served predictions in this window</p>"
    shown = perf.rename(columns={"estimated_accuracy": "estimated accuracy*"})
    shown.index = [b if isinstance(b, str) else b.strftime("%m-%d %H:%M") for b in shown.index]
    shown.index.name = "from"
    note = ""
    if "estimated_accuracy" in perf:
        note = f"<p style='font-size:11px;color:#555'>* {html.escape(ESTIMATE_LABEL)}.</p>"
    labelled = int(perf.loc["all", "labelled"])
    head = (f"<b>{labelled}</b> of {int(perf.loc['all', 'predictions'])} predictions have "
            "feedback labels (nd.feedback or POST /feedback)")  # fmt: skip
    return f"<div>{head}</div>{table(shown)}{note}"


def alerts(r: MonitorReport) -> str:
    from nbdeploy.monitoring.rules import DEFAULT_RULES

    values = r.indicators()
    rules = []
    for rule in DEFAULT_RULES:
        value, rows, _ = values.get(rule.metric, (math.nan, 0, ""))
        state = "no data" if value != value or rows < rule.min_rows else (
            "BREACHED" if _breached(value, rule.op, rule.threshold) else "ok")  # fmt: skip
        rules.append({"rule": rule.name, "condition": f"{rule.metric} {rule.op} {rule.threshold:g}",
                      "value": value, "rows": rows, "now": state})  # fmt: skip
    import pandas as pd

    recorded = r.alerts[["ts", "rule", "value", "message", "webhook"]] if len(r.alerts) else None
    if recorded is not None:
        recorded = recorded.assign(ts=recorded["ts"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    return (f"<b>rules now</b>{table(pd.DataFrame(rules), index=False)}"
            f"<b>fired alerts</b> (newest first){table(recorded, index=False)}")  # fmt: skip


def compare(r: MonitorReport) -> str:
    if r.comparison is None:
        return "<p style='color:#777'>no challengers (shadow or canary) in this window</p>"
    return r.comparison._repr_html_()


def _breached(value: float, op: str, threshold: float) -> bool:
    return {">": value > threshold, ">=": value >= threshold,
            "<": value < threshold, "<=": value <= threshold}[op]  # fmt: skip


def _pct(x: float) -> str:
    return "–" if x != x else f"{x:.1%}"


def sections(r: MonitorReport) -> dict[str, str]:
    from nbdeploy.monitoring.beyond import extend

    render = (overview, drift, quality, performance, lambda _: "", alerts, compare)
    return extend(r, {tab: fn(r) for tab, fn in zip(TABS, render, strict=True)})


def header(r: MonitorReport) -> str:
    when = dt.datetime.fromtimestamp(r.generated, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"<div style='font-size:14px'><b>nbdeploy monitor: {html.escape(r.name)}</b> "
            f"— window {html.escape(r.window)}, generated {when}</div>")  # fmt: skip


def snapshot(r: MonitorReport) -> str:
    """The offline stand-in for the widget: the same tabs, switched by CSS alone.

    Radio buttons and labels make the tab strip, so nbconvert's HTML, JupyterLab and
    a browser with no network show it without scripts. Where ``<style>`` is stripped
    (GitHub's notebook view) every section shows, one after the other, under its title.
    """
    import uuid

    uid = f"nbdm-{uuid.uuid4().hex[:12]}"
    tabs = sections(r)
    strip, panes, rules = [], [], []
    for i, (tab, content) in enumerate(tabs.items()):
        checked = " checked" if i == 0 else ""
        strip.append(
            f"<input type='radio' name='{uid}' id='{uid}-{i}' class='nbdm-radio'{checked}>"
            f"<label for='{uid}-{i}' class='nbdm-tab'>{html.escape(tab)}</label>"
        )
        panes.append(
            f"<div class='nbdm-pane nbdm-pane-{i}'><h4 class='nbdm-title'>{html.escape(tab)}</h4>"
            f"{content}</div>"
        )
        rules.append(f"#{uid}-{i}:checked ~ .nbdm-pane-{i}{{display:block}}")
    style = (
        f"<style>#{uid} .nbdm-radio,#{uid} .nbdm-title{{display:none}}"
        f"#{uid} .nbdm-pane{{display:none;border-top:1px solid #ccc;padding-top:6px}}"
        f"#{uid} .nbdm-tab{{display:inline-block;padding:4px 12px;margin-right:2px;"
        "cursor:pointer;border:1px solid #ccc;border-bottom:none;background:#f3f3f3;"
        "font-size:13px}"
        + "".join(f"#{uid} {rule}" for rule in rules)
        + "".join(
            f"#{uid} #{uid}-{i}:checked + .nbdm-tab{{background:#fff;font-weight:bold}}"
            for i in range(len(tabs))
        )
        + "</style>"
    )
    return (
        f"<div class='nbdeploy-monitor' id='{uid}'>{style}{header(r)}"
        f"{''.join(strip)}{''.join(panes)}</div>"
    )


def page(r: MonitorReport) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>nbdeploy monitor: {html.escape(r.name)}</title></head>"
        f"<body style='font-family:sans-serif;margin:16px'>{snapshot(r)}</body></html>\n"
    )
