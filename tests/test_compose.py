"""deploy/compose.yaml, checked statically (no container engine runs here).

The structure is checked against the Compose specification's rules that matter for a
start (services, builds, volumes, dependencies, loopback-only ports); each service's
command is parsed by the program it runs (``mlflow server``'s own click command,
``nbdeploy``'s own argument parser); and the settings agree with the README.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from nbdeploy import cli, config
from tests.conftest import environ

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
README = DEPLOY.parent / "README.md"
TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets"}
SERVICE_KEYS = {"image", "build", "command", "environment", "volumes", "ports", "depends_on",
                "healthcheck", "restart"}  # fmt: skip
_VAR = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?P<rest>[^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}``."""

    def one(match: re.Match[str]) -> str:
        name, rest = match["name"], match["rest"]
        if name in env:
            return env[name]
        assert rest == "" or rest.startswith((":-", ":?", "-", "?")), match[0]
        return rest[2:] if rest.startswith(":-") else ""

    return _VAR.sub(one, value)


def command(service: dict[str, Any]) -> list[str]:
    env = {"POSTGRES_PASSWORD": "pw"}
    return [interpolate(str(part), env) for part in service["command"]]


def readme_section() -> str:
    text = README.read_text()
    start = text.index("## Working as a team")
    end = text.find("\n## ", start + 5)
    return text[start : end if end > 0 else None]


def test_structure_is_valid_compose(compose):
    assert set(compose) <= TOP_LEVEL | {k for k in compose if k.startswith("x-")}
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "nbdeploy"}
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert "image" in service or "build" in service, name
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services and dependency != name
            assert condition["condition"] in {"service_started", "service_healthy"}
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency]
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), mount
            else:
                assert source in named_volumes, mount
        for port in service.get("ports", []):  # published on loopback only
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), port
        for value in [*(service.get("environment") or {}).values(), *service.get("command", [])]:
            for match in _VAR.finditer(str(value)):  # well-formed interpolation only
                assert match["rest"] == "" or match["rest"][:2] in (":-", ":?"), match[0]


def test_the_tracking_server_command_is_what_mlflow_server_accepts(compose):
    from mlflow.cli import server

    mlflow = compose["services"]["mlflow"]
    args = command(mlflow)
    assert args[:2] == ["mlflow", "server"]
    context = server.make_context("server", args[2:])  # raises on an unknown option
    params = context.params
    assert params["backend_store_uri"].startswith("postgresql://nbdeploy:pw@postgres:5432/")
    assert params["serve_artifacts"] is True
    mounted = {m.split(":")[1] for m in mlflow["volumes"]}
    assert params["artifacts_destination"] in mounted
    dockerfile = (DEPLOY / mlflow["build"]["dockerfile"]).read_text()
    assert "psycopg[binary]" in dockerfile  # postgresql:// needs psycopg 3 in its image


def test_the_model_server_command_and_settings_are_nbdeploys(compose):
    service = compose["services"]["nbdeploy"]
    args = command(service)
    parsed = cli._parser().parse_args(args[1:])
    assert (parsed.command, parsed.ref, parsed.workers) == ("serve", "churn@champion", 2)
    assert parsed.host == "0.0.0.0"
    env = {k: interpolate(str(v), {"POSTGRES_PASSWORD": "pw"}) for k, v in
           service["environment"].items()}  # fmt: skip
    with environ(MLFLOW_TRACKING_URI=None, **env):
        config.reset()
        try:
            s = config.settings()
            assert s.tracking_uri == "http://mlflow:5000"
            assert str(s.audit_db).startswith("postgresql://nbdeploy:pw@postgres:5432/")
        finally:
            config.reset()
    mlflow_hosts = command(compose["services"]["mlflow"])
    assert "mlflow:5000" in mlflow_hosts[mlflow_hosts.index("--allowed-hosts") + 1]


def test_the_readme_gives_the_same_settings(compose):
    section = readme_section()
    assert "deploy/compose.yaml" in section
    for flag in ("--backend-store-uri postgresql://", "--serve-artifacts",
                 "--artifacts-destination", "--workers"):  # fmt: skip
        assert flag in section, flag
    for name in ("NBDEPLOY_TRACKING_URI", "NBDEPLOY_AUDIT_DB", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD", "psycopg[binary]"):  # fmt: skip
        assert name in section, name
    for service in compose["services"].values():
        image = service.get("image", "")
        if image and "build" not in service:
            assert image in section, image
