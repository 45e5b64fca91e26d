"""What happens when things go wrong: a prediction that does not reproduce, a new
version a running server cannot load, a scheduler killed mid-run, and a retrain of a
model that is random unless seeded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

import nbdeploy as nd
from nbdeploy import scheduler
from tests.conftest import eventually, kernel_name
from tests.test_jobs import _notebook

pytestmark = pytest.mark.slow


class Coin(mlflow.pyfunc.PythonModel):
    """A model that is random on every call: its answers never reproduce."""

    def predict(self, context, model_input, params=None):
        return np.random.default_rng().random(len(model_input))


def test_a_prediction_that_does_not_reproduce_is_reported(home, churn_data):
    X, y, X_test, _ = churn_data
    nd.register(Coin(), "coin", X, y.eq("yes").astype(float))
    dep = nd.serve("coin/1")
    answer = dep.predict(X_test.head(3))
    record = nd.audit(answer["prediction_id"].iloc[0])
    assert record.output == pytest.approx(answer["prediction"].iloc[0])
    assert record.verified is True  # the log is intact...
    assert record.reproduced is False  # ...but the model gives another answer today
    assert "NO" in record._repr_html_()


def _tamper(home, mv) -> None:
    pickles = [p for p in (home / "artifacts").rglob("model.pkl") if mv.run_id in str(p)]
    assert len(pickles) == 1
    with pickles[0].open("ab") as fh:
        fh.write(b"\0tampered")


def test_a_server_keeps_its_version_when_the_new_one_cannot_load(
    champion, home, churn_data, churn_models
):
    X, y, X_test, _ = churn_data
    dep = nd.serve("churn@champion")
    v2 = nd.register(churn_models[1], "churn", X, y)
    _tamper(home, v2)  # the artifact store now holds a corrupt version 2
    nd.promote(v2, to="champion", force=True)
    warnings = eventually(
        lambda: [w for w in dep.status().get("warnings", []) if w.startswith("alias follow")],
        what="the server to say why it did not switch",
    )
    assert "churn/2" in warnings[0] and "sha256" in warnings[0]
    answer = dep.predict(X_test.head(20))
    assert (answer["model_version"] == 1).all()  # still answering, with version 1
    assert nd.deployments().set_index("name").loc["churn", "version"] == 1


def _claim(name: str, when: float) -> str | None:
    row = (
        scheduler._db()
        .execute("SELECT status FROM claims WHERE name = ? AND scheduled_for = ?", (name, when))
        .fetchone()
    )
    return row[0] if row else None


def test_a_scheduler_killed_mid_run_marks_the_run_abandoned_and_goes_on(home, tmp_path):
    notebook = _notebook(
        tmp_path / "slow.ipynb", "n = 1", "import time\nfor i in range(n):\n    time.sleep(1)"
    )
    kernel = kernel_name()
    job = nd.schedule(notebook, every="1h", parameters={"n": 120}, name="slow", kernel=kernel)
    at = round(job.created + 3600, 3)
    child = subprocess.Popen(
        [sys.executable, "-m", "nbdeploy.cli", "scheduler", "--trigger", "slow", "--at", repr(at)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        eventually(lambda: _claim("slow", at) == "running", what="the run to start")
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the scheduler dies mid-run, as in a crash
        child.wait()
    assert _claim("slow", at) == "running"  # what the crash left behind
    scheduler.loop(once=True)  # the next scheduler start
    assert _claim("slow", at) == "abandoned"
    assert scheduler.trigger("slow", at=at) is None  # an interrupted run is not repeated
    nd.schedule(notebook, every="1h", parameters={"n": 0}, name="slow", kernel=kernel)
    later = scheduler.trigger("slow", at=at + 3600)  # the next time runs as usual
    assert later is not None and later.status == "succeeded"
    assert _claim("slow", at + 3600) == "succeeded"


def test_retraining_a_random_forest_with_a_seed_reproduces_it(home, churn_data, tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    from nbdeploy.datasets import churn_pipeline
    from nbdeploy.retrain import estimator, split, training_data

    X, y, X_test, _ = churn_data
    forest = churn_pipeline()
    forest.steps[-1] = ("model", RandomForestClassifier(n_estimators=20))  # random_state=None
    nd.register(forest.fit(X, y), "forest", X, y, alias="champion")
    data = tmp_path / "new.csv"
    pd.concat([X, y.rename("churned")], axis=1).to_csv(data, index=False)

    def retrain(seed: int | None) -> np.ndarray:
        """What the retrain notebook does, up to the fit."""
        Xn, yn = training_data("forest", data, "churned")
        X_train, _, y_train, _ = split(Xn, yn, seed=0)
        model = estimator("forest@champion", seed=seed).fit(X_train, y_train)
        return model.predict_proba(X_test)

    assert np.array_equal(retrain(seed=7), retrain(seed=7))  # the same model again
    assert not np.array_equal(retrain(seed=None), retrain(seed=None))  # random without one
