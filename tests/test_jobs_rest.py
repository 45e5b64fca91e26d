"""The Jobs REST API behind the lab panel, on a real ``jupyter server`` with a token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.test_jobs import _notebook
from tests.test_server_ext import jupyter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(module_home: Path):
    root = module_home.parent
    _notebook(root / "train.ipynb", "rows = 100\nrate = 0.5\nlabel = 'churn'\nfail = False",
              "if fail:\n    raise ValueError('no data for ' + label)")  # fmt: skip
    plain = _notebook(root / "plain.ipynb", "x = 1")
    import nbformat

    nb = nbformat.read(str(plain), as_version=4)
    nb.cells[0].metadata["tags"] = []
    nbformat.write(nb, str(plain))
    with jupyter("server", module_home, root) as (url, token):
        yield url, token


def api(
    lab: tuple[str, str], path: str, body: Any = None, *, method: str | None = None, auth=True
) -> tuple[int, Any]:
    url, token = lab
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/nbdeploy/api/{path}", data=data, method=method or ("POST" if data else "GET")
    )
    if auth:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


ROUTES = [
    ("jobs", None, "GET"),
    ("schedules", {"notebook": "train.ipynb", "every": "1h"}, "POST"),
    ("schedules/preview?every=1h", None, "GET"),
    ("notebooks/parameters?path=train.ipynb", None, "GET"),
    ("jobs/nightly/run", {}, "POST"),
    ("jobs/nightly/pause", {}, "POST"),
    ("jobs/nightly", None, "DELETE"),
]


@pytest.mark.parametrize(("path", "body", "method"), ROUTES)
def test_every_jobs_route_refuses_a_request_without_the_token(lab, path, body, method):
    status, answer = api(lab, path, body, method=method, auth=False)
    assert status == 403 and "Traceback" not in json.dumps(answer)
    assert api(lab, "jobs")[1]["schedules"] == []  # nothing was created


def test_the_dialog_gets_typed_parameters_and_previews(lab):
    status, answer = api(lab, "notebooks/parameters?path=train.ipynb")
    assert status == 200 and answer["name"] == "train" and answer["note"] is None
    types = {f["name"]: (f["type"], f["default"]) for f in answer["parameters"]}
    assert types == {"rows": ("int", "100"), "rate": ("float", "0.5"),
                     "label": ("str", "'churn'"), "fail": ("bool", "False")}  # fmt: skip
    status, answer = api(lab, "notebooks/parameters?path=plain.ipynb")
    assert status == 200 and answer["parameters"] == [] and "tagged 'parameters'" in answer["note"]
    status, answer = api(lab, "schedules/preview?cron=*/15%20*%20*%20*%20*")
    assert status == 200 and len(answer["next_runs"]) == 3
    minutes = [int(t[14:16]) for t in answer["next_runs"]]
    assert all(m % 15 == 0 for m in minutes)
    status, answer = api(lab, "schedules/preview?cron=0%2025%20*%20*%20*")
    assert status == 400 and "hour" in answer["message"]
    status, answer = api(lab, "notebooks/parameters?path=../../etc/passwd.ipynb")
    assert status == 400 and "inside the folder" in answer["message"]


BAD = [
    ({"notebook": "train.ipynb", "cron": "every day"}, 400, "cron"),
    ({"notebook": "train.ipynb", "every": "1h", "parameters": {"epochs": 3}}, 400, "'epochs'"),
    ({"notebook": "train.ipynb", "every": "1h", "parameters": {"rows": "many"}}, 400, "int"),
    ({"notebook": "train.ipynb", "every": "1h", "name": "a b"}, 400, "job name"),
    ({"notebook": "plain.ipynb", "every": "1h"}, 400, "tagged 'parameters'"),
    ({"notebook": "missing.ipynb", "every": "1h"}, 400, "not found"),
    ({"notebook": "train.ipynb"}, 400, "interval"),
    ({"notebook": "train.ipynb", "every": "1h", "cron": "0 * * * *"}, 400, "not both"),
]


@pytest.mark.parametrize(("body", "status", "says"), BAD)
def test_a_bad_schedule_says_what_to_do_and_leaves_nothing(lab, body, status, says):
    got, answer = api(lab, "schedules", body)
    assert got == status and says in answer["message"], answer
    assert api(lab, "jobs")[1]["schedules"] == []


def test_schedule_pause_resume_run_now_and_unschedule(lab):
    body = {"notebook": "train.ipynb", "every": "6h", "parameters": {"rows": 5},
            "name": "nightly"}  # fmt: skip
    status, made = api(lab, "schedules", body)
    assert status == 200 and made["name"] == "nightly" and made["every"] == "6h"
    assert api(lab, "schedules", body)[0] == 409  # the name is taken now
    (listed,) = api(lab, "jobs")[1]["schedules"]
    assert listed["next_run"] and listed["paused"] is False and listed["last_status"] is None

    assert api(lab, "jobs/nightly/pause", {})[1] == {"name": "nightly", "paused": True}
    assert api(lab, "jobs")[1]["schedules"][0]["next_run"] is None
    assert api(lab, "jobs/nightly/resume", {})[1] == {"name": "nightly", "paused": False}

    status, started = api(lab, "jobs/nightly/run", {})
    assert status == 200 and started["run_id"]
    runs = api(lab, "jobs")[1]["runs"]
    assert runs[0]["run_id"] == started["run_id"] and runs[0]["job"] == "nightly"
    deadline = time.monotonic() + 180
    while runs[0]["status"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
        runs = api(lab, "jobs")[1]["runs"]
    assert runs[0]["status"] == "succeeded", runs[0]
    assert Path(runs[0]["output_path"]).is_file() and runs[0]["duration_s"] > 0
    assert api(lab, "jobs")[1]["schedules"][0]["last_status"] == "succeeded"

    assert api(lab, "jobs/nope/run", {})[0] == 404
    assert api(lab, "jobs/nightly", method="DELETE")[1] == {"unscheduled": "nightly"}
    assert api(lab, "jobs")[1]["schedules"] == []
    assert api(lab, "jobs/nightly", method="DELETE")[0] == 404


def test_a_failed_run_shows_its_error_line_and_failing_cell(lab):
    body = {"notebook": "train.ipynb", "every": "1d", "parameters": {"fail": True},
            "name": "broken"}  # fmt: skip
    assert api(lab, "schedules", body)[0] == 200
    run_id = api(lab, "jobs/broken/run", {})[1]["run_id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        (run,) = [r for r in api(lab, "jobs")[1]["runs"] if r["run_id"] == run_id]
        if run["status"] != "running":
            break
        time.sleep(1)
    assert run["status"] == "failed"
    assert "ValueError: no data for churn" in run["error"] and "\n" not in run["error"]
    assert run["failed_cell"] is not None and Path(run["output_path"]).is_file()
    status, opened = api(lab, f"runs/{run_id}/open", {})
    assert status == 200 and opened["failed_cell"] == run["failed_cell"]
    root = Path(lab_root())
    assert (root / opened["path"]).resolve() == Path(run["output_path"]).resolve()
    assert api(lab, f"runs/{'0' * 32}/open", {})[0] == 400


def lab_root() -> str:
    from nbdeploy import config

    return str(config.settings().home.parent)
