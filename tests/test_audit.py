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


@pytest.fixture
def forest(home, churn_data):
    """A registered random forest that never looks at ``support_calls``, loaded."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from nbdeploy.serving.adapter import load

    X, y, X_test, _ = churn_data
    prep = ColumnTransformer(
        [
            ("num", "passthrough", ["tenure_months", "monthly_charges"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["contract"]),
        ]
    )  # support_calls is dropped
    clf = RandomForestClassifier(n_estimators=50, random_state=0)
    pipeline = Pipeline([("prep", prep), ("clf", clf)]).fit(X, y)
    mv = nd.register(pipeline, "churn_rf", X, y)
    return pipeline, load(mv), nd.registry.load_profile(mv), X_test


def _g_difference(pipeline, model, profile, x):
    """g(x) - g(baseline) from the fitted pipeline itself, g = P(predicted class)."""
    import pandas as pd

    from nbdeploy import explain

    base = explain.baseline(profile, list(x))
    for col in model.schema.columns:
        if col.type == "long" and isinstance(base[col.name], float):
            base[col.name] = round(base[col.name])
    categories = pd.CategoricalDtype(["monthly", "yearly", "two-year"])
    frame = pd.DataFrame([x, base]).astype({"contract": categories})
    proba = pipeline.predict_proba(frame)
    cls = int(proba[0].argmax())
    return proba[0, cls] - proba[1, cls]


def test_a_nonlinear_model_gets_exact_additive_shapley_values(forest):
    from nbdeploy import explain

    pipeline, model, profile, X_test = forest
    for i in range(5):
        x = {c: X_test.iloc[i][c] for c in X_test.columns}
        shares, method = explain.explain(model, x, profile)
        assert method.startswith("shapley (exact, 16 coalitions")
        assert set(shares) == set(X_test.columns)
        total = _g_difference(pipeline, model, profile, x)
        assert sum(shares.values()) == pytest.approx(total, abs=1e-9)
        assert shares["support_calls"] == pytest.approx(0.0, abs=1e-12)  # ignored
        # the method string states g(x) and g(baseline), so auditors can check the sum
        g_x, g_base = (float(v) for v in method.split("= ")[-1].rstrip(")").split(" - "))
        assert g_x - g_base == pytest.approx(total, abs=1e-9)


def test_many_columns_fall_back_to_sampled_permutations_that_still_add_up(forest, monkeypatch):
    from nbdeploy import explain

    pipeline, model, profile, X_test = forest
    x = {c: X_test.iloc[0][c] for c in X_test.columns}
    exact, _ = explain.explain(model, x, profile)
    monkeypatch.setattr(explain, "EXACT_MAX_FEATURES", 2)
    shares, method = explain.explain(model, x, profile)
    assert method.startswith("shapley (64 sampled permutations")
    assert sum(shares.values()) == pytest.approx(
        _g_difference(pipeline, model, profile, x), abs=1e-9
    )
    assert shares["support_calls"] == pytest.approx(0.0, abs=1e-12)
    assert shares == pytest.approx(exact, abs=0.05)  # an estimate of the exact values
    assert explain.explain(model, x, profile) == (shares, method)  # seeded: reproducible


def test_audit_of_a_served_forest_prediction_is_additive(forest):
    pipeline, model, profile, X_test = forest
    answers = nd.serve("churn_rf/1").predict(X_test.head(3))
    record = nd.audit(answers["prediction_id"][1])
    assert record.reproduced is True
    assert record.explanation_method.startswith("shapley (exact")
    x = {c: X_test.iloc[1][c] for c in X_test.columns}
    total = _g_difference(pipeline, model, profile, x)
    assert sum(record.explanation.values()) == pytest.approx(total, abs=1e-9)
    assert record.explanation["support_calls"] == pytest.approx(0.0, abs=1e-12)


def test_erasing_a_served_prediction_keeps_its_request_and_the_chain(answered):
    answers, X = answered
    erased, kept = answers["prediction_id"][1], answers["prediction_id"][2]
    assert nd.erase([erased]) == 1
    record = nd.audit(erased)
    assert record.inputs is None and record.erased is True
    assert record.output == answers["prediction"][1] and record.verified is True
    assert "inputs erased" in record.erasure and "nd.erase" in record.erasure
    assert "inputs erased" in record._repr_html_()
    other = nd.audit(kept)  # same request (one record), untouched
    assert other.erased is False and other.reproduced is True and other.verified is True
    assert other.inputs == {c: X.iloc[2][c] for c in X.columns}
    assert nd.verify().ok


def test_a_pii_policy_decides_what_the_log_keeps(home, churn_data, churn_models):
    import numpy as np

    X, y, X_test, _ = churn_data
    with pytest.raises(nd.ConfigError, match="'emial', which is not a column"):
        nd.register(churn_models[0], "churn", X, y, pii={"emial": "hash"})
    with pytest.raises(nd.ConfigError, match="must be 'hash' or 'drop', not 'mask'"):
        nd.register(churn_models[0], "churn", X, y, pii={"contract": "mask"})
    nd.register(churn_models[0], "churn", X, y, pii={"contract": "hash", "support_calls": "drop"})
    dep = nd.serve("churn/1")
    answers = dep.predict(X_test.head(4))
    logged = nd.logs("churn")
    assert logged["support_calls"].isna().all()
    assert logged["tenure_months"].tolist() == X_test["tenure_months"].head(4).tolist()
    hashed = logged["contract"].tolist()
    assert all(isinstance(h, str) and len(h) == 32 for h in hashed)
    assert not set(hashed) & {"monthly", "yearly", "two-year"}
    # keyed, not a bare sha256: the same value hashes alike, but not to its sha256
    import hashlib

    first = X_test["contract"].iloc[0]
    bare = {hashlib.sha256(v.encode()).hexdigest()[:32] for v in (first, f'"{first}"')}
    assert hashed[0] not in bare
    same = X_test["contract"].head(4).to_numpy()
    assert (np.array(hashed) == hashed[0]).tolist() == (same == same[0]).tolist()
    assert (home / "pii.key").stat().st_mode & 0o777 == 0o600
    record = nd.audit(answers["prediction_id"][0])
    assert record.inputs["support_calls"] is None and record.reproduced is None
    assert "pii policy" in record.explanation_method
    assert nd.verify().ok


def test_feedback_ids_are_parsed_strictly_over_http(answered):
    import httpx

    answers, _ = answered
    dep = nd.deployments().iloc[0]
    record = answers["prediction_id"][0].rpartition("-")[0]
    for bad in ("-²", "-00"):
        reply = httpx.post(
            dep["url"] + "/feedback",
            json={"prediction_ids": [record + bad], "labels": [1]},
            timeout=30,
        )
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["code"] == "bad_request"
    with pytest.raises(nd.AuditLogError, match="looks like"):
        nd.feedback("churn", [record + "-²"], [1])


def test_a_server_applies_the_retention_setting(champion, churn_data, monkeypatch):
    import time

    import numpy as np

    from nbdeploy import config
    from nbdeploy.auditlog import Record, chain, encode_inputs, encode_payload, shared
    from tests.conftest import eventually

    _, _, X_test, _ = churn_data
    names = list(X_test.columns)
    columns = {c: X_test[c].head(2).to_numpy() for c in names}
    old = Record("old", "churn", "churn", 1, "champion", "served", 2, 1.0,
                 encode_payload({"columns": names, "predictions": np.array([0, 1])}),
                 encode_inputs(names, columns), ts=time.time() - 40 * 86400)  # fmt: skip
    shared().append([old])
    monkeypatch.setenv("NBDEPLOY_RETENTION_DAYS", "30")
    config.reset()
    served = nd.serve("churn@champion")
    fresh = served.predict(X_test.head(2))["prediction_id"][0]
    eventually(lambda: chain.erasures(shared().record(old.record_id)[-1]), what="retention")
    assert "retention: older than 30 days" in nd.audit(old.prediction_ids()[1]).erasure
    assert nd.audit(fresh).erased is False
    assert nd.verify().ok
