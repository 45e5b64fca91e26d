"""Two people, one MLflow tracking server on PostgreSQL, one prediction log.

Alice and Bob each have their own ``NBDEPLOY_HOME`` (their own model cache, deployments
and job records) and point ``NBDEPLOY_TRACKING_URI`` at the same tracking server and
``NBDEPLOY_AUDIT_DB`` at the same log on PostgreSQL. Everything goes over HTTP to a real
``mlflow server`` (see ``engines.py``); model files travel through the server
(``mlflow-artifacts:``), never through either person's disk.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbdeploy import config
from tests.conftest import environ, kernel_name

pytestmark = pytest.mark.slow

NAME = "team-churn"


class Person:
    """One person's settings; ``with person:`` makes this process act as them."""

    def __init__(self, home: Path, tracking: str, audit_db: str, password: str) -> None:
        self.home, self.tracking, self.audit_db = home, tracking, audit_db
        self.password = password

    @contextlib.contextmanager
    def acting(self) -> Iterator[Path]:
        values = {"NBDEPLOY_HOME": str(self.home), "NBDEPLOY_TRACKING_URI": self.tracking,
                  "NBDEPLOY_AUDIT_DB": self.audit_db, "MLFLOW_TRACKING_URI": None,
                  "NBDEPLOY_ALIAS_POLL_S": "0.2", "NBDEPLOY_TOKEN": None,
                  "NBDEPLOY_USER": self.home.name, "MLFLOW_TRACKING_USERNAME": self.home.name,
                  "MLFLOW_TRACKING_PASSWORD": self.password}  # fmt: skip
        with environ(**values):
            config.reset()
            try:
                yield self.home
            finally:
                config.reset()

    def __enter__(self) -> Path:
        self._context = self.acting()
        return self._context.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)


@pytest.fixture(scope="module")
def team(tracking_server, postgres, tmp_path_factory) -> Iterator[tuple[Person, Person]]:
    root = tmp_path_factory.mktemp("team")
    log = postgres.create_database("teamlog")  # the prediction log, on PostgreSQL too
    users = tracking_server.users
    alice = Person(root / "alice", tracking_server.url, log, users["alice"])
    bob = Person(root / "bob", tracking_server.url, log, users["bob"])
    yield alice, bob
    from nbdeploy.serving.process import stop

    for person in (alice, bob):
        with person:
            if (person.home / "deployments").is_dir():
                stop(all=True)


@pytest.fixture(scope="module")
def story(team, tracking_server, churn_data, churn_models):
    """Alice registers, tests, promotes and serves; returns her deployment and answers."""
    import nbdeploy as nd

    alice, _ = team
    X, y, X_test, y_test = churn_data
    with alice:
        mv = nd.register(churn_models[0], NAME, X, y)
        assert nd.test(mv, X_test, y_test, min_score=0.7).passed
        nd.promote(mv, to="champion")
        dep = nd.serve(f"{NAME}@champion")
        answers = dep.predict(X_test.head(5))
    return dep, answers


def test_artifacts_live_on_the_tracking_server_not_on_the_registering_disk(
    story, team, tracking_server
):
    import nbdeploy as nd

    alice, _ = team
    with alice as home:
        mv = nd.registry.resolve(f"{NAME}/1")
        assert mv.source.startswith("mlflow-artifacts:"), mv.source
        assert not (home / "artifacts").exists()
    stored = list(tracking_server.artifacts.rglob("nbdeploy.json"))
    assert stored, "the model files are not in the tracking server's artifact store"


def test_a_second_person_sees_models_aliases_history_and_predictions(story, team):
    import nbdeploy as nd

    _, answers = story
    _, bob = team
    with bob:
        assert NAME in nd.registry.model_names()
        assert nd.registry.resolve(f"{NAME}@champion").version == 1
        history = nd.history(NAME)
        assert history["to_version"].tolist() == [1] and history["user"].tolist() == ["alice"]
        logged = nd.logs(NAME)
        assert set(answers["prediction_id"]) <= set(logged["prediction_id"])
        record = nd.audit(answers["prediction_id"].iloc[0])
        assert record.verified and record.model_version == 1
        # Bob's audit fetched the model files into his own, verified cache
        cached = [p for p in (bob.home / "cache").rglob("nbdeploy.json") if NAME in p.parts]
        assert cached, "the model files are not in Bob's own cache"


def test_bob_promotes_and_alices_server_follows_then_rolls_back(
    story, team, churn_data, churn_models
):
    import nbdeploy as nd

    dep, _ = story
    alice, bob = team
    X, y, X_test, y_test = churn_data
    with bob:
        mv = nd.register(churn_models[1], NAME, X, y)
        assert nd.test(mv, X_test, y_test, min_score=0.0).passed
        nd.promote(mv, to="champion", reason="bob's retrain")
    with alice:
        assert _follows(dep, 2)
        assert nd.history(NAME)["user"].tolist() == ["alice", "bob"]
        assert nd.rollback(NAME).version == 1
        assert _follows(dep, 1)
    with bob:
        actions = nd.history(NAME)["action"].tolist()
        assert actions == ["promote", "promote", "rollback"]
        assert nd.registry.resolve(f"{NAME}@champion").version == 1


def _follows(dep, version: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dep.status().get("model_version") == version:
            return True
        time.sleep(0.2)
    return False


def test_a_job_runs_and_is_recorded_on_the_tracking_server(story, team, tmp_path):
    import nbdeploy as nd

    alice, bob = team
    notebook = tmp_path / "tiny.ipynb"
    _write_notebook(notebook)
    with alice:
        run = nd.run_job(notebook, {"n": 3}, kernel=kernel_name(), progress=False)
        assert run.status == "succeeded" and run.results["doubled"] == 6
        artifacts = nd.registry.client().list_artifacts(run.run_id, "notebook")
        assert artifacts and artifacts[0].path.endswith(".ipynb")
    with bob:  # the run is an MLflow run on the shared server
        assert nd.registry.client().get_run(run.run_id).info.status == "FINISHED"


def test_the_scheduler_runs_a_due_job_against_the_tracking_server(story, team, tmp_path):
    import nbdeploy as nd
    from nbdeploy import scheduler

    alice, _ = team
    notebook = tmp_path / "tiny.ipynb"
    _write_notebook(notebook)
    with alice:
        nd.schedule(notebook, every="1h", parameters={"n": 2}, name="team-tiny")
        runs = scheduler.run_due(time.time() + 3601)
        assert [r.status for r in runs] == ["succeeded"]
        assert runs[0].results["doubled"] == 4


def _write_notebook(path: Path) -> None:
    from tests.test_jobs import _notebook

    _notebook(path, "n = 1", "from nbdeploy.runner import report\nreport(doubled=2 * n)")


def test_the_lab_panel_rest_works_against_the_tracking_server(story, team, tracking_server):
    from tests.test_server_ext import call, jupyter

    _, bob = team
    with bob, jupyter("server", bob.home, bob.home.parent) as (url, token):
        status, models = call(url, "nbdeploy/api/models", token=token)
        assert status == 200
        (model,) = [m for m in models["models"] if m["name"] == NAME]
        assert model["aliases"]["champion"] == 1
        status, moved = call(
            url, f"nbdeploy/api/models/{NAME}/promote", {"version": 2, "alias": "staging"},
            token=token,
        )  # fmt: skip
        assert status == 200 and moved["aliases"] == ["staging"]
        status, _ = call(url, "nbdeploy/api/deployments", token=token)
        assert status == 200


def test_wrong_credentials_or_no_server_give_one_clear_line(tracking_server, tmp_path):
    import nbdeploy as nd
    from nbdeploy.exceptions import RegistryError
    from tests.engines import free_port

    secret = "not-bobs-password-4711"
    base = {"NBDEPLOY_HOME": str(tmp_path / "carol"), "MLFLOW_TRACKING_URI": None,
            "MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": secret}  # fmt: skip
    cases = [
        (tracking_server.url, f"MLflow tracking server at {tracking_server.url} refused the"),
        (f"http://127.0.0.1:{free_port()}", "cannot reach the MLflow tracking server at http"),
        (f"postgresql://bob:{secret}@127.0.0.1:{free_port()}/mlflow",
         "cannot reach the MLflow tracking database at postgresql://bob:***@127.0.0.1"),
    ]  # fmt: skip
    for uri, expected in cases:
        with environ(**base, NBDEPLOY_TRACKING_URI=uri):
            config.reset()
            try:
                with pytest.raises(RegistryError) as caught:
                    nd.registry.model_names()
            finally:
                config.reset()
        message = str(caught.value)
        assert expected in message and secret not in message and "\n" not in message


def test_credentials_never_appear_in_files_lineage_or_the_panel(story, team, tracking_server):
    import json

    import nbdeploy as nd
    from nbdeploy.labapi import deployments_summary, models_summary

    alice, bob = team
    secrets = [p.encode() for p in tracking_server.users.values()]
    with alice:
        panel = json.dumps([models_summary(), deployments_summary()], default=str).encode()
        run = nd.registry.client().get_run(nd.registry.resolve(f"{NAME}/1").run_id)
        lineage = json.dumps([run.data.tags, run.data.params]).encode()
        record = json.dumps(nd.audit(story[1]["prediction_id"].iloc[0]).lineage).encode()
    files = [p for root in (alice.home, bob.home, tracking_server.artifacts)
             for p in root.rglob("*") if p.is_file()]  # fmt: skip
    assert len(files) > 10
    for secret in secrets:
        assert secret not in panel and secret not in lineage and secret not in record
        leaked = [p for p in files if secret in p.read_bytes()]
        assert not leaked, leaked
