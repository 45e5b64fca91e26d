"""nd.export(ref, "docker"): the build context's entrypoint, run here on the context
itself, serves the verified model with its token from a file; the manifests are valid
Kubernetes objects; a tampered model is neither exported nor served."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml

import nbdeploy as nd
from nbdeploy import registry

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _instructions(dockerfile: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in dockerfile.splitlines():
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.setdefault(word, []).append(rest)
    return found


def run_entrypoint(context: Path, tmp: Path, **env_override: str) -> tuple[subprocess.Popen, str]:
    """Start the image's ENTRYPOINT on this machine: /app/model -> the context's model/,
    0.0.0.0 -> 127.0.0.1 (tests bind loopback only), port 8080 -> a free one."""
    steps = _instructions((context / "Dockerfile").read_text())
    entry = json.loads(steps["ENTRYPOINT"][0])
    port = _free_port()
    swap = {"/app/model": str(context / "model"), "0.0.0.0": "127.0.0.1", "8080": str(port)}
    argv = [swap.get(a, a) for a in entry]
    argv[0] = str(Path(sys.executable).with_name("nbdeploy"))
    env = dict(os.environ)
    for line in steps["ENV"]:
        key, _, value = line.partition("=")
        env[key] = json.loads(value)
    (tmp / "secret").mkdir(exist_ok=True)
    (tmp / "secret" / "token").write_text(TOKEN + "\n")
    env.update(NBDEPLOY_HOME=str(tmp / "data"), NBDEPLOY_TOKEN_FILE=str(tmp / "secret" / "token"))
    env.pop("NBDEPLOY_TOKEN", None)
    env.update(env_override)
    log = (tmp / "server.log").open("wb")
    child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    return child, f"http://127.0.0.1:{port}"


def wait_ready(child: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"the entrypoint exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the entrypoint did not answer")


@pytest.fixture
def context(champion, tmp_path):
    return nd.export("churn@champion", "docker", tmp_path / "ctx")


def test_the_build_context_pins_verifies_and_records_its_origin(context, champion):
    files = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    assert {"Dockerfile", "requirements.txt", "kubernetes.yaml", "nbdeploy-export.json"} <= files
    cached = registry.cache_path("churn", 1, registry.manifest_sha(champion))
    for rel in (p.relative_to(cached) for p in cached.rglob("*") if p.is_file()):
        assert (context / "model" / rel).read_bytes() == (cached / rel).read_bytes()
    origin = json.loads((context / "nbdeploy-export.json").read_text())
    assert (origin["model"], origin["version"]) == ("churn", 1)
    assert origin["manifest_sha256"] == registry.manifest_sha(champion)
    # pinned to the versions recorded at registration
    meta = registry.read_json(cached, registry.METADATA)
    packages = meta["lineage"]["packages"]
    pins = dict(line.split("==") for line in (context / "requirements.txt").read_text().split())
    for name in ("scikit-learn", "numpy", "pandas", "cloudpickle"):
        assert pins[name] == packages[name]
    steps = _instructions((context / "Dockerfile").read_text())
    assert steps["FROM"] == [f"python:{packages['python']}-slim"]
    assert steps["USER"] == ["10001"] and "HEALTHCHECK" in steps
    env = {k: json.loads(v) for k, v in (line.partition("=")[::2] for line in steps["ENV"])}
    assert env["NBDEPLOY_TOKEN_FILE"].startswith("/run/secrets/") and env["NBDEPLOY_ALLOWED_HOSTS"]
    entry = json.loads(steps["ENTRYPOINT"][0])
    assert entry[:3] == ["nbdeploy", "serve", "/app/model"] and "0.0.0.0" in entry
    assert f"1:{origin['manifest_sha256']}" in entry
    # the wheel is a wheel of this nbdeploy, with its console script
    (wheel,) = (context / "wheels").glob("nbdeploy-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        assert "nbdeploy/cli.py" in names and "nbdeploy/exports/docker.py" in names
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "nbdeploy = nbdeploy.cli:main" in whl.read(info).decode()


def test_the_wheel_installs_and_imports(context, tmp_path):
    (wheel,) = (context / "wheels").glob("*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    done = subprocess.run(
        [sys.executable, "-c", "import nbdeploy, nbdeploy.cli; print(nbdeploy.__file__)"],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == str(target / "nbdeploy" / "__init__.py")


def test_the_entrypoint_serves_the_context_with_the_token_from_a_file(
    context, tmp_path, churn_data
):
    _, _, X_test, _ = churn_data
    child, url = run_entrypoint(context, tmp_path)
    try:
        wait_ready(child, url, tmp_path / "server.log")
        rows = X_test.head(5)
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        assert httpx.post(url + "/invocations", json=body).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx.post(url + "/invocations", json=body, headers=auth)
        assert answer.status_code == 200, answer.text
        expected = nd.serve("churn@champion", name="reference").predict(rows)
        assert answer.json()["predictions"] == list(expected["prediction"])
        assert httpx.get(url + "/v2/health/live").status_code == 200
        # the image's HEALTHCHECK command, pointed at this port, passes
        steps = _instructions((context / "Dockerfile").read_text())
        check = json.loads(steps["HEALTHCHECK"][0].split(" CMD ", 1)[1])
        port = url.rsplit(":", 1)[1]
        probe = [a.replace(":8080/", f":{port}/") for a in check]
        assert subprocess.run([sys.executable, *probe[1:]], timeout=30).returncode == 0
    finally:
        child.terminate()
        child.wait(timeout=30)


def test_a_tampered_context_does_not_serve(context, tmp_path):
    pickled = next((context / "model").glob("*.pkl"))
    pickled.write_bytes(pickled.read_bytes()[:-1] + b"\1")
    child, _ = run_entrypoint(context, tmp_path)
    assert child.wait(timeout=90) != 0
    log = (tmp_path / "server.log").read_text()
    assert "does not match its registered sha256" in log and "Traceback" not in log


def test_a_tampered_registry_copy_is_not_exported(champion, tmp_path):
    pickled = next(registry.cache_path("churn", 1, registry.manifest_sha(champion)).glob("*.pkl"))
    pickled.write_bytes(pickled.read_bytes() + b"\0")
    with pytest.raises(nd.IntegrityError):
        nd.export("churn@champion", "docker", tmp_path / "ctx")
    assert not (tmp_path / "ctx").exists()


def test_the_manifests_are_valid_kubernetes_objects(context):
    docs = list(yaml.safe_load_all((context / "kubernetes.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    deployment, service = docs
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert (
        container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    )
    env = {e["name"]: e["value"] for e in container["env"]}
    hosts = env["NBDEPLOY_ALLOWED_HOSTS"].split(",")
    assert service["metadata"]["name"] in hosts and "localhost" in hosts
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert deployment["metadata"]["annotations"]["nbdeploy.io/version"] == "1"
    assert re.fullmatch(r"[a-z0-9-]+", deployment["metadata"]["name"])


def test_cli_export_docker_refuses_a_non_empty_folder(champion, tmp_path, capsys):
    from nbdeploy.cli import main

    assert main(["export", "docker", "churn@champion", "--output", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "Dockerfile").is_file()
    assert main(["export", "docker", "churn@champion", "--output", str(tmp_path / "c")]) == 1
    assert "not empty" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "c")
