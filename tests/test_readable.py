"""Outputs a newcomer reads: the logs table, the test report, the traffic chart."""

from __future__ import annotations

import re

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell

import nbdeploy as nd

pytestmark = pytest.mark.slow


def test_deploy_logs_shows_features_first_and_keeps_the_data_exact(served, churn_data):
    _, _, X_test, _ = churn_data
    served.predict(X_test.head(4))
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(history_length=0, history_load_length=0)
    try:
        shell.run_line_magic("load_ext", "nbdeploy")
        shown = shell.run_cell("%deploy logs churn").result
    finally:
        InteractiveShell.clear_instance()
    exact = nd.logs("churn")
    # the data is nd.logs' own, to the nanosecond and the microsecond
    assert list(shown.columns) == list(exact.columns)
    assert (shown["timestamp"] == exact["timestamp"]).all()
    assert np.allclose(shown["latency_ms"], exact["latency_ms"])
    readable = shown.readable()
    columns = list(readable.columns)
    assert columns[:2] == ["prediction_id", "timestamp"]
    assert columns[2 : 2 + X_test.shape[1]] == list(X_test.columns)  # features next
    assert columns.index("prediction") < columns.index("request_id")
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", t) for t in readable["timestamp"])
    assert (readable["latency_ms"] == readable["latency_ms"].round(2)).all()
    assert all(len(r) == 9 and r.endswith("…") for r in readable["request_id"])
    assert "monthly_charges" in shown._repr_html_() and "…" in shown._repr_html_()


def test_the_test_report_has_headers_and_both_scores_against_the_holder(
    champion, churn_data, churn_models
):
    X, y, X_test, y_test = churn_data
    v2 = nd.register(churn_models[1], "churn", X, y)
    report = nd.test(v2, X_test, y_test, min_score=0.5, vs="champion")
    row = report.checks.set_index("check").loc["vs @champion (v1)"]
    mine, theirs = (float(v) for v in row["value"].split(" vs "))
    assert mine == pytest.approx(report.score, abs=1e-3) and theirs != pytest.approx(mine)
    assert row["threshold"] == f">= {theirs:.4g}"
    page = report._repr_html_()
    for header in ("check", "value", "required", "result"):
        assert f">{header}</th>" in page
    assert "none" not in page  # no requirement shows as a dash
    assert ">an answer</td>" in page  # the unseen-category row: value, then what is required
    bad = nd.test(v2, X_test.drop(columns="contract"), y_test)
    schema = bad.checks.set_index("check").loc["schema"]
    assert "contract" in schema["value"] and schema["threshold"] == "the signature"


def test_the_traffic_chart_has_a_y_axis(served, churn_data):
    from nbdeploy.monitoring import report

    _, _, X_test, _ = churn_data
    served.predict(X_test.head(30))
    overview = report("churn", "1h").sections()["Overview"]
    chart = overview.split("predictions per interval", 1)[1].split("</svg>", 1)[0]
    assert "rotate(-90" in chart and ">predictions</text>" in chart  # the axis title
    assert re.search(r"text-anchor='end'>0</text>", chart)  # its ticks: 0 ... peak
    assert re.search(r"text-anchor='end'>30</text>", chart)
