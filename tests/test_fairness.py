"""``nd.fairness`` and the gate's ``disparity`` check, against fairlearn itself."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
)

import nbdeploy as nd
from nbdeploy.exceptions import NbdeployError


def _regions(X: pd.DataFrame) -> np.ndarray:
    # monthly contracts (who churn more) live mostly in the north: a real disparity
    rng = np.random.default_rng(3)
    north = np.where(X["contract"].astype(str) == "monthly", 0.8, 0.2)
    regions = np.where(rng.random(len(X)) < north, "north", "south").astype(object)
    regions[:12] = "island"  # a group too small to judge
    return regions


@pytest.fixture
def scored(home, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    mv = nd.register(churn_models[0], "churn", X, y, passthrough=["region"])
    regions = _regions(X_test)
    out = nd.score(mv.ref, X_test.assign(region=regions))
    labelled = out["prediction_id"].iloc[:300]  # feedback for 300 of 400 rows
    nd.feedback("churn", labelled, y_test.iloc[:300])
    return mv, out, regions, y_test


def test_binary_fairness_matches_fairlearn(scored):
    _, out, regions, y_test = scored
    report = nd.fairness("churn", by="region")
    assert report.task == "binary" and report.positive == "yes"
    groups = report.by_group
    assert list(groups.index) == ["island", "north", "south"]
    assert groups.loc["north", "n"] == (regions == "north").sum()
    for col in ("n", "selection_rate", "accuracy", "tpr", "fpr", "roc_auc"):
        assert col in groups
    # the small group is kept, NaN and flagged
    assert groups.loc["island", "flagged"] and math.isnan(groups.loc["island", "selection_rate"])
    assert not groups.loc["north", "flagged"]

    big = regions != "island"
    pred = (out["prediction"] == "yes").to_numpy()
    expected_dpd = demographic_parity_difference(
        pred[big], pred[big], sensitive_features=regions[big]
    )
    assert report.demographic_parity_difference == pytest.approx(expected_dpd, abs=1e-12)
    assert report.disparity == report.demographic_parity_difference > 0.1

    known = np.zeros(len(out), bool)
    known[:300] = True
    keep = known & big
    truth = (y_test.to_numpy() == "yes")[keep]
    expected_eod = equalized_odds_difference(truth, pred[keep], sensitive_features=regions[keep])
    assert report.equalized_odds_difference == pytest.approx(expected_eod, abs=1e-12)

    north = regions == "north"
    rate = pred[north].mean()
    row = groups.loc["north"]
    assert row["selection_rate"] == pytest.approx(rate)
    assert row["selection_rate_ci_low"] < rate < row["selection_rate_ci_high"]
    north_known = north & known
    accuracy = (pred[north_known] == (y_test.to_numpy() == "yes")[north_known]).mean()
    assert row["accuracy"] == pytest.approx(accuracy)
    assert row["accuracy_ci_low"] <= accuracy <= row["accuracy_ci_high"]
    assert "fewer than 30" in " ".join(report.notes)
    assert "north" in report._repr_html_()


def test_a_column_never_logged_says_what_to_do(scored):
    with pytest.raises(NbdeployError, match=r"never logged.*passthrough=\['segment'\]"):
        nd.fairness("churn", by="segment")
    by_feature = nd.fairness("churn", by="contract")  # a feature slices too
    assert set(by_feature.by_group.index) == {"monthly", "yearly", "two-year"}


def test_gate_disparity_check(home, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    regions = _regions(X_test)
    report = nd.test(
        mv, X_test.assign(region=regions), y_test, sensitive="region", max_disparity=0.05
    )
    row = report.checks.set_index("check").loc["disparity"]
    pred = (nd.score(mv.ref, X_test, log=False)["prediction"] == "yes").to_numpy()
    expected = demographic_parity_difference(pred, pred, sensitive_features=regions)
    assert row["value"] == pytest.approx(expected, abs=1e-6)
    assert not row["passed"] and not report.passed
    loose = nd.test(mv, X_test, y_test, sensitive=pd.Series(regions), max_disparity=0.9)
    assert loose.passed
    with pytest.raises(NbdeployError, match="sensitive="):
        nd.test(mv, X_test, y_test, max_disparity=0.1)


def test_multiclass_and_regression_get_the_metrics_that_apply(home):
    from sklearn.linear_model import LinearRegression, LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600)})
    group = np.where(rng.random(600) < 0.5, "g1", "g2")
    y3 = np.digitize(X["a"] + 0.5 * rng.normal(size=600), [-0.5, 0.5]).astype(str)
    clf = LogisticRegression(max_iter=500).fit(X, y3)
    mv = nd.register(clf, "three", X, y3, passthrough=["group"])
    out = nd.score(mv.ref, X.assign(group=group))
    nd.feedback("three", out["prediction_id"], list(y3))
    rep = nd.fairness("three", by="group")
    assert rep.task == "multiclass" and rep.metrics == ("accuracy",)
    assert math.isnan(rep.demographic_parity_difference)
    frame = MetricFrame(
        metrics=lambda t, p: float(np.mean(np.asarray(t) == np.asarray(p))),
        y_true=list(y3),
        y_pred=list(out["prediction"]),
        sensitive_features=group,
    )
    assert rep.disparity == pytest.approx(frame.difference(), abs=1e-12)
    assert "multiclass" in rep.notes[0]

    yr = 2 * X["a"] + rng.normal(size=600)
    reg = LinearRegression().fit(X, yr)
    mv = nd.register(reg, "reg", X, yr, passthrough=["group"])
    out = nd.score(mv.ref, X.assign(group=group))
    nd.feedback("reg", out["prediction_id"], yr.tolist())
    rep = nd.fairness("reg", by="group")
    assert rep.task == "regression" and "mae" in rep.metrics
    err = np.abs(out["prediction"].to_numpy() - yr.to_numpy())
    assert rep.by_group.loc["g1", "mae"] == pytest.approx(err[group == "g1"].mean())
