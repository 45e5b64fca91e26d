"""Routine work prints nothing that looks like a failure, and progress stays in the notebook.

- MLflow's INFO lines about creating its tables (first register in a new home) went
  to stderr, which a notebook shows in a red box;
- a job's kernel warned "running over TCP without encryption" into the notebook that
  started the job;
- tqdm's progress bar is a widget, blank in a saved notebook.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.conftest import kernel_name

pytestmark = pytest.mark.slow

REGISTER = """
import nbdeploy as nd
from nbdeploy.datasets import churn, churn_pipeline
X, y = churn(300, seed=0)
nd.register(churn_pipeline().fit(X, y), "churn", X, y)
print(nd.register(churn_pipeline().fit(X, y), "churn", X, y).version)
"""


def test_first_register_in_new_homes_writes_nothing_to_stderr(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for attempt in ("builds the store template", "copies it"):
        env = {**os.environ, "NBDEPLOY_HOME": str(tmp_path / attempt), "XDG_CACHE_HOME": str(cache)}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("NBDEPLOY_TRACKING_URI", None)
        done = subprocess.run(
            [sys.executable, "-c", REGISTER], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "2"  # both versions registered
        assert "Creating initial MLflow database tables" not in done.stderr, attempt
        assert "alembic" not in done.stderr and "INFO" not in done.stderr, done.stderr[-2000:]
    assert len(list((cache / "nbdeploy").glob("mlflow-*.db"))) == 1


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in cells],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nbformat.write(nb, str(path))
    return path


def test_a_job_run_from_a_notebook_shows_html_progress_and_no_kernel_warning(
    home: Path, tmp_path: Path
) -> None:
    import papermill

    inner = _notebook(tmp_path / "inner.ipynb", "x = 1", "y = x + 1")
    inner_nb = nbformat.read(str(inner), as_version=4)
    inner_nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(inner_nb, str(inner))
    outer = _notebook(
        tmp_path / "outer.ipynb",
        f"import nbdeploy as nd\nrun = nd.run_job({str(inner)!r}, {{'x': 2}}, "
        f"kernel={kernel_name()!r})\nrun.status",
    )
    executed = tmp_path / "outer.out.ipynb"
    papermill.execute_notebook(
        str(outer), str(executed), kernel_name=kernel_name(), cwd=str(tmp_path), progress_bar=False
    )
    outputs = nbformat.read(str(executed), as_version=4).cells[0].outputs
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "without encryption" not in stderr and "Executing" not in stderr, stderr
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    bars = [h for h in html if "nbdeploy-progress" in h]
    assert bars and re.search(r"100% (\d+)/\1 cell", bars[-1]), html  # every cell, done
    widgets = [
        o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert not widgets
    assert outputs[-1]["data"]["text/plain"] == "'succeeded'"
