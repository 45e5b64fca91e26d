"""nd.audit on a served prediction, tamper detection, and the packaged audit notebook."""

from __future__ import annotations

import sqlite3

import pytest

import nbdeploy as nd
from tests.conftest import kernel_name

pytestmark = pytest.mark.slow


@pytest.fixture
def answered(served, churn_data):
    _, _, X_test, _ = churn_data
    return served.predict(X_test.head(5)), X_test.head(5)


def test_audit_record_traces_a_served_prediction(answered, champion):
    answers, X = answered
    pid = answers["prediction_id"][2]
    record = nd.audit(pid)
    assert isinstance(record, nd.AuditRecord)
    assert (record.prediction_id, record.model_name, record.model_version) == (pid, "churn", 1)
    assert record.alias == "champion" and record.role == "served"
    assert record.run_id == champion.run_id
    assert record.data_fingerprint == champion.fingerprint
    assert record.training_notebook  # this test file, where nd.register ran
    assert record.inputs == {c: X.iloc[2][c] for c in X.columns}
    assert record.output == answers["prediction"][2]
    assert record.verified is True and record.reproduced is True
    # a scaler + one-hot + logistic pipeline: exact, additive per input column
    assert record.explanation_method.startswith("linear")
    assert list(record.explanation) and set(record.explanation) == set(X.columns)
    assert "log verified" in record._repr_html_()


def test_editing_a_logged_row_makes_verified_false(answered, home):
    answers, _ = answered
    pid = answers["prediction_id"][0]
    record_id = pid.rpartition("-")[0]
    db = sqlite3.connect(home / "audit.db")
    with db:
        db.execute(
            "UPDATE records SET latency_ms = latency_ms + 1 WHERE record_id = ?", (record_id,)
        )
    db.close()
    assert nd.audit(pid).verified is False


def test_unknown_prediction_id_is_a_clear_error(home):
    with pytest.raises(nd.AuditLogError, match="no logged prediction"):
        nd.audit("nope-0")


def test_the_audit_notebook_reproduces_and_verifies(answered):
    answers, _ = answered
    pid = answers["prediction_id"][1]
    done = nd.run_job(
        "audit", {"model_name": "churn", "prediction_id": pid}, kernel=kernel_name(), progress=False
    )
    assert done.status == "succeeded", done.error
    r = done.results
    assert r["log_verified"] is True and r["records_checked"] >= 1
    assert (r["model_version"], r["reproduced"], r["verified"]) == (1, True, True)
    assert r["predictions"] >= 5
