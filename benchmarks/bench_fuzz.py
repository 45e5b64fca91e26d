"""Fuzz a live model server from its own ``/openapi.json`` (schemathesis + hypothesis).

Starts a server for a registered churn model in a temporary home, with a token, an
audit key and the small limits of ``tests/hostile_requests.py``; loads the OpenAPI 3
document the server publishes; and sends generated requests to every operation, valid
ones (positive) and schema-violating ones (negative), until ``--requests`` were sent.
Then it checks what must hold whatever was sent:

- no answer was a 5xx (each one is printed with the operation and a curl command),
- the server is still up (``/health`` every 500 requests and at the end),
- ``nd.verify()`` holds: the audit log's chain verifies, records, feedback and alerts,
- every hand-written hostile request of the catalogue still gets its 4xx.

Run from the repository root with the venv's python::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_fuzz.py [--requests 10000] [--seed 0]

Exit status 0 only when everything held. ``tests/test_fuzz.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

TOKEN = "fuzz-token-6b1d"
#: share of the budget per operation kind: the POST routes take the bodies
_WEIGHTS = {"POST": 10, "GET": 1}


def start_server(home: Path) -> Any:
    """A registered churn model served with the limits the hostile catalogue expects."""
    from tests import hostile_requests

    os.environ.update(
        NBDEPLOY_HOME=str(home),
        NBDEPLOY_TOKEN=TOKEN,
        NBDEPLOY_AUDIT_KEY="fuzz-audit-key",
        NBDEPLOY_MAX_ROWS=str(hostile_requests.MAX_ROWS),
        NBDEPLOY_MAX_BODY_BYTES=str(hostile_requests.MAX_BODY),
        NBDEPLOY_BODY_TIMEOUT_S="5",
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import nbdeploy as nd
    from nbdeploy import config
    from nbdeploy.datasets import churn, churn_pipeline

    config.reset()
    X, y = churn(1000, seed=0)
    nd.register(churn_pipeline().fit(X, y), "churn", X, y)
    return nd.serve("churn/1", name="churn")


def fuzz(url: str, token: str, requests: int, seed: int = 0) -> dict[str, Any]:
    """Send about ``requests`` generated requests; returns counts and the 5xx seen."""
    import hypothesis
    import hypothesis.errors
    import requests as http
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    auth = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=auth)
    operations = [result.ok() for result in schema.get_all_operations()]
    weights = {op.label: _WEIGHTS.get(op.method.upper(), 1) for op in operations}
    total_weight = 2 * sum(weights.values())
    statuses: Counter[int] = Counter()
    by_route: Counter[str] = Counter()
    failures: list[str] = []
    session = http.Session()
    sent = 0

    def send(case: Any) -> None:
        nonlocal sent
        response = case.call(base_url=url, session=session, headers=auth, timeout=30)
        sent += 1
        statuses[response.status_code] += 1
        by_route[f"{case.method} {case.operation.path} {response.status_code // 100}xx"] += 1
        if response.status_code >= 500:
            failures.append(
                f"{case.operation.label}: {response.status_code}\n  {case.as_curl_command()}"
            )
        if sent % 500 == 0:
            assert session.get(url + "/health", timeout=10).status_code == 200, "server down"

    rounds = 0
    while sent < requests and rounds < 50:  # small operations run dry; repeat with new seeds
        rounds += 1
        before = sent
        for op in operations:
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):
                budget = max(1, (requests - before) * weights[op.label] // total_weight)
                strategy = op.as_strategy(generation_mode=mode)

                @settings(
                    max_examples=budget,
                    database=None,
                    deadline=None,
                    derandomize=False,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                    verbosity=hypothesis.Verbosity.quiet,
                )
                @given(case=strategy)
                @hypothesis.seed(seed * 1000 + rounds)
                def run(case: Any) -> None:
                    send(case)

                try:
                    run()
                except hypothesis.errors.Unsatisfiable:
                    pass  # e.g. no invalid request exists for a GET without parameters
        if sent == before:
            break
    return {"sent": sent, "statuses": statuses, "by_route": by_route, "failures": failures}


def verify_chain(home: Path) -> list[str]:
    """What ``nd.verify`` finds broken in the whole log (records, feedback, alerts) of
    ``home``, the home this process is using."""
    import nbdeploy as nd
    from nbdeploy import config

    assert config.settings().home == home.resolve()
    report = nd.verify()
    return [str(b) for b in report.breaks] + ([] if report.ok else ["not ok"])


def hostile(url: str) -> list[str]:
    """The hand-written catalogue: the cases that did not get their answer."""
    from tests import hostile_requests

    wrong = []
    for case in hostile_requests.CASES:
        try:
            hostile_requests.check(url, case, TOKEN)
        except AssertionError as exc:
            wrong.append(str(exc))
    return wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="nbdeploy-fuzz-") as tmp:
        home = Path(tmp) / "home"
        dep = start_server(home)
        try:
            started = time.perf_counter()
            problems = [f"hostile before: {w}" for w in hostile(dep.url)]
            result = fuzz(dep.url, TOKEN, args.requests, args.seed)
            problems += [f"5xx: {f}" for f in result["failures"]]
            problems += [f"hostile after: {w}" for w in hostile(dep.url)]
            import httpx

            alive = httpx.get(dep.url + "/health", timeout=10).status_code == 200
            breaks = verify_chain(home)
            seconds = time.perf_counter() - started
        finally:
            dep.stop()
    print(f"sent {result['sent']} generated requests in {seconds:.0f} s")
    print("statuses:", dict(sorted(result["statuses"].items())))
    for route, n in sorted(result["by_route"].items()):
        print(f"  {route}: {n}")
    print(f"server up at the end: {alive}; chain breaks: {len(breaks)}")
    for problem in problems[:20]:
        print("PROBLEM:", problem)
    ok = alive and not breaks and not problems and result["sent"] >= args.requests
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
