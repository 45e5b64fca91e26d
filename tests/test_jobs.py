"""Jobs: real papermill runs on the registered test kernel, recorded in a real MLflow."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import nbdeploy as nd
from nbdeploy import scheduler
from nbdeploy.cron import Cron, every_as_cron
from nbdeploy.exceptions import JobError
from nbdeploy.runner import typed
from tests.conftest import kernel_name

pytestmark = pytest.mark.slow


def _notebook(path: Path, params: str, *cells: str) -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[new_code_cell(params), *(new_code_cell(c) for c in cells)],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def tiny(home: Path, tmp_path: Path) -> Path:
    return _notebook(
        tmp_path / "tiny.ipynb",
        "n = 1\nfail = False",
        "import os\nprint(os.getcwd())",
        "if fail:\n    raise ValueError('boom')",
        "import time\nfor i in range(n):\n    print(i, flush=True)\n    time.sleep(0.5)",
        "from nbdeploy.runner import report\nreport(n=n, session=os.environ['JPY_SESSION_NAME'])",
    )


@pytest.fixture
def weak_champion(home, churn_data):
    """churn/1 @champion, trained on shuffled labels: any honest retrain beats it."""
    from nbdeploy.datasets import churn_pipeline

    X, y, X_test, y_test = churn_data
    shuffled = y.sample(frac=1.0, random_state=0).reset_index(drop=True)
    mv = nd.register(churn_pipeline().fit(X, shuffled), "churn", X, shuffled)
    assert nd.test(mv, X_test, y_test).passed
    return nd.promote(mv, to="champion")


def _run(notebook, params=None, **kw):
    return nd.run_job(notebook, params, kernel=kernel_name(), progress=False, **kw)


def test_retrain_promotes_then_a_failed_gate_promotes_nothing(weak_champion, tmp_path):
    from nbdeploy.datasets import churn
    from nbdeploy.serving.adapter import load

    X, y = churn(1500, seed=3)
    X.assign(churn=y).to_csv(tmp_path / "new.csv", index=False)
    params = {"data": "new.csv", "target": "churn", "seed": 7}  # relative to the caller's cwd

    first = _run("retrain", params)
    assert first.status == "succeeded", first.error
    assert first.results["promoted"] is True and first.results["version"] == 2
    assert first.produced == ("churn/2",)
    assert nd.history("churn")["to_version"].tolist()[-1] == 2
    # lineage of the new version points at this job and its executed notebook
    mv = load("churn@champion")
    assert mv.meta["lineage"]["job_run_id"] == first.run_id
    assert mv.meta["lineage"]["notebook"] == first.output_path
    assert Path(first.output_path).is_file()

    again = _run("retrain", {**params, "min_score": 0.9999})
    assert again.status == "succeeded", again.error
    assert again.results == {**again.results, "version": 3, "promoted": False, "passed": False}
    assert nd.registry.alias_holder("churn", "champion") == 2
    # same data and seed: same fingerprint, identical predictions
    assert again.results["fingerprint"] == first.results["fingerprint"]
    X_new, _ = churn(300, seed=11)
    a, b = load("churn/2"), load("churn/3")
    cols = a.schema.from_frame(X_new)
    assert np.array_equal(a.predict(cols).proba, b.predict(cols).proba)

    runs = nd.jobs()
    assert runs["status"].tolist() == ["succeeded", "succeeded"]
    assert runs["produced"].tolist() == ["churn/3", "churn/2"]
    artifacts = nd.registry.client().list_artifacts(first.run_id, "notebook")
    assert [Path(f.path).name for f in artifacts] == [Path(first.output_path).name]


def test_unknown_parameter_is_refused_before_anything_runs(home):
    with pytest.raises(JobError, match="'dat'"):
        nd.run_job("retrain", {"dat": "x.csv"})
    with pytest.raises(JobError, match="no packaged notebook"):
        nd.run_job("retrian")
    assert nd.jobs().empty


def test_a_succeeding_job_reports_results_and_runs_in_the_callers_directory(tiny, tmp_path):
    done = _run(tiny, output="out/tiny.ipynb")
    assert done.status == "succeeded" and done.error is None
    assert done.output_path == str((tmp_path / "out" / "tiny.ipynb").resolve())
    assert done.results == {"n": 1, "session": done.output_path}
    text = Path(done.output_path).read_text()
    assert str(tmp_path) in text  # os.getcwd() in the kernel
    assert "widgets" not in json.loads(text)["metadata"]
    assert not list((tmp_path / "out").glob(".*tmp*"))  # written atomically, nothing left over


def test_results_of_any_name_and_numpy_values_are_recorded(home, tmp_path):
    odd = _notebook(
        tmp_path / "odd.ipynb",
        "k = 5",
        "import numpy as np\nfrom nbdeploy.runner import report\n"
        "report({'precision@5': 0.9, 'scores': np.array([1, 2]), 'best': np.float64(0.5)})",
    )
    done = _run(odd)
    assert done.status == "succeeded", done.error
    assert done.results == {"precision@5": 0.9, "scores": [1, 2], "best": 0.5}
    assert nd.jobs()["status"].iloc[0] == "succeeded"


def test_a_failing_cell_fails_the_job_names_the_cell_and_keeps_the_notebook(tiny):
    done = _run(tiny, {"fail": True})
    assert done.status == "failed"
    assert "ValueError: boom" in done.error and "if fail:" in done.error
    cells = json.loads(Path(done.output_path).read_text())["cells"]
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors[0]["evalue"] == "boom"
    assert nd.jobs()["status"].tolist() == ["failed"]


def test_a_timeout_fails_the_job_and_marks_where_it_stopped(tiny):
    start = time.monotonic()
    done = _run(tiny, {"n": 60}, timeout=6)
    assert time.monotonic() - start < 20
    assert done.status == "failed" and "timeout of 6 s" in done.error
    cells = json.loads(Path(done.output_path).read_text())["cells"]
    status = {"".join(c["source"])[:11]: c["metadata"].get("papermill", {}) for c in cells}
    assert status["import time"]["status"] == "failed"
    assert status["from nbdepl"]["status"] == "pending"
    stopped = next(c for c in cells if "".join(c["source"]).startswith("import time"))
    assert stopped["outputs"][-1]["ename"] == "TimeoutError"
    assert "0\n" in "".join(stopped["outputs"][0]["text"])  # what it printed is kept
    assert "An Exception was encountered" in json.dumps(cells[0])


def test_a_failed_job_leaves_nothing_promoted(champion, tmp_path):
    bad = _notebook(
        tmp_path / "bad.ipynb",
        "name = 'churn'",
        "import nbdeploy as nd\nfrom nbdeploy.datasets import churn, churn_pipeline\n"
        "X, y = churn(300, seed=4)\nmv = nd.register(churn_pipeline().fit(X, y), name, X, y)\n"
        "nd.promote(mv, to='champion', force=True)",
        "assert nd.registry.alias_holder(name, 'champion') == 1  # not moved during the job",
        "raise RuntimeError('after the promotion')",
    )
    done = _run(bad)
    assert done.status == "failed" and done.produced == ("churn/2",)
    assert "after the promotion" in done.error  # the in-job assertion held
    assert nd.registry.alias_holder("churn", "champion") == 1
    assert nd.history("churn")["to_version"].tolist() == [1]  # no move, not a move back


def test_a_double_trigger_runs_a_scheduled_time_once(tiny):
    job = nd.schedule(tiny, every="1m", parameters={"n": 1}, name="tiny")
    assert job.every_s == 60 and job.next_run > time.time()
    due = job.created + 61
    results: list[list] = []
    threads = [threading.Thread(target=lambda: results.append(scheduler.run_due(due)))]
    threads.append(threading.Thread(target=lambda: results.append(scheduler.run_due(due))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 1]
    assert scheduler.run_due(due + 5) == []  # restart or re-trigger: still claimed
    runs = nd.jobs()
    assert len(runs) == 1 and runs["name"][0] == "tiny" and runs["status"][0] == "succeeded"
    assert runs["scheduled_for"][0].timestamp() == pytest.approx(due - 1)
    assert len(scheduler.run_due(due + 60)) == 1  # the next scheduled time runs


def test_schedule_refuses_bad_specs(tiny):
    with pytest.raises(JobError, match="exactly one"):
        nd.schedule(tiny)
    with pytest.raises(JobError, match="interval"):
        nd.schedule(tiny, every="soon")
    with pytest.raises(JobError, match="hour"):
        nd.schedule(tiny, cron="0 25 * * *")
    with pytest.raises(JobError, match="'size'"):
        nd.schedule(tiny, every="1h", parameters={"size": 3})


def test_cron_expressions():
    at = time.mktime((2026, 3, 4, 10, 7, 30, 0, 0, -1))  # Wednesday 10:07:30 local
    assert time.localtime(Cron("*/5 * * * *").next(at))[3:5] == (10, 10)
    assert time.localtime(Cron("*/5 * * * *").previous(at))[3:5] == (10, 5)
    assert time.localtime(Cron("0 9 * * 1-5").next(at))[2:5] == (5, 9, 0)
    assert time.localtime(Cron("30 2 1,15 * *").next(at))[1:5] == (3, 15, 2, 30)
    assert time.localtime(Cron("0 0 * * 0").next(at))[6] == 6  # Sunday (tm_wday 6)
    assert every_as_cron(1800) == "*/30 * * * *" and every_as_cron(86400) == "0 0 * * *"
    # a day field starting with "*" does not widen to "either day": odd days AND Mondays
    monday_odd = time.localtime(Cron("0 0 */2 * 1").next(at))
    assert monday_odd.tm_wday == 0 and monday_odd.tm_mday % 2 == 1
    assert time.localtime(Cron("0 0 1 * 1").next(at))[2] in (1, 9)  # 1st or a Monday
    with pytest.raises(JobError):
        Cron("* * *")


def test_parameters_are_typed_as_papermill_types_them():
    assert [typed(v) for v in ("True", "None", "3", "2.5", "1e3", "churn", "nan")][:6] == [
        True,
        None,
        3,
        2.5,
        1000.0,
        "churn",
    ]
