"""nd.test: each check can fail for the reason it names."""

from __future__ import annotations

import pandas as pd
import pytest

import nbdeploy as nd
from nbdeploy import registry


def _checks(report) -> dict[str, bool]:
    return dict(zip(report.checks["check"], report.checks["passed"], strict=True))


def test_gate_passes_a_good_model_and_records_it(home, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    report = nd.test(mv, X_test, y_test, min_score=0.8, max_latency_ms=1000)
    assert report.passed and report.metric == "accuracy" and report.score > 0.8
    assert list(report.checks.columns) == ["check", "value", "threshold", "passed"]
    assert _checks(report)["bad inputs refused"]
    assert registry.resolve("churn/1").test_passed is True
    assert "passed" in report._repr_html_()


def test_gate_fails_on_score_latency_and_schema(home, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    report = nd.test(mv, X_test, y_test, min_score=0.99, max_latency_ms=0.000001)
    checks = _checks(report)
    assert not report.passed
    assert checks["accuracy"] is False and checks["latency p50 ms (1 row)"] is False
    assert registry.resolve("churn/1").test_passed is False
    wrong = nd.test(mv, X_test.drop(columns=["contract"]), y_test)
    assert not wrong.passed and "contract" in wrong.checks.iloc[0]["value"]


def test_no_regression_against_the_alias_holder(home, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    good, weak = churn_models
    nd.promote(nd.register(good, "churn", X, y), force=True)
    nd.register(weak, "churn", X, y)
    report = nd.test("churn/2", X_test, y_test, vs="champion")
    assert _checks(report)["vs @champion (v1)"] is False and not report.passed
    assert nd.test("churn/1", X_test, y_test, vs="champion").passed  # itself


def test_regression_default_metric_is_r2(home):
    from sklearn.linear_model import Ridge

    X = pd.DataFrame({"a": range(100), "b": [i % 7 for i in range(100)]}).astype(float)
    y = 3 * X["a"] - X["b"]
    mv = nd.register(Ridge().fit(X, y), "ridge", X, y)
    report = nd.test(mv, X, y, min_score=0.99)
    assert report.metric == "r2" and report.passed
    assert nd.test(mv, X, y, metric="mae", min_score=0.5).passed


def test_unknown_metric_is_a_clear_error(home, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    with pytest.raises(nd.NbdeployError, match="unknown metric"):
        nd.test(mv, X_test, y_test, metric="speed")
