"""``nd.serve(..., workers=N)``: N serving processes behind one port, one deployment.

Real servers on 127.0.0.1 writing the embedded (SQLite) audit log; the supervisor's
pid is the deployment's, its workers are its children.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import nbdeploy as nd
from nbdeploy.exceptions import DeploymentError
from tests.test_serving import JSON, body, metric

pytestmark = pytest.mark.slow


def state(home: Path, name: str) -> dict:
    return json.loads((home / "deployments" / f"{name}.json").read_text())


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def wait(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def versions_by_pid(url: str, tries: int = 60) -> dict[int, int]:
    """Ask /info on fresh connections: which worker answered, serving which version."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        info = httpx.get(url + "/info", headers={"connection": "close"}).json()
        seen[info["pid"]] = info["model_version"]
    return seen


@pytest.fixture(scope="module")
def pool(module_home, module_champion):
    dep = nd.serve("churn@champion", name="pool", workers=2)
    yield dep
    if (module_home / "deployments" / "pool.json").exists():
        nd.stop("pool")


def test_workers_is_checked_where_it_enters(module_champion):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(DeploymentError, match="workers"):
            nd.serve("churn@champion", name="bad", workers=bad)


def test_two_workers_share_one_port_one_deployment_and_one_chain(pool, module_home):
    info = state(module_home, "pool")
    assert info["pid"] == pool.pid and info["workers"] == 2
    workers = info["worker_pids"]
    assert len(set(workers)) == 2 and pool.pid not in workers
    listed = nd.deployments().set_index("name")
    assert listed.at["pool", "pid"] == pool.pid and listed.at["pool", "status"] == "running"
    assert set(versions_by_pid(pool.url)) == set(workers), "one worker never answered"

    before = metric(pool.url, "nbdeploy_predictions_total")
    barrier = threading.Barrier(8)

    def client(n: int) -> list[str]:
        ids = []
        barrier.wait()
        for j in range(25):  # a fresh connection each time, so both workers take some
            response = httpx.post(pool.url + "/invocations", content=body(n * 25 + j),
                                  headers={**JSON, "connection": "close"})  # fmt: skip
            assert response.status_code == 200
            ids += response.json()["prediction_ids"]
        return ids

    with ThreadPoolExecutor(8) as threads:
        ids = [i for chunk in threads.map(client, range(8)) for i in chunk]
    assert len(set(ids)) == 200
    # any worker's /metrics adds up every worker's counters (snapshots lag a moment)
    assert wait(lambda: metric(pool.url, "nbdeploy_predictions_total") - before == 200, 10)

    def info_adds_up() -> bool:  # whichever worker answers, once the snapshots caught up
        info = httpx.get(pool.url + "/info").json()
        return info["predictions"] >= 200 and info["requests"] >= 200

    assert wait(info_adds_up, 10)
    assert set(ids) <= set(nd.logs("pool")["prediction_id"])
    # the newest records are vouched for once a worker has anchored them (every 2 s)
    assert wait(lambda: nd.audit(ids[-1]).verified, 15), nd.verify()
    assert nd.audit(ids[-1]).model_version == 1


def test_every_worker_follows_the_alias(pool, module_home, churn_data):
    from nbdeploy.datasets import churn_pipeline

    X, y, _, _ = churn_data
    v2 = nd.register(churn_pipeline(C=0.01).fit(X, y), "churn", X, y)
    nd.promote(v2, to="champion", force=True)
    try:
        assert wait(lambda: set(versions_by_pid(pool.url, 20).values()) == {2}, 60)
        assert wait(lambda: state(module_home, "pool")["version"] == v2.version, 10)
    finally:
        nd.rollback("churn")
    assert wait(lambda: set(versions_by_pid(pool.url, 20).values()) == {1}, 60)


def test_a_dead_worker_is_started_again(pool, module_home):
    workers = state(module_home, "pool")["worker_pids"]
    before = metric(pool.url, 'nbdeploy_requests_total{route="/invocations",status="200"}')
    os.kill(workers[0], signal.SIGKILL)
    assert wait(lambda: workers[0] not in state(module_home, "pool")["worker_pids"], 60)
    fresh = state(module_home, "pool")["worker_pids"]
    assert fresh[1] == workers[1] and alive(fresh[0])
    assert wait(lambda: set(versions_by_pid(pool.url, 20)) == set(fresh), 30)
    # totals do not go backwards when a worker is replaced
    after = metric(pool.url, 'nbdeploy_requests_total{route="/invocations",status="200"}')
    assert after >= before


def test_kill_9_of_the_supervisor_ends_its_workers(module_champion, module_home):
    dep = nd.serve("churn/1", name="orphans", workers=2)
    workers = state(module_home, "orphans")["worker_pids"]
    assert httpx.post(dep.url + "/invocations", content=body(1), headers=JSON).status_code == 200
    os.kill(dep.pid, signal.SIGKILL)
    assert wait(lambda: not any(alive(p) for p in workers), 30), "workers outlived the supervisor"
    assert nd.deployments().set_index("name").at["orphans", "status"] == "dead"
    nd.serve("churn/1", name="orphans", workers=2).stop()  # the name is free again


def test_stop_ends_every_worker(pool, module_home):
    workers = state(module_home, "pool")["worker_pids"]
    assert nd.stop("pool") == ["pool"]
    assert not alive(pool.pid)
    assert wait(lambda: not any(alive(p) for p in workers), 20), "a worker outlived nd.stop"
    assert "pool" not in set(nd.deployments()["name"])
