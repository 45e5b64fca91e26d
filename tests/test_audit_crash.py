"""Crashes: a server killed with ``kill -9`` under concurrent load, twenty times over.

After every kill, every prediction the server acknowledged (a 200 with its ids) is in
the log, and the whole keyed chain verifies (the seconds since the last anchor count
as unanchored, not broken). A clean stop then anchors everything.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time

import pytest

import nbdeploy as nd
from nbdeploy import config
from tests.test_serving import Load

pytestmark = pytest.mark.slow

KILLS = 20


def _logged_records(home) -> set[str]:
    with sqlite3.connect(home / "audit.db") as db:
        return {r[0] for r in db.execute("SELECT record_id FROM records")}


def _wait_dead(pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # a child of this process (nd.serve started it): reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"server {pid} survived kill -9")


def test_twenty_kill_9_under_load_lose_nothing_and_keep_the_chain(champion, home, monkeypatch):
    monkeypatch.setenv("NBDEPLOY_AUDIT_KEY", "crash test key")
    monkeypatch.setenv("NBDEPLOY_AUDIT_ANCHOR_S", "0.5")
    config.reset()
    rng = random.Random(9)
    acknowledged: set[str] = set()
    unanchored_seen = 0
    for kill in range(KILLS):
        dep = nd.serve("churn@champion", name="crash")
        with Load(dep.url, threads=4, rows=rng.choice([1, 1, 7, 40])) as load:
            wanted = rng.randint(5, 60)
            load.wait_for(lambda n=wanted: len(load.answers) >= n)  # type: ignore[misc]
            os.kill(dep.pid, signal.SIGKILL)
            _wait_dead(dep.pid)
        assert load.failures, "the load should have seen the server die"
        ids = load.acknowledged()
        assert ids, f"kill {kill}: nothing was answered before the kill"
        acknowledged.update(ids)
        missing = {p.rpartition("-")[0] for p in acknowledged} - _logged_records(home)
        assert not missing, f"kill {kill}: {len(missing)} acknowledged records not in the log"
        report = nd.verify()
        assert report.ok, f"kill {kill}: {report.summary()}"
        unanchored_seen += report.unanchored
    dep = nd.serve("churn@champion", name="crash")
    dep.predict(nd.logs("crash").iloc[:3][["tenure_months", "monthly_charges", "support_calls",
                                            "contract"]])  # fmt: skip
    nd.stop("crash")  # a clean stop anchors what the server wrote
    report = nd.verify("crash")
    assert report.ok and report.unanchored == 0, report.summary()
    assert report.records >= len({p.rpartition("-")[0] for p in acknowledged})
    print(f"{KILLS} kills, {len(acknowledged)} acknowledged predictions, "
          f"{unanchored_seen} unanchored entries seen right after kills")  # fmt: skip
