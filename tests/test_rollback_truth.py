"""After a rollback, compare, the monitor and alerts name the version answering now.

The quickstart's story on a real server: v1 champion, traffic, v2 promoted (the
server follows), a little traffic, rollback to v1, more traffic. The newest rows
before the rollback are v2's, yet v1 is champion again: roles and versions come
from the log and the alias holder, and each version's traffic is compared with its
own training profile (the same data throughout, so nothing may drift).
"""

from __future__ import annotations

import time

import pytest

import nbdeploy as nd
from nbdeploy.monitoring import check_alerts, report

pytestmark = pytest.mark.slow


def _answered_by(dep, X, version: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(dep.predict(X.head(1))["model_version"].iloc[0]) == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"the server never answered with version {version}")


@pytest.fixture
def rolled_back(home, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    v1 = nd.register(churn_models[0], "churn", X, y)
    v2 = nd.register(churn_models[0], "churn", X, y)  # the same model, fitted on the same rows
    for mv in (v1, v2):
        assert nd.test(mv, X_test, y_test, min_score=0.7).passed
    nd.promote(v1, to="champion")
    dep = nd.serve("churn@champion")
    for i in range(40):
        dep.predict(X_test.iloc[i * 5 : (i + 1) * 5])
    nd.promote(v2, to="champion")
    _answered_by(dep, X_test, 2)
    dep.predict(X_test.iloc[200:203])
    nd.rollback("churn")
    _answered_by(dep, X_test, 1)
    for i in range(40, 60):
        dep.predict(X_test.iloc[i * 5 : (i + 1) * 5])
    return dep


def test_compare_monitor_drift_and_alerts_name_v1_after_the_rollback(rolled_back):
    comparison = nd.compare("churn")
    assert comparison.champion_version == 1 and comparison.champion_alias == "champion"
    roles = dict(zip(comparison.table["model_version"], comparison.table["role"], strict=True))
    assert roles == {1: "champion", 2: "replaced"}  # v1 was never a canary

    rep = report("churn", "all")
    assert rep.overview["ref"] == "churn/1"
    answering = {row["version"]: row["role"] for row in rep.overview["versions"]}
    assert answering == {1: "champion", 2: "replaced"}
    snapshot = rep._repr_html_()
    assert "churn/1" in snapshot and "churn/2" in snapshot  # header card, other versions
    sections = rep.sections()
    assert "<td style='padding:2px 8px'>champion</td>" in sections["Compare"]
    assert "canary" not in sections["Compare"]

    # v1's traffic against v1's profile, v2's against v2's: unchanged data drifts nowhere
    assert rep.drift is not None and not rep.drift.drifted and rep.drift.n_drifted == 0
    assert rep.prediction_drift is not None and not rep.prediction_drift.columns["drifted"].any()
    others = rep.other_versions.set_index("version")
    assert list(others.index) == ["churn/2"]
    assert others.loc["churn/2", "predictions drifted"] == "no"
    assert "DRIFT" not in sections["Drift"]

    checked = check_alerts("churn", window="all", report=rep).set_index("rule")
    assert (checked["status"] != "fired").all()
    drift_rules = [r for r in checked.index if "drift" in r or "psi" in r]
    assert drift_rules and (checked.loc[drift_rules, "status"] == "ok").all()


def test_a_stopped_deployment_still_names_the_alias_holder(rolled_back):
    rolled_back.stop()
    assert nd.compare("churn").champion_version == 1
    assert report("churn", "all").overview["ref"] == "churn/1"
