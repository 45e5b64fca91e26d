"""Generated requests from the server's own ``/openapi.json`` (a short run of
``benchmarks/bench_fuzz.py``): no 5xx, the server stays up, the chain verifies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest

from tests import hostile_requests
from tests.conftest import environ

TOKEN = "fuzz-test-token"


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fuzz.py"
    spec = importlib.util.spec_from_file_location("bench_fuzz", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fuzzed(module_home, module_champion):
    import nbdeploy as nd
    from nbdeploy import config

    limits = {
        "NBDEPLOY_TOKEN": TOKEN,
        "NBDEPLOY_MAX_ROWS": str(hostile_requests.MAX_ROWS),
        "NBDEPLOY_MAX_BODY_BYTES": str(hostile_requests.MAX_BODY),
    }
    with environ(**limits):
        config.reset()
        dep = nd.serve("churn/1", name="fuzzed")
    config.reset()
    return dep


def test_openapi_describes_every_route(fuzzed):
    assert httpx.get(fuzzed.url + "/openapi.json").status_code == 401  # behind the token
    doc = httpx.get(fuzzed.url + "/openapi.json", headers={"authorization": f"Bearer {TOKEN}"})
    spec = doc.json()
    assert spec["openapi"].startswith("3.")
    routes = {(path, method) for path, item in spec["paths"].items() for method in item}
    for route in [
        ("/invocations", "post"),
        ("/v2/models/{name}/infer", "post"),
        ("/v2/health/live", "get"),
        ("/v2/health/ready", "get"),
        ("/v2/models/{name}", "get"),
        ("/health", "get"),
        ("/ping", "get"),
        ("/metrics", "get"),
        ("/feedback", "post"),
    ]:
        assert route in routes
    invocations = spec["paths"]["/invocations"]["post"]
    assert set(invocations["requestBody"]["content"]) == {"application/json", "text/csv"}
    assert {"400", "401", "413", "415", "422", "503"} <= set(invocations["responses"])
    record = invocations["requestBody"]["content"]["application/json"]["schema"]["oneOf"][1]
    columns = record["properties"]["dataframe_records"]["items"]["properties"]
    assert set(columns) == set(hostile_requests.COLUMNS)  # the real columns of the model


def test_generated_requests_never_get_a_5xx(fuzzed, module_home):
    bench = _bench()
    result = bench.fuzz(fuzzed.url, TOKEN, requests=300, seed=1)
    assert result["sent"] >= 300
    assert result["failures"] == []
    assert sum(n for status, n in result["statuses"].items() if status >= 500) == 0
    assert result["statuses"][200] > 0  # valid requests were generated and answered
    assert httpx.get(fuzzed.url + "/health").status_code == 200
    assert bench.verify_chain(module_home) == []
