"""The exported DAG in a real Airflow 3 (its own virtual environment, made once by
``make airflow-venv``): DagBag loads it without import errors, and ``airflow dags test``
runs the retrain job end to end on this project's Python through its kernel."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import nbdeploy as nd
from nbdeploy import config
from nbdeploy.exports import export_job

pytestmark = pytest.mark.slow

VENV = Path(os.environ.get("NBDEPLOY_AIRFLOW_VENV", "/root/.cache/nbdeploy/airflow-venv"))

_DAGBAG = """
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"dags": sorted(bag.dag_ids),
                  "errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()}}))
"""


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    if not (VENV / "bin" / "airflow").exists():
        pytest.fail(f"no Airflow at {VENV}: run `make airflow-venv` (make test does)")
    root = tmp_path_factory.mktemp("airflow")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("VIRTUAL_ENV", None)
    (root / "dags").mkdir()
    migrate = subprocess.run(
        [str(VENV / "bin" / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    return root, env


def test_the_exported_dag_loads_and_runs_the_retrain_job(airflow_env, champion, churn_data):
    root, env = airflow_env
    X, y, _, _ = churn_data
    data = Path.cwd() / "fresh.csv"
    X.assign(churn=y).to_csv(data, index=False)
    nd.schedule(
        "retrain",
        every="1d",
        parameters={"model_name": "churn", "data": str(data), "target": "churn"},
    )
    (root / "dags" / "retrain.py").write_text(export_job("airflow", "retrain"))
    bag = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", _DAGBAG, str(root / "dags")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bag.returncode == 0, bag.stderr[-2000:]
    loaded = json.loads(bag.stdout.strip().splitlines()[-1])
    assert loaded == {"dags": ["nbdeploy_retrain"], "errors": {}}
    run = subprocess.run(
        [str(VENV / "bin" / "airflow"), "dags", "test", "nbdeploy_retrain", "2026-01-01"],
        env={**env, "NBDEPLOY_HOME": str(config.settings().home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    executed = list((config.settings().home / "jobs" / "runs").glob("retrain-*.ipynb"))
    assert len(executed) == 1
    from nbdeploy import registry

    retrained = registry.versions("churn")[-1]
    assert retrained.version == 2 and "fresh.csv" in retrained.description
