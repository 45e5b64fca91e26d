"""The model server under hostile conditions (issue 9): tokens from the environment,
media types, Host headers, a locked log, slow bodies, floods, limits counted while
parsing, alias swaps mid-request, and the catalogue of hostile requests.

Servers (real, on 127.0.0.1) share one home per module: ``hard`` (token and audit key
read from files, small limits, short waits), ``rated`` (a rate limit) and a foreground
``nbdeploy serve`` started with a token file.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

import nbdeploy as nd
from nbdeploy import config
from nbdeploy.exceptions import ConfigError
from tests import hostile_requests
from tests.conftest import environ

TOKEN = "tok-9a1b2c3d4e"
AUDIT_KEY = "key-5f6e7d8c9b"
RATED_TOKEN = "tok-rated-77"
ROW = {"tenure_months": 12, "monthly_charges": 70.5, "support_calls": 1, "contract": "monthly"}


@pytest.fixture(scope="module")
def servers(module_home, module_champion, tmp_path_factory):
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "token").write_text(f"  {TOKEN}\n")  # as a mounted secret: stripped
    (secrets / "key").write_text(AUDIT_KEY + "\n")
    hard_env = {
        "NBDEPLOY_TOKEN_FILE": str(secrets / "token"),
        "NBDEPLOY_AUDIT_KEY_FILE": str(secrets / "key"),
        "NBDEPLOY_MAX_ROWS": str(hostile_requests.MAX_ROWS),
        "NBDEPLOY_MAX_BODY_BYTES": str(hostile_requests.MAX_BODY),
        "NBDEPLOY_AUDIT_WAIT_S": "2",
        "NBDEPLOY_BODY_TIMEOUT_S": "3",
        "NBDEPLOY_MAX_CONCURRENT": "3",
    }
    with environ(**hard_env):
        config.reset()  # nd.serve reads the token in this process
        hard = nd.serve("churn/1", name="hard")
    with environ(NBDEPLOY_TOKEN=RATED_TOKEN, NBDEPLOY_RATE_LIMIT="3"):
        config.reset()
        rated = nd.serve("churn/1", name="rated")
    config.reset()
    return SimpleNamespace(home=module_home, hard=hard, rated=rated, secrets=secrets)


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


def predict(dep, token: str = TOKEN, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        dep.url + "/invocations",
        json={"dataframe_records": [ROW]},
        headers=auth(token),
        timeout=timeout,
    )


def rows_logged(home: Path) -> int:
    with sqlite3.connect(home / "audit.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0])


def wait_for(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# -- 1. a token in the environment protects the server --------------------------------


def test_token_file_in_the_environment_protects_nd_serve(servers):
    dep = servers.hard
    anonymous = httpx.post(
        dep.url + "/invocations",
        json={"dataframe_records": [ROW]},
        headers={"content-type": "application/json"},
    )
    assert anonymous.status_code == 401
    assert predict(dep).status_code == 200
    assert len(dep.predict(__import__("pandas").DataFrame([ROW]))) == 1  # sends its token


def test_token_variable_protects_nd_serve(servers):
    assert httpx.get(servers.rated.url + "/info").status_code == 401
    assert httpx.get(servers.rated.url + "/info", headers=auth(RATED_TOKEN)).status_code == 200


def test_token_file_protects_nbdeploy_serve(servers):
    env = config.child_env(NBDEPLOY_TOKEN_FILE=str(servers.secrets / "token"))
    env.pop("NBDEPLOY_TOKEN", None)
    state = servers.home / "deployments" / "cli-tok.json"
    child = subprocess.Popen(
        [sys.executable, "-m", "nbdeploy.cli", "serve", "churn/1", "--name", "cli-tok"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: state.exists() or child.poll() is not None, 60)
        url = nd.deployments().set_index("name").loc["cli-tok", "url"]
        assert httpx.get(url + "/info").status_code == 401
        assert httpx.get(url + "/info", headers=auth()).status_code == 200
    finally:
        nd.stop("cli-tok") if state.exists() else child.kill()


def test_secrets_are_read_from_files(tmp_path, monkeypatch):
    (tmp_path / "t").write_text("\n s3cret \n")
    monkeypatch.delenv("NBDEPLOY_TOKEN", raising=False)
    monkeypatch.setenv("NBDEPLOY_TOKEN_FILE", str(tmp_path / "t"))
    monkeypatch.setenv("NBDEPLOY_AUDIT_KEY_FILE", str(tmp_path / "t"))
    config.reset()
    try:
        assert config.settings().token == "s3cret"
        assert config.settings().audit_key == "s3cret"
        assert "s3cret" not in repr(config.settings())
        monkeypatch.setenv("NBDEPLOY_TOKEN_FILE", str(tmp_path / "missing"))
        config.reset()
        with pytest.raises(ConfigError, match="NBDEPLOY_TOKEN_FILE cannot be read"):
            config.settings()
        (tmp_path / "empty").write_text("\n")
        monkeypatch.setenv("NBDEPLOY_TOKEN_FILE", str(tmp_path / "empty"))
        config.reset()
        with pytest.raises(ConfigError, match="empty"):
            config.settings()
    finally:
        monkeypatch.delenv("NBDEPLOY_TOKEN_FILE")
        monkeypatch.delenv("NBDEPLOY_AUDIT_KEY_FILE")
        config.reset()


def test_what_a_server_prints_is_redacted(monkeypatch):
    import io

    from nbdeploy.serving.server import _Redacted

    monkeypatch.setenv("NBDEPLOY_AUDIT_KEY", AUDIT_KEY)
    config.reset()
    try:
        out = io.StringIO()
        stream = _Redacted(out, TOKEN)
        stream.write(f"failed: postgresql://bob:pw-123@db:5432/x {TOKEN} {AUDIT_KEY}\n")
        assert "pw-123" not in out.getvalue() and "bob" not in out.getvalue()
        assert TOKEN not in out.getvalue() and AUDIT_KEY not in out.getvalue()
        assert "db:5432/x" in out.getvalue()
    finally:
        monkeypatch.delenv("NBDEPLOY_AUDIT_KEY")
        config.reset()


# -- the catalogue of hostile requests ------------------------------------------------


@pytest.mark.parametrize("case", hostile_requests.CASES, ids=lambda c: c.name)
def test_hostile_request(servers, case):
    hostile_requests.check(servers.hard.url, case, TOKEN)


def test_no_cors_and_loopback_hosts_answer(servers):
    url = servers.hard.url
    port = url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
        answer = hostile_requests.send(url, "GET", "/info", {**auth(), "host": host}, b"")
        assert answer.status == 200, host
    preflight = httpx.options(
        url + "/invocations",
        headers={"origin": "http://attacker.example", "access-control-request-method": "POST"},
    )
    posted = httpx.post(
        url + "/invocations",
        json={"dataframe_records": [ROW]},
        headers={**auth(), "origin": "http://attacker.example"},
    )
    assert posted.status_code == 200
    for response in (preflight, posted):
        assert not [k for k in response.headers if k.lower().startswith("access-control-")]


def test_no_secret_reaches_the_log_after_hostile_requests(servers):
    for case in hostile_requests.CASES:
        hostile_requests.check(servers.hard.url, case, TOKEN)
    text = (servers.home / "deployments" / "hard.log").read_text()
    assert text.strip(), "the server wrote nothing at all"
    for secret in (TOKEN, AUDIT_KEY, hostile_requests.MARK):
        assert secret not in text


# -- a locked log does not freeze the server ------------------------------------------


def test_a_locked_log_gives_503_and_health_keeps_answering(servers):
    dep = servers.hard
    before = rows_logged(servers.home)
    holder = sqlite3.connect(servers.home / "audit.db", isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with ThreadPoolExecutor(4) as pool:
            waiting = [pool.submit(predict, dep) for _ in range(4)]
            while not all(f.done() for f in waiting):
                # the event loop stays free: health answers while the requests wait 2 s
                assert httpx.get(dep.url + "/health", timeout=1).status_code == 200
                time.sleep(0.02)
            answers = [f.result() for f in waiting]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [a.status_code for a in answers] == [503] * 4
    assert {a.json()["error"]["code"] for a in answers} == {"unavailable"}
    assert rows_logged(servers.home) == before, "a 503 left a prediction row"
    assert predict(dep).status_code == 200
    assert rows_logged(servers.home) == before + 1


# -- slow bodies, floods ---------------------------------------------------------------


def open_slow_request(url: str, declared: int = 200) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /invocations HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"authorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n"
        f"content-length: {declared}\r\n\r\n{{"
    )
    sock.sendall(head.encode())
    return sock


def test_a_body_sent_a_byte_at_a_time_times_out(servers):
    sock = open_slow_request(servers.hard.url, declared=200)
    sent = 1
    with sock:
        while not select.select([sock], [], [], 0.5)[0]:  # one byte each half second
            assert sent < 199, "the server waited for the whole slow body"
            sock.sendall(b" ")
            sent += 1
        # the answer may arrive in several segments (headers, then the chunked body):
        # read until the server closes the connection, as it says it will
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    answer = raw.decode()
    assert answer.startswith("HTTP/1.1 408"), answer[:80]
    assert "request_timeout" in answer
    assert predict(servers.hard).status_code == 200  # and nothing else was held up


def test_requests_beyond_the_concurrency_bound_get_503_at_once(servers):
    url = servers.hard.url
    slow = [open_slow_request(url) for _ in range(3)]  # the bound is 3
    try:
        wait_for(lambda: httpx.get(url + "/info", headers=auth()).status_code == 503, 10)
        busy = predict(servers.hard)
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "unavailable"
        assert busy.headers["retry-after"] == "1"
        assert httpx.get(url + "/health").status_code == 200  # health is never turned away
    finally:
        for sock in slow:
            sock.close()
    wait_for(lambda: httpx.get(url + "/info", headers=auth()).status_code == 200)


def test_rate_limit_per_token_answers_429(servers):
    url = servers.rated.url
    statuses = [httpx.get(url + "/info", headers=auth(RATED_TOKEN)).status_code for _ in range(30)]
    assert 200 in statuses and 429 in statuses
    limited = httpx.get(url + "/info", headers=auth(RATED_TOKEN))
    while limited.status_code != 429:
        limited = httpx.get(url + "/info", headers=auth(RATED_TOKEN))
    assert limited.json()["error"]["code"] == "too_many_requests"
    assert limited.headers["retry-after"] == "1"
    assert httpx.get(url + "/health").status_code == 200
    wait_for(lambda: httpx.get(url + "/info", headers=auth(RATED_TOKEN)).status_code == 200)


# -- limits are counted while parsing ---------------------------------------------------


def test_csv_rows_are_counted_while_reading():
    from nbdeploy.schema import Schema
    from nbdeploy.serving import wire

    schema = Schema.infer(__import__("pandas").DataFrame([ROW]))
    head = ",".join(ROW).encode() + b"\n"
    good = b"12,70.5,1,monthly\n"
    assert wire.from_csv(schema, head + good * 5, max_rows=5)["contract"].shape == (5,)
    # the limit stops reading long before the malformed tail is even decoded
    with pytest.raises(wire.TooManyRows):
        wire.from_csv(schema, head + good * 2000 + b"\xff\xfe broken", max_rows=5)
    # chunks of rows become arrays: a body of several chunks reads back whole
    many = wire.from_csv(schema, head + good * 40_000 + b"3,99.5,2,yearly\n", max_rows=None)
    assert many["monthly_charges"].shape == (40_001,)
    assert many["monthly_charges"].dtype == np.float64


def test_json_rows_are_counted_before_the_body_is_built():
    import orjson

    from nbdeploy.serving import wire

    rows = [[1, 2.5, 3, "a,b],[c"]] * 6  # commas and brackets inside strings do not count
    for body in (
        {"dataframe_split": {"columns": list(ROW), "data": rows}},
        {"dataframe_records": [ROW] * 6},
        {"instances": rows},
        {"inputs": {k: [v] * 6 for k, v in ROW.items()}},
    ):
        for raw in (orjson.dumps(body), json.dumps(body, indent=1).encode()):
            wire.check_json_rows(raw, 6)
            with pytest.raises(wire.TooManyRows):
                wire.check_json_rows(raw, 5)
            with pytest.raises(wire.TooManyRows):  # stops before the broken tail
                wire.check_json_rows(raw.rstrip(b"}\n ")[:-1] + b",[}}", 5)


# -- alias swaps and shadows ------------------------------------------------------------


def test_a_request_is_answered_by_the_version_that_parsed_it(home, churn_data):
    from sklearn.linear_model import LogisticRegression

    from nbdeploy.auditlog import AuditLog
    from nbdeploy.serving.adapter import load
    from nbdeploy.serving.batching import Predictor

    X, y, _, _ = churn_data
    numeric = X[["tenure_months", "monthly_charges", "support_calls"]]
    nd.register(LogisticRegression(max_iter=500).fit(numeric, y), "swap", numeric, y)
    nd.register(LogisticRegression(max_iter=500).fit(numeric[["tenure_months"]], y), "swap",
                numeric[["tenure_months"]], y)  # fmt: skip
    v1, v2 = load("swap/1"), load("swap/2")
    predictor = Predictor("swap", v1, AuditLog())

    async def scenario() -> list:
        parsed = v1.schema.from_records([{"tenure_months": 3, "monthly_charges": 50.0,
                                          "support_calls": 2}])  # fmt: skip
        answer = asyncio.ensure_future(predictor.submit(parsed, 1, time.perf_counter(), model=v1))
        await asyncio.sleep(0)  # the request is queued for the batch...
        predictor.current = v2  # ...when the alias moves to a version with other columns
        return [await answer]

    (answer,) = asyncio.run(scenario())
    assert answer.version == 1
    logged = nd.logs("swap")
    assert list(logged["model_version"]) == [1]


def test_the_event_loop_commits_a_batch_itself_only_when_nothing_can_make_it_wait(
    home, churn_data, monkeypatch
):
    """At concurrency 1 the loop commits its own batch (no handoff to the writer thread
    and back); it never waits on the log: not behind a busy writer thread, whose
    transaction may hold the shared connection, nor for another process's lock."""
    from sklearn.linear_model import LogisticRegression

    from nbdeploy.auditlog import AuditLog, Record
    from nbdeploy.serving.adapter import load
    from nbdeploy.serving.batching import LogWriter, Predictor

    X, y, _, _ = churn_data
    numeric = X[["tenure_months", "monthly_charges", "support_calls"]]
    nd.register(LogisticRegression(max_iter=500).fit(numeric, y), "now", numeric, y)
    model = load("now/1")
    log = AuditLog(background_checkpoints=True, busy_timeout_s=5.0)  # as a server opens it
    writer = LogWriter()
    predictor = Predictor("now", model, log, writer=writer, wait_s=5.0)
    path = home / "audit.db"

    def rows() -> int:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM records").fetchone()[0])

    async def request(i: int) -> Any:
        parsed = model.schema.from_records(
            [{"tenure_months": i, "monthly_charges": 50.0, "support_calls": 1}]
        )
        return await predictor.submit(parsed, 1, time.perf_counter(), f"req-{i}")

    async def still_waits(answer: asyncio.Future, logged: int) -> None:
        await asyncio.sleep(0.3)
        assert not answer.done(), "answered before its row was committed"
        assert rows() == logged, "committed past the writer thread or another's lock"

    async def scenario() -> None:
        await request(1)  # the writer is idle and the lock free: committed right here
        assert (writer.submitted, rows()) == (0, 1)

        released = threading.Event()
        writer.submit(released.wait)  # the writer thread is busy (as if mid-transaction)
        answer = asyncio.ensure_future(request(2))
        await still_waits(answer, 1)
        released.set()
        await answer  # queued behind the writer's work, committed by it
        assert (writer.submitted, rows()) == (2, 2)

        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        answer = asyncio.ensure_future(request(3))
        await still_waits(answer, 2)  # the loop did not wait: the writer thread does
        holder.execute("ROLLBACK")
        holder.close()
        await answer
        assert (writer.submitted, rows()) == (3, 3)

    asyncio.run(scenario())
    writer.shutdown()
    assert log.db.execute("PRAGMA busy_timeout").fetchone()[0] == 5000  # restored
    assert list(nd.logs("now")["request_id"]) == ["req-1", "req-2", "req-3"]
    assert nd.verify().ok

    # a commit that may fsync could stall the loop: one that checkpoints (a log opened
    # without the maintenance thread's checkpoints), or any with NBDEPLOY_AUDIT_SYNC=full.
    # Nothing is written then: the writer thread will.
    record = Record("r", "now", "now", 1, None, "served", 1, 1.0, b"{}", b"{}")
    assert AuditLog().append_now([record]) is False
    monkeypatch.setenv("NBDEPLOY_AUDIT_SYNC", "full")
    config.reset()
    assert AuditLog(background_checkpoints=True).append_now([record]) is False
    assert rows() == 3


def test_the_shadow_queue_is_bounded_in_bytes():
    from nbdeploy.serving.routing import Shadow, ShadowRunner

    runner = ShadowRunner("d", [Shadow("m/1", None)], ["a"], max_bytes=1_000_000)  # type: ignore[arg-type]
    small = np.zeros((10, 1))
    big = np.zeros((200_000, 1))  # 1.6 MB in one batch
    runner.offer([(small, "r1", 10)])
    runner.offer([(big, "r2", 200_000)])
    runner.offer([(small, "r3", 10)])
    assert runner.stats["dropped_rows"] == 200_000
    assert runner.queue.qsize() == 2
    assert runner.queued_bytes == 2 * small.nbytes


def test_allowed_hosts_follow_the_bind_address():
    from nbdeploy.serving.server import allowed_hosts

    loopback = {"localhost", "127.0.0.1", "[::1]"}
    assert allowed_hosts("127.0.0.1", ("svc",)) == frozenset(loopback)  # loopback only
    assert allowed_hosts("::1", ()) == frozenset(loopback)
    assert allowed_hosts("0.0.0.0", ("svc", "svc.ns")) == frozenset(
        loopback | {"0.0.0.0", "svc", "svc.ns"}
    )
    assert allowed_hosts("10.1.2.3", ()) == frozenset(loopback | {"10.1.2.3"})
    assert allowed_hosts("0.0.0.0", ("*",)) is None
