"""Segments (``nd.segments``, ``by=``) and the monitor's fairness, anomaly and estimate
views, on a real server's traffic: tabs, offline snapshot and alert rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nbdeploy as nd
from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring import check_alerts, report
from nbdeploy.monitoring.render import TABS


@pytest.fixture
def traffic(home, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    mv = nd.register(churn_models[0], "churn", X, y, passthrough=["region"])
    nd.test(mv, X_test, y_test)
    dep = nd.serve(mv.ref)
    north = X_test["contract"].astype(str).to_numpy() == "monthly"
    region = np.where(north, "north", "south").astype(object)
    odd = X_test.head(10).assign(monthly_charges=900.0)
    out = dep.predict(X_test.assign(region=region))
    dep.predict(odd.assign(region="north"))
    nd.feedback("churn", out["prediction_id"].iloc[:300], y_test.iloc[:300])
    return dep, region


def test_segments_slice_drift_quality_and_performance(traffic):
    _, region = traffic
    table = nd.segments("churn", by="region")
    assert set(table.index) == {"north", "south"}
    assert table.loc["north", "rows"] == (region == "north").sum() + 10
    for column in ("max_feature_psi", "max_out_of_range_rate", "accuracy", "anomaly_rate"):
        assert column in table
    # the crafted rows are all in the north: out of range and anomalous there only
    assert (
        table.loc["north", "max_out_of_range_rate"]
        > 0
        == table.loc["south", "max_out_of_range_rate"]
    )
    assert table.loc["north", "anomaly_rate"] > table.loc["south", "anomaly_rate"]
    assert not math.isnan(table.loc["south", "accuracy"])
    with pytest.raises(NbdeployError, match="never logged"):
        nd.segments("churn", by="channel")


def test_monitor_shows_fairness_anomalies_estimates_and_segments(traffic):
    rep = report("churn", "all", by="region")
    tabs = rep.sections()
    assert list(tabs) == list(TABS) and "Fairness" in TABS
    assert "demographic parity difference" in tabs["Fairness"]
    assert "per group over time" in tabs["Fairness"] and "<svg" in tabs["Fairness"]
    assert "anomalous inputs" in tabs["Quality"] and "monthly_charges=900" in tabs["Quality"]
    assert "estimate beside realized" in tabs["Performance"]
    assert "by region" in tabs["Drift"] and "by region" in tabs["Performance"]
    snapshot = rep._repr_html_()
    assert ">Fairness</h4>" in snapshot and "estimated without labels" in snapshot

    values = rep.indicators()
    for metric in ("disparity", "anomaly_rate", "estimated_accuracy"):
        assert metric in values and values[metric][0] == values[metric][0]
    assert values["disparity"][0] == pytest.approx(
        nd.fairness("churn", by="region").demographic_parity_difference
    )
    checked = check_alerts(
        "churn",
        ["disparity > 0.1", "anomaly_rate > 0.5", "estimated_accuracy < 0.5"],
        window="all",
    ).set_index("rule")
    assert checked.loc["disparity > 0.1", "status"] == "fired"
    assert checked.loc["anomaly_rate > 0.5", "status"] == "ok"
    assert checked.loc["estimated_accuracy < 0.5", "status"] == "ok"


def test_the_magic_and_the_cli_slice_the_monitor_by_a_column(traffic, tmp_path):
    from IPython.core.interactiveshell import InteractiveShell

    from nbdeploy.cli import main

    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance(history_length=0, history_load_length=0)
    try:
        sh.run_line_magic("load_ext", "nbdeploy")
        panel = sh.run_line_magic("deploy", "monitor churn --window all --by region")
        panel.close()
    finally:
        InteractiveShell.clear_instance()
    assert panel.by == "region" and "by region" in panel.report.sections()["Drift"]
    page = tmp_path / "monitor.html"
    assert main(["monitor", "churn", "--window", "all", "--by", "region", "--html", str(page)]) == 0
    assert "by region" in page.read_text(encoding="utf-8")
    assert main(["monitor", "churn", "--by", "channel"]) != 0  # never logged: one line
