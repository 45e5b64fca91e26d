"""nd.export(ref, "kserve"): a valid InferenceService (checked against the schema the
kserve package models, in its own virtual environment: ``make kserve-venv``) whose
container answers the V2 routes KServe uses, under the name the InferenceService gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

import nbdeploy as nd
from tests.test_exports_docker import TOKEN, _free_port, wait_ready

pytestmark = pytest.mark.slow

VENV = Path(os.environ.get("NBDEPLOY_KSERVE_VENV", "/root/.cache/nbdeploy/kserve-venv"))
CHECKER = Path(__file__).parent / "support" / "kserve_validate.py"


def _validate(path: Path) -> subprocess.CompletedProcess:
    if not (VENV / "bin" / "python").exists():
        pytest.fail(f"no KServe environment at {VENV}: run `make kserve-venv` (make test does)")
    return subprocess.run(
        [str(VENV / "bin" / "python"), str(CHECKER), str(path)], capture_output=True, text=True
    )


@pytest.fixture
def exported(champion, tmp_path):
    folder = nd.export("churn@champion", "kserve", tmp_path / "isvc")
    return folder, yaml.safe_load((folder / "inferenceservice.yaml").read_text())


def test_the_inference_service_is_valid_for_kserve(exported, tmp_path):
    folder, isvc = exported
    assert (folder / "Dockerfile").is_file()  # the image it runs is built from here
    checked = _validate(folder / "inferenceservice.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().endswith("valid")
    assert isvc["metadata"]["annotations"]["nbdeploy.io/version"] == "1"
    # and the checker does catch a broken one
    broken = json.loads(json.dumps(isvc))
    broken["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8080]
    broken["spec"]["predictor"]["containerz"] = []
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    refused = _validate(tmp_path / "broken.yaml")
    assert refused.returncode == 1 and "containerz" in refused.stdout


def test_the_container_answers_kserve_v2_routes_under_the_service_name(exported, tmp_path):
    folder, isvc = exported
    name = isvc["metadata"]["name"]
    (container,) = isvc["spec"]["predictor"]["containers"]
    port = _free_port()
    swap = {"/app/model": str(folder / "model"), "0.0.0.0": "127.0.0.1", "8080": str(port)}
    argv = [swap.get(a, a) for a in container["command"]]
    argv[0] = str(Path(sys.executable).with_name("nbdeploy"))
    (tmp_path / "token").write_text(TOKEN)
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}}
    env.update(NBDEPLOY_HOME=str(tmp_path / "data"), NBDEPLOY_TOKEN_FILE=str(tmp_path / "token"))
    env.pop("NBDEPLOY_TOKEN", None)
    log = tmp_path / "server.log"
    child = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(child, url, log)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        probe = container["readinessProbe"]["httpGet"]["path"]
        assert httpx.get(url + probe).status_code == 200
        assert httpx.get(url + "/v2/health/live").status_code == 200
        meta = httpx.get(f"{url}/v2/models/{name}", headers=auth)
        assert meta.status_code == 200 and meta.json()["name"] == name
        assert httpx.get(f"{url}/v2/models/{name}/ready", headers=auth).status_code == 200
        inputs = [
            {"name": "tenure_months", "datatype": "INT64", "shape": [2], "data": [3, 60]},
            {"name": "monthly_charges", "datatype": "FP64", "shape": [2], "data": [99.0, 20.0]},
            {"name": "support_calls", "datatype": "INT64", "shape": [2], "data": [4, 0]},
            {
                "name": "contract",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["monthly", "two-year"],
            },
        ]
        answer = httpx.post(f"{url}/v2/models/{name}/infer", json={"inputs": inputs}, headers=auth)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert outputs["predict"]["data"] == ["yes", "no"]
        assert (
            httpx.post(
                f"{url}/v2/models/other/infer", json={"inputs": inputs}, headers=auth
            ).status_code
            == 404
        )
    finally:
        child.terminate()
        child.wait(timeout=30)
