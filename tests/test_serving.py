"""Serving under load and failure (DESIGN §4, §5, §8): micro-batching, durability across
``kill -9``, promotion and rollback without a failed request, start failures, finding
deployments again, and the audit log's hash chain. Real servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import nbdeploy as nd
from nbdeploy.auditlog import AuditLog
from nbdeploy.exceptions import DeploymentError, IntegrityError

JSON = {"content-type": "application/json"}


def body(i: int, rows: int = 1) -> bytes:
    contracts = ("monthly", "yearly", "two-year")
    records = [
        {
            "tenure_months": 1 + (i + k) % 71,
            "monthly_charges": 20.0 + (i * 7 + k) % 100,
            "support_calls": (i + k) % 5,
            "contract": contracts[(i + k) % 3],
        }
        for k in range(rows)
    ]
    return json.dumps({"dataframe_records": records}).encode()


def metric(url: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", httpx.get(url + "/metrics").text, re.MULTILINE)
    assert found, name
    return float(found.group(1))


class Load:
    """Threads sending requests until stopped; keeps every answer (or failure)."""

    def __init__(self, url: str, threads: int, rows: int = 1) -> None:
        self.url, self.rows = url, rows
        self.answers: list[tuple[float, int, dict[str, Any]]] = []  # (sent, status, body)
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = n * 100_000
            while not self.stopped.is_set():
                i += 1
                sent = time.monotonic()
                try:
                    response = client.post("/invocations", content=body(i, self.rows), headers=JSON)
                except httpx.TransportError as exc:
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    return
                with self.lock:
                    self.answers.append((sent, response.status_code, response.json()))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(30)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting under load"
            assert not self.failures, self.failures[:3]
            time.sleep(0.02)

    def acknowledged(self) -> list[str]:
        with self.lock:
            return [
                pid
                for _, status, answer in self.answers
                if status == 200
                for pid in answer["prediction_ids"]
            ]


@pytest.fixture(scope="module")
def served(module_home, module_champion, churn_data, churn_models):
    """churn@champion running, churn/2 registered (not promoted), fragile/1 registered."""
    X, y, _, _ = churn_data
    with ThreadPoolExecutor(2) as pool:
        main = pool.submit(nd.serve, "churn@champion")
        killed = pool.submit(nd.serve, "churn/1", name="churn-kill")
        v2 = nd.register(churn_models[1], "churn", X, y)
        fragile = nd.register(churn_models[1], "fragile", X, y)
        main, killed = main.result(), killed.result()
    assert v2.version == 2
    return SimpleNamespace(home=module_home, main=main, killed=killed, fragile=fragile)


def test_concurrent_requests_are_batched_and_all_logged(served):
    url = served.main.url
    batches, predictions = (
        metric(url, "nbdeploy_batches_total"),
        metric(url, "nbdeploy_predictions_total"),
    )
    barrier = threading.Barrier(16)

    def client(n: int) -> list[tuple[int, int, dict[str, Any]]]:
        out = []
        with httpx.Client(base_url=url, timeout=30) as http:
            barrier.wait()
            for j in range(50):
                i = n * 50 + j
                response = http.post("/invocations", content=body(i), headers=JSON)
                out.append((i, response.status_code, response.json()))
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [r for rs in pool.map(client, range(16)) for r in rs]
    assert len(results) == 800
    assert {status for _, status, _ in results} == {200}
    ids = {answer["prediction_ids"][0]: i for i, _, answer in results}
    assert len(ids) == 800, "prediction ids must be unique"
    logs = nd.logs("churn").set_index("prediction_id")
    assert set(ids) <= set(logs.index)
    sent = {i: json.loads(body(i))["dataframe_records"][0] for i in range(800)}
    for pid, i in ids.items():  # every id is logged with the row it answered
        assert logs.at[pid, "tenure_months"] == sent[i]["tenure_months"]
        assert logs.at[pid, "contract"] == sent[i]["contract"]
    answered = {answer["prediction_ids"][0]: answer["predictions"][0] for _, _, answer in results}
    assert all(logs.at[pid, "prediction"] == p for pid, p in answered.items())
    assert metric(url, "nbdeploy_predictions_total") - predictions == 800
    new_batches = metric(url, "nbdeploy_batches_total") - batches
    assert 1 <= new_batches < 800, "concurrent requests were not micro-batched"


@pytest.fixture(scope="module")
def killed(served):
    """churn-kill under load, then SIGKILLed mid-load; what was acknowledged."""
    dep = served.killed
    with Load(dep.url, threads=8, rows=2) as load:
        load.wait_for(lambda: len(load.answers) >= 150)
        os.kill(dep.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(t.is_alive() for t in load.threads) and time.monotonic() < deadline:
            time.sleep(0.02)
    return SimpleNamespace(dep=dep, acknowledged=load.acknowledged(), load=load)


def test_kill_9_loses_no_acknowledged_prediction(served, killed):
    assert killed.load.failures, "the load should have seen the server die"
    acknowledged = killed.acknowledged
    assert len(acknowledged) >= 300
    log = AuditLog(served.home / "audit.db")  # a fresh reader, as after a crash
    try:
        assert log.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        logged = {
            f"{rid}-{k}"
            for rid, n in log.db.execute(
                "SELECT record_id, n_rows FROM records WHERE deployment = 'churn-kill'"
            )
            for k in range(n)
        }
    finally:
        log.close()
    assert set(acknowledged) <= logged
    assert set(acknowledged) <= set(nd.logs("churn-kill")["prediction_id"])


def test_dead_deployment_is_replaced_then_stopped(served, killed):
    listed = nd.deployments().set_index("name")
    assert listed.at["churn-kill", "status"] == "dead"
    assert listed.at["churn", "status"] == "running"
    fresh = nd.serve("churn/1", name="churn-kill")  # a dead one is replaced
    assert fresh.pid != killed.dep.pid
    assert httpx.post(fresh.url + "/invocations", content=body(1), headers=JSON).status_code == 200
    assert nd.stop("churn-kill") == ["churn-kill"]
    assert "churn-kill" not in set(nd.deployments()["name"])
    with pytest.raises(httpx.TransportError):
        httpx.get(fresh.url + "/health", timeout=2)
    with pytest.raises(DeploymentError, match="churn-kill"):
        nd.stop("churn-kill")


def test_promotion_and_rollback_under_load(served, churn_data):
    _, _, X_test, y_test = churn_data
    url = served.main.url
    with Load(url, threads=4) as load:
        load.wait_for(lambda: len(load.answers) >= 50)
        assert nd.test("churn/2", X_test, y_test, min_score=0.7).passed
        nd.promote("churn/2", to="champion")
        load.wait_for(lambda: any(a["model_version"] == "2" for _, _, a in load.answers))
        rolled_back = time.monotonic()
        nd.rollback("churn")
        load.wait_for(
            lambda: (
                sum(
                    1
                    for sent, _, a in load.answers
                    if sent > rolled_back + 1 and a["model_version"] == "1"
                )
                >= 20
            )
        )
    assert not load.failures
    statuses = {status for _, status, _ in load.answers}
    assert statuses == {200}, "a request failed during a promotion or rollback"
    versions = {a["model_version"] for _, _, a in load.answers}
    assert versions == {"1", "2"}
    logs = nd.logs("churn").set_index("prediction_id")
    for _, _, answer in load.answers:  # answered and logged by one and the same version
        pid = answer["prediction_ids"][0]
        assert str(logs.at[pid, "model_version"]) == answer["model_version"]
        assert logs.at[pid, "alias"] == "champion"
        assert logs.at[pid, "prediction"] == answer["predictions"][0]
    assert httpx.get(url + "/info").json()["model_version"] == 1
    assert nd.history("churn")["to_version"].astype(int).tolist()[-2:] == [2, 1]
    # the state file follows the swaps too: what nd.deployments() and the lab panel show
    listed = nd.deployments().set_index("name")
    assert listed.at["churn", "version"] == 1


def test_deployments_are_found_after_a_kernel_restart(served):
    code = "import nbdeploy as nd; print(nd.deployments().to_json(orient='records'))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        cwd=served.home.parent.parent,
    )
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout.strip().splitlines()[-1])}
    main = served.main
    assert rows["churn"]["status"] == "running"
    assert rows["churn"]["url"] == main.url
    assert rows["churn"]["pid"] == main.pid
    assert rows["churn"]["ref"] == "churn@champion"


def test_a_second_live_deployment_of_a_name_is_refused(served):
    with pytest.raises(DeploymentError, match="already running"):
        nd.serve("churn/1")
    with pytest.raises(DeploymentError, match="already running"):
        nd.serve("fragile/1", name="churn")
    info = httpx.get(served.main.url + "/info").json()
    assert info["pid"] == served.main.pid


def test_nbdeploy_serve_runs_in_the_foreground(served):
    command = [
        str(Path(sys.executable).with_name("nbdeploy")),
        "serve",
        "churn/1",
        "--name",
        "fg",
        "--port",
        "0",
    ]
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
    )
    try:
        url = None
        for line in child.stdout:  # type: ignore[union-attr]
            found = re.search(r"serving churn/1 \(version 1\) at (http://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the server did not report its address"
        assert httpx.get(url + "/health").status_code == 200
        answer = httpx.post(url + "/invocations", content=body(3), headers=JSON)
        assert answer.status_code == 200
        listed = nd.deployments().set_index("name")
        assert listed.at["fg", "status"] == "running"
        assert listed.at["fg", "url"] == url
        second = subprocess.run(
            command, capture_output=True, text=True, env=dict(os.environ), timeout=60
        )
        assert second.returncode == 1 and "already running" in second.stderr
        child.send_signal(signal.SIGINT)  # Ctrl-C
        assert child.wait(15) in (0, 130)  # a clean exit, or the shell convention for Ctrl-C
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "fg" not in set(nd.deployments()["name"])


def test_nd_stop_stops_a_server_started_outside_nd_serve(served):
    command = [str(Path(sys.executable).with_name("nbdeploy")), "serve", "churn/1", "--name",
               "outside"]  # fmt: skip
    child = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ)
    )  # same process group as this test
    try:
        deadline = time.monotonic() + 60
        while "outside" not in set(nd.deployments()["name"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert nd.stop("outside") == ["outside"]
        assert child.wait(15) is not None
    finally:
        if child.poll() is None:
            child.kill()


def test_a_long_column_keeps_values_beyond_the_integer_range(served):
    row = {"tenure_months": 1e308, "monthly_charges": 50.0, "support_calls": 1,
           "contract": "monthly"}  # fmt: skip
    answer = httpx.post(served.main.url + "/invocations", json={"dataframe_records": [row]}).json()
    logged = nd.logs("churn").set_index("prediction_id")
    assert logged.at[answer["prediction_ids"][0], "tenure_months"] == 1e308


def test_tampered_artifacts_do_not_start(served):
    mv = served.fragile
    home = served.home
    pickles = [p for p in (home / "artifacts").rglob("model.pkl") if mv.run_id in str(p)]
    assert len(pickles) == 1
    with pickles[0].open("ab") as f:
        f.write(b"\0tampered")
    shutil.rmtree(home / "cache", ignore_errors=True)
    with pytest.raises((IntegrityError, DeploymentError)) as failed:
        nd.serve("fragile/1")
    message = str(failed.value)
    assert "sha256" in message or "registered" in message
    assert "fragile" not in set(nd.deployments().query("status == 'running'")["name"])


def test_a_port_in_use_gives_a_deployment_error(served):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DeploymentError) as failed:
            nd.serve("churn/1", name="churn-port", port=port)
    assert str(port) in str(failed.value)
    assert "in use" in str(failed.value).lower()
    assert "churn-port" not in set(nd.deployments().query("status == 'running'")["name"])


def test_the_hash_chain_detects_tampering(served):
    import hashlib

    from nbdeploy.auditlog import chain
    from nbdeploy.auditlog.verifying import record_breaks

    ids = []
    for i in range(3):
        answer = httpx.post(
            served.main.url + "/invocations", content=body(i, rows=2), headers=JSON
        ).json()
        ids.append(answer["prediction_ids"][0].rpartition("-")[0])
    first, middle, last = ids
    path = served.home / "audit.db"
    log = AuditLog(path)
    try:
        log.anchor()  # the anchor moves past these three (the server's own may lag)
        assert all(log.verify(record_id) for record_id in ids)
        with sqlite3.connect(path) as db:  # the head is the newest record's hash
            newest = db.execute("SELECT hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        assert log.head() == newest[0] and len(newest[0]) == 64
        with sqlite3.connect(path) as db:
            payload = db.execute(
                "SELECT payload FROM records WHERE record_id = ?", (last,)
            ).fetchone()[0]
            edited = (
                payload.replace(b'"no"', b'"yes"')
                if b'"no"' in payload
                else payload.replace(b'"yes"', b'"no"')
            )
            assert edited != payload
            db.execute("UPDATE records SET payload = ? WHERE record_id = ?", (edited, last))
        assert log.verify(last) is False
        assert record_breaks(log, first) == [last]
        assert log.verify(middle) is False  # unkeyed: a break after it, no longer vouched for
        with sqlite3.connect(path) as db:  # put it back: the chain holds again
            db.execute("UPDATE records SET payload = ? WHERE record_id = ?", (payload, last))
        assert all(log.verify(record_id) for record_id in ids)
        # a careful forger re-hashes the edited row and patches the next row's link:
        # the next row's own hash then no longer recomputes
        with sqlite3.connect(path) as db:
            cols = ", ".join(chain.RECORD_FIELDS)
            *fields, old, inputs, prev = db.execute(
                f"SELECT {cols}, payload, inputs, prev_hash FROM records WHERE record_id = ?",
                (middle,),
            ).fetchone()
            forged = old.replace(b'"no"', b'"yes"') if b'"no"' in old else old + b" "
            content = chain.record_content(fields, forged, inputs)
            new_hash = hashlib.sha256(prev.encode() + content).hexdigest()
            db.execute("UPDATE records SET payload = ?, hash = ? WHERE record_id = ?",
                       (forged, new_hash, middle))  # fmt: skip
            db.execute("UPDATE records SET prev_hash = ? WHERE record_id = ?", (new_hash, last))
        assert log.verify(middle) is False and record_breaks(log, first) == [last]
        with sqlite3.connect(path) as db:  # deleting a row breaks the link after it
            db.execute("DELETE FROM records WHERE record_id = ?", (first,))
        assert log.verify(middle) is False
        assert log.verify("no-such-record") is False
    finally:
        log.close()


def test_the_alias_follower_asks_an_unchanged_registry_only_to_retry(monkeypatch):
    """A SQLite registry whose files did not change is not asked (MLflow stays out of
    the server); an ask that got no answer is made again after ``retry_s``."""
    from nbdeploy import registry
    from nbdeploy.serving.batching import AliasFollower

    asked: list[float] = []
    answers = iter([None, 1])  # the store busy once, then the version already served

    def holder(name: str, alias: str) -> int | None:
        asked.append(time.monotonic())
        return next(answers, 1)

    stamps = iter([(1,), (2,)])  # the registry changes once after start, then stays
    monkeypatch.setattr(registry, "store_stamp", lambda: next(stamps, (2,)))
    monkeypatch.setattr(registry, "alias_holder", holder)
    current = SimpleNamespace(version=SimpleNamespace(version=1), runtime="native")
    follower = AliasFollower(SimpleNamespace(current=current), "m", "champion", every=0.02)
    follower.retry_s = 0.2
    follower.start()
    try:
        time.sleep(1.0)
    finally:
        follower.stopped.set()
        follower.join(2)
    # once for the change, once more after retry_s for the missed answer, then never
    assert len(asked) == 2 and asked[1] - asked[0] >= 0.2
