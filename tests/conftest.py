"""Shared fixtures: a real MLflow store and audit log in a temporary NBDEPLOY_HOME."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbdeploy import config
from tests.engines import environ


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty nbdeploy home for one test; every server it started is stopped."""
    root = tmp_path / "home"
    monkeypatch.setenv("NBDEPLOY_HOME", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("NBDEPLOY_ALIAS_POLL_S", "0.2")
    monkeypatch.chdir(tmp_path)
    config.reset()
    yield root
    from nbdeploy.serving.process import stop

    if (root / "deployments").is_dir():
        stop(all=True)
    config.reset()


@pytest.fixture(scope="session")
def churn_data():
    from nbdeploy.datasets import churn

    X, y = churn(1500, seed=0)
    X_test, y_test = churn(400, seed=1)
    return X, y, X_test, y_test


@pytest.fixture(scope="session")
def churn_models(churn_data):
    """Two fitted pipelines of different quality, trained once per session."""
    from nbdeploy.datasets import churn_pipeline

    X, y, _, _ = churn_data
    return churn_pipeline(C=1.0).fit(X, y), churn_pipeline(C=0.001).fit(X, y)


@pytest.fixture
def champion(home, churn_data, churn_models):
    """churn/1 registered, tested and promoted to @champion."""
    import nbdeploy as nd

    X, y, X_test, y_test = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    assert nd.test(mv, X_test, y_test, min_score=0.7).passed
    return nd.promote(mv, to="champion")


@pytest.fixture
def served(champion):
    """A running server for churn@champion (stopped by ``home``)."""
    import nbdeploy as nd

    return nd.serve("churn@champion")


def eventually(condition: Callable[[], Any], seconds: float = 60.0, what: str = "") -> Any:
    """Wait for ``condition()`` to be truthy and return it: tests wait for what they
    need, never a fixed time (on a loaded machine any fixed sleep is too short)."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert value, f"still not true after {seconds:.0f} s: {what or condition}"
    return value


def kernel_name() -> str:
    return os.environ.get("NBDEPLOY_TEST_KERNEL", "python3")


@contextlib.contextmanager
def isolated_home(root: Path) -> Iterator[Path]:
    """A fresh nbdeploy home without monkeypatch (usable in module-scoped fixtures).

    Sets ``NBDEPLOY_HOME`` (and the fast alias poll the other fixtures use), runs in
    ``root``'s parent, and restores the environment, the working directory and the
    settings afterwards; every server started under it is stopped.
    """
    cwd = os.getcwd()
    root.parent.mkdir(parents=True, exist_ok=True)
    values = {"NBDEPLOY_HOME": str(root), "NBDEPLOY_ALIAS_POLL_S": "0.2",
              "MLFLOW_TRACKING_URI": None, "NBDEPLOY_TOKEN": None}  # fmt: skip
    with environ(**values):
        os.chdir(root.parent)
        config.reset()
        try:
            yield root
        finally:
            from nbdeploy.serving.process import stop

            try:
                if (root / "deployments").is_dir():
                    stop(all=True)
            finally:
                os.chdir(cwd)
    config.reset()


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Like ``home`` but shared by one test module (servers are slow to start)."""
    with isolated_home(tmp_path_factory.mktemp("module") / "home") as root:
        yield root


@pytest.fixture(scope="module")
def module_champion(module_home, churn_data, churn_models):
    """churn/1 registered, tested and promoted to @champion in ``module_home``."""
    import nbdeploy as nd

    X, y, X_test, y_test = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    assert nd.test(mv, X_test, y_test, min_score=0.7).passed
    return nd.promote(mv, to="champion")


# -- team engines: one PostgreSQL and one MLflow tracking server per test run ----------


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A throwaway PostgreSQL on 127.0.0.1 (Debian's binaries; ``make postgres``)."""
    from tests.engines import Postgres, postgres_bin

    if postgres_bin() is None:
        pytest.fail(
            "PostgreSQL is not installed, so the team tests cannot run: `make postgres` "
            "installs it (Debian: apt-get install -y postgresql); they fail rather than skip"
        )
    pg = Postgres.start()
    try:
        yield pg
    finally:
        from nbdeploy.auditlog import maintenance

        # anchor while the server is up, not at interpreter exit after it stopped
        maintenance.shutdown()
        pg.stop()


@pytest.fixture(scope="session")
def tracking_server(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """``mlflow server`` backed by ``postgres``, serving artifacts (mlflow-artifacts:).

    It requires credentials (MLflow's basic-auth app), as a team's server would: users
    ``alice`` (its admin) and ``bob``, passwords in ``tracking_server.users``.
    """
    import secrets

    from tests.engines import TrackingServer

    users = {"alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}
    server = TrackingServer.start(
        postgres.create_database("mlflow"), tmp_path_factory.mktemp("tracking"), users=users
    )
    try:
        yield server
    finally:
        server.stop()
