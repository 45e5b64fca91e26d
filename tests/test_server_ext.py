"""The Jupyter server extension: a real ``jupyter server`` on 127.0.0.1 with a token.

The server is started as a user would start it, so these tests also check that
installing the package enables the extension (no ``--ServerApp.jpserver_extensions``
on the command line). It shares ``module_home`` with this process through
``NBDEPLOY_HOME``, so what the tests register here is what the server sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def jupyter(
    app: str, home: Path, root: Path, *extra: str, settings: dict[str, Any] | None = None
) -> Iterator[tuple[str, str]]:
    """Run ``jupyter <app>`` (``server`` or ``lab``) on 127.0.0.1; yields (url, token).

    Its Jupyter config, data, runtime and lab settings folders are temporary (the
    installed ``sys.prefix`` config still applies: that is what enables nbdeploy);
    ``settings`` maps ``plugin-package/plugin`` to lab settings written there first.
    Its output goes to ``root/<app>.log``, shown when it fails to start.
    """
    token, port = secrets.token_hex(16), free_port()
    private = root / f".jupyter-{app}"
    for plugin, values in (settings or {}).items():
        path = private / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {
        **os.environ,
        "NBDEPLOY_HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(private / "config"),
        "JUPYTER_DATA_DIR": str(private / "data"),
        "JUPYTER_RUNTIME_DIR": str(private / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(private / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(private / "workspaces"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = root / f"{app}.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab" if app == "lab" else "jupyter_server",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        *extra,
    ]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if call(url, "api/status", token=token)[0] == 200:
                    break
            except OSError:
                pass
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter {app} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, token
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def call(
    url: str, path: str, body: Any = None, *, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """One request; returns (status, decoded JSON body) for errors too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/{path}", data=data, method="POST" if data else "GET")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"raw": text.decode(errors="replace")}


@pytest.fixture(scope="module")
def server(module_champion, module_home, churn_data, churn_models):
    """churn/1 @champion (tested), churn/2 (never tested), and a Jupyter server."""
    import nbdeploy as nd

    X, y, _, _ = churn_data
    nd.register(churn_models[1], "churn", X, y)
    with jupyter("server", module_home, module_home.parent) as (url, token):
        yield url, token


def api(server: tuple[str, str], path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    url, token = server
    return call(url, f"nbdeploy/api/{path}", body, token=token)


ROUTES = [
    ("models", None),
    ("deployments", None),
    ("models/churn/promote", {"version": 1, "alias": "champion"}),
    ("models/churn/rollback", {"alias": "champion"}),
    ("deployments/churn/stop", {}),
]


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_every_route_refuses_a_request_without_the_token(server, path, body):
    url, _ = server
    status, answer = call(url, f"nbdeploy/api/{path}", body)
    assert status == 403
    assert "Traceback" not in json.dumps(answer)
    from nbdeploy.registry import alias_holder

    assert alias_holder("churn", "champion") == 1  # nothing moved


def test_models_lists_versions_aliases_tests_and_history(server):
    status, answer = api(server, "models")
    assert status == 200
    (churn,) = [m for m in answer["models"] if m["name"] == "churn"]
    assert churn["aliases"] == {"champion": 1}
    v2, v1 = churn["versions"]  # newest first
    assert (v2["version"], v2["aliases"], v2["test"]) == (2, [], None)
    assert v1["version"] == 1 and v1["aliases"] == ["champion"]
    assert v1["test"]["passed"] is True and v1["test"]["metric"] == "accuracy"
    assert 0.7 < v1["test"]["score"] <= 1 and v1["test"]["failed_checks"] == []
    (event,) = churn["history"]
    assert (event["alias"], event["from_version"], event["to_version"]) == ("champion", None, 1)
    assert answer["home"] == str(server_home())


def server_home() -> Path:
    from nbdeploy import config

    return config.settings().home


def test_promote_is_gated_then_forced_and_rolled_back(server):
    from nbdeploy.registry import alias_holder

    status, answer = api(server, "models/churn/promote", {"version": 2, "alias": "champion"})
    assert status == 409 and "never tested" in answer["message"]
    assert alias_holder("churn", "champion") == 1

    body = {"version": 2, "alias": "champion", "force": True}
    status, answer = api(server, "models/churn/promote", body)
    assert status == 200 and answer == {"name": "churn", "version": 2, "aliases": ["champion"]}
    assert alias_holder("churn", "champion") == 2

    status, answer = api(server, "models/churn/rollback", {"alias": "champion"})
    assert status == 200 and answer["version"] == 1
    assert alias_holder("churn", "champion") == 1
    events = api(server, "models")[1]["models"][0]["history"]
    assert [e["action"] for e in events][-2:] == ["promote", "rollback"]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("models/nope/promote", {"version": 1, "alias": "champion"}, 404, "no registered model"),
        ("models/churn/promote", {"version": 9, "alias": "champion"}, 404, "no version 9"),
        ("models/churn/promote", {"alias": "champion"}, 400, "version"),
        ("models/churn/promote", {"version": 1, "alias": "not an alias"}, 400, "valid alias"),
        ("models/churn/promote", {"version": 1, "alias": "v2"}, 409, "usable alias"),
        ("models/churn/rollback", {"alias": "staging"}, 409, "no earlier holder"),
        ("deployments/nope/stop", {}, 404, "no deployment named 'nope'"),
    ],
)
def test_user_errors_are_json_messages(server, path, body, status, says):
    got, answer = api(server, path, body)
    assert got == status
    assert says in answer["message"]
    assert "Traceback" not in answer["message"]


HOSTILE = [
    '{__import__("os").system("id")}',
    "$HOME",
    "churn\nimport os",
    "../x",
    "x" * 200,
    "modèle",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_a_400_naming_the_rule(server, name):
    from urllib.parse import quote

    from nbdeploy.registry import alias_holder

    part = quote(name, safe="")
    for path, body, kind in (
        (f"models/{part}/promote", {"version": 1, "alias": "champion"}, "model"),
        ("models/churn/promote", {"version": 2, "alias": name}, "alias"),
        (f"models/{part}/rollback", {"alias": "champion"}, "model"),
        ("models/churn/rollback", {"alias": name}, "alias"),
        (f"deployments/{part}/stop", {}, "deployment"),
    ):
        got, answer = api(server, path, body)
        assert got == 400, (path, answer)
        assert f"not a valid {kind} name" in answer["message"]
    assert alias_holder("churn", "champion") == 1  # nothing moved


def test_deployment_files_with_hostile_names_are_not_listed(server):
    folder = server_home() / "deployments"
    folder.mkdir(parents=True, exist_ok=True)
    state = {"ref": "churn@champion", "url": "http://127.0.0.1:9", "pid": os.getpid()}
    planted = [folder / "{__import__('os').system('id')}.json", folder / "planted.json"]
    for path in planted:
        path.write_text(json.dumps({**state, "name": "{__import__('os').system('id')}"}))
    try:
        status, answer = api(server, "deployments")
        assert status == 200
        assert all("{" not in d["name"] for d in answer["deployments"])
        assert "planted" not in [d["name"] for d in answer["deployments"]]
    finally:
        for path in planted:
            path.unlink()


def test_a_body_that_is_not_json_is_a_400(server):
    url, token = server
    request = urllib.request.Request(
        f"{url}/nbdeploy/api/models/churn/rollback", data=b"{oops", method="POST"
    )
    request.add_header("Authorization", f"token {token}")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["message"] == "send a JSON object"


def test_deployments_show_a_running_server_and_stop_it(server, churn_data):
    import nbdeploy as nd

    assert api(server, "deployments") == (200, {"home": str(server_home()), "deployments": []})
    dep = nd.serve("churn@champion")
    try:
        dep.predict(churn_data[2].head(3))
        status, answer = api(server, "deployments")
        assert status == 200
        (row,) = answer["deployments"]
        assert row["name"] == "churn" and row["status"] == "running"
        assert (row["version"], row["alias"], row["url"]) == (1, "champion", dep.url)
        assert row["requests"] == 1 and row["error_rate"] == 0
        assert (row["drift"], row["alerts"]) == (None, [])  # nothing recorded: unknown

        from nbdeploy.monitoring import check_alerts

        fired = check_alerts("churn", ["error_rate >= 0", "dataset_drift >= 0"])
        assert list(fired["status"]) == ["fired", "fired"]
        row = api(server, "deployments")[1]["deployments"][0]
        assert [a["rule"] for a in row["alerts"]] == ["dataset_drift >= 0", "error_rate >= 0"]
        assert row["drift"] is True and "churn: error_rate" in row["alerts"][1]["message"]

        status, answer = api(server, "deployments/churn/stop", {})
        assert (status, answer) == (200, {"stopped": ["churn"]})
        assert api(server, "deployments")[1]["deployments"] == []
    finally:
        with contextlib.suppress(nd.DeploymentError):
            nd.stop("churn")
