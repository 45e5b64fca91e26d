"""The prediction log behaves the same on SQLite and on PostgreSQL.

Every test here runs once per backend (``backend`` is a SQLite path or a fresh database
on the session's throwaway PostgreSQL), through the public API and real servers on
127.0.0.1: group commit, one chain that several processes append to, feedback,
rejections, alerts, the queries behind ``nd.logs``/monitoring/compare/audit, and kill -9
with nothing acknowledged lost. PostgreSQL-only: a database that goes away (503, then
resumed), an unreachable one (one clear line), and ``nbdeploy audit migrate``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import nbdeploy as nd
from nbdeploy import config
from nbdeploy.auditlog import (
    AuditLog,
    Record,
    encode_inputs,
    encode_payload,
    labels,
    shared,
    verify,
)
from nbdeploy.exceptions import AuditLogError
from tests.test_serving import JSON, Load, body

pytestmark = pytest.mark.slow
_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "audit.db")
    postgres = request.getfixturevalue("postgres")
    return str(postgres.create_database(f"audit{next(_databases)}"))


@pytest.fixture
def log_home(home, backend, monkeypatch) -> str:
    """``home`` with its audit log on ``backend``."""
    monkeypatch.setenv("NBDEPLOY_AUDIT_DB", backend)
    config.reset()
    return backend


def record(i: int, deployment: str = "dep") -> Record:
    payload = encode_payload({"columns": ["x"], "predictions": [i % 2]})
    inputs = encode_inputs(["x"], {"x": [float(i)]})
    return Record(f"req{i}", deployment, "m", 1, None, "served", 1, 0.5, payload, inputs)


def test_group_commit_chain_and_tamper_detection(log_home):
    log = AuditLog()
    try:
        log.append([record(i) for i in range(5)])
        log.append([record(i) for i in range(5, 8)])
        assert log.counts("dep")["predictions"] == 8
        assert len(log.records("dep")) == 8 and len(log.window("dep")) == 8
        assert verify(log=log).ok and verify(log=log).records == 8
        first = log.records("dep")[0][0]
        assert log.verify(first)
        log.db.execute("UPDATE records SET latency_ms = 99 WHERE record_id = ?", (first,))
        report = verify(log=log)
        assert not report.ok and report.breaks[0].entry == first and not log.verify(first)
    finally:
        log.close()


def test_deletions_and_a_cut_tail_are_reported_when_keyed(log_home, monkeypatch):
    monkeypatch.setenv("NBDEPLOY_AUDIT_KEY", "correct horse battery staple")
    config.reset()
    log = shared()
    written = [record(i) for i in range(6)]
    log.append(written)
    log.add_feedback("m", [written[0].prediction_ids()[0]], [1], "tester")
    log.anchor()
    assert verify(log=log).ok and verify(log=log).keyed
    log.db.execute("DELETE FROM records WHERE record_id = ?", (written[2].record_id,))
    report = verify(log=log)
    assert not report.ok and report.records == 5
    log.db.execute("DELETE FROM records WHERE record_id = ?", (written[5].record_id,))
    assert any("anchor vouches" in str(b) for b in verify(log=log).breaks)


_WRITER = """
import sys
from tests.test_auditlog_backends import record
from nbdeploy.auditlog import AuditLog
log = AuditLog(sys.argv[1])
for i in range(40):
    log.append([record(i, "many") for _ in range(3)])
"""


def test_several_processes_append_to_one_unbroken_chain(log_home):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, log_home, str(n)], env=env)
        for n in range(3)
    ]
    assert [w.wait(timeout=300) for w in writers] == [0, 0, 0]
    log = AuditLog()
    try:
        assert log.counts("many")["predictions"] == 3 * 40 * 3
        assert verify(log=log).ok
    finally:
        log.close()


def test_served_predictions_feedback_rejections_alerts_and_queries(log_home, champion, churn_data):
    from nbdeploy.monitoring import check_alerts
    from nbdeploy.monitoring.rules import alerts

    _, _, X_test, y_test = churn_data
    dep = nd.serve("churn@champion", workers=2)
    answers = dep.predict(X_test.head(60))
    bad = httpx.post(dep.url + "/invocations", content=b'{"dataframe_records": [{"x": 1}]}',
                     headers=JSON)  # fmt: skip
    assert 400 <= bad.status_code < 500  # rejected, and counted in the log
    assert nd.feedback("churn", answers["prediction_id"].tolist(), y_test.head(60).tolist()) == 60
    logged = nd.logs("churn")
    assert set(answers["prediction_id"]) <= set(logged["prediction_id"])
    assert len(labels("churn")) == 60
    record = nd.audit(answers["prediction_id"].iloc[3])
    assert record.verified and record.inputs["contract"] == X_test.iloc[3]["contract"]
    check_alerts("churn", rules=["error_rate >= 0"], webhook=None)
    fired = alerts("churn")
    assert set(fired["rule"]) == {"error_rate >= 0"}  # fired, stored, read back
    assert wait(lambda: shared().counts("churn")["rejected"] >= 1)
    comparison = nd.compare("churn")
    assert comparison.champion_version == 1
    nd.stop("churn")


def wait(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_kill_9_loses_no_acknowledged_prediction(log_home, champion):
    dep = nd.serve("churn@champion", name="crash")
    with Load(dep.url, threads=6, rows=2) as load:
        load.wait_for(lambda: len(load.answers) >= 100, timeout=120)
        os.kill(dep.pid, signal.SIGKILL)
        wait(lambda: not any(t.is_alive() for t in load.threads), 10)
    acknowledged = load.acknowledged()
    assert len(acknowledged) >= 200
    assert set(acknowledged) <= set(nd.logs("crash")["prediction_id"])
    log = AuditLog()
    try:
        assert verify(log=log).ok
    finally:
        log.close()


# -- PostgreSQL only -----------------------------------------------------------------------


def test_a_database_that_goes_away_gives_503_then_serving_resumes(home, champion, monkeypatch):
    from tests.engines import Postgres

    pg = Postgres.start()
    try:
        monkeypatch.setenv("NBDEPLOY_AUDIT_DB", pg.create_database("flaky"))
        config.reset()
        dep = nd.serve("churn@champion", name="flaky")
        ok = httpx.post(dep.url + "/invocations", content=body(1), headers=JSON)
        assert ok.status_code == 200
        pg.halt()
        down = httpx.post(dep.url + "/invocations", content=body(2), headers=JSON, timeout=60)
        assert down.status_code == 503
        assert "audit log" in down.json()["error"]["message"]
        pg.resume()
        assert wait(lambda: httpx.post(dep.url + "/invocations", content=body(3),
                                       headers=JSON).status_code == 200, 60)  # fmt: skip
        ids = set(nd.logs("flaky")["prediction_id"])
        assert ok.json()["prediction_ids"][0] in ids
        assert down.json().get("prediction_ids") is None
        nd.stop("flaky")
    finally:
        pg.stop()


def test_an_unreachable_database_is_one_clear_line(home, monkeypatch):
    from tests.engines import free_port

    url = f"postgresql://nb:sekret-pw@127.0.0.1:{free_port()}/audit"
    monkeypatch.setenv("NBDEPLOY_AUDIT_DB", url)
    config.reset()
    with pytest.raises(AuditLogError) as caught:
        nd.logs("churn")
    message = str(caught.value)
    assert "cannot reach the audit log database at postgresql://nb:***@127.0.0.1" in message
    assert "sekret" not in message and "\n" not in message


def test_migrate_copies_a_sqlite_log_with_the_chain_verified(home, postgres, champion, churn_data):
    from nbdeploy import cli
    from nbdeploy.auditlog.migrate import migrate
    from nbdeploy.monitoring.rules import record as record_alert

    _, _, X_test, y_test = churn_data
    dep = nd.serve("churn@champion")
    answers = dep.predict(X_test.head(30))
    nd.feedback("churn", answers["prediction_id"].tolist()[:10], y_test.head(10).tolist())
    httpx.post(dep.url + "/invocations", content=b"{}", headers=JSON)
    nd.stop("churn")
    record_alert({"ts": time.time(), "deployment": "churn", "rule": "r", "metric": "m",
                  "op": ">", "threshold": 1.0, "value": 2.0, "window_s": 60.0,
                  "message": "fired"})  # fmt: skip
    before = nd.logs("churn")
    target = postgres.create_database("migrated")
    assert cli.main(["audit", "migrate", "--to", target]) == 0
    log = AuditLog(target)
    try:
        report = verify(log=log)
        assert report.ok and (report.records, report.feedback, report.alerts) == (1, 10, 1)
        assert log.counts("churn") == AuditLog().counts("churn")
    finally:
        log.close()
    with pytest.raises(AuditLogError, match="already holds records"):
        migrate(target)
    os.environ["NBDEPLOY_AUDIT_DB"] = target
    try:
        config.reset()
        after = nd.logs("churn")
        assert after["prediction_id"].tolist() == before["prediction_id"].tolist()
        assert len(labels("churn")) == 10
        assert nd.audit(answers["prediction_id"].iloc[0]).verified
        from nbdeploy.monitoring.rules import alerts

        assert alerts("churn")["message"].tolist() == ["fired"]
    finally:
        del os.environ["NBDEPLOY_AUDIT_DB"]
        config.reset()


def test_migrate_refuses_a_broken_source(home, postgres, champion, churn_data):
    from nbdeploy.auditlog.migrate import migrate

    _, _, X_test, _ = churn_data
    dep = nd.serve("churn@champion")
    dep.predict(X_test.head(5))
    nd.stop("churn")
    log = AuditLog()
    log.db.execute("UPDATE records SET latency_ms = 1234")
    log.close()
    target = postgres.create_database("refused")
    with pytest.raises(AuditLogError, match="does not verify"):
        migrate(target)
    empty = AuditLog(target)
    try:
        assert empty.counts("churn")["predictions"] == 0
    finally:
        empty.close()
