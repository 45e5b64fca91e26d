"""What the lab's Jobs section shows and does, as plain functions over the scheduler.

The REST handlers of the Jupyter server extension call exactly one of these each;
they take and return JSON-ready values, so they are usable (and tested) without
Jupyter. Paths a browser sends are relative to the Jupyter server's root folder and
must stay inside it; a schedule made here runs in its notebook's folder, as the
notebook's own kernel would.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from nbdeploy import names
from nbdeploy.exceptions import JobError

#: Runs listed by ``summary`` (newest first).
RECENT_RUNS = 50


def notebook_path(root: str | Path, relative: Any) -> Path:
    """A notebook the browser named, relative to the server's ``root``, checked."""
    if not isinstance(relative, str) or not relative.endswith(".ipynb"):
        raise JobError("name a notebook (a path ending in .ipynb) relative to the lab's folder")
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if base != path and base not in path.parents:
        raise JobError("the notebook must be inside the folder JupyterLab serves")
    if not path.is_file():
        raise JobError(f"notebook {relative!r} not found; save it first")
    return path


def parameters(root: str | Path, relative: Any) -> dict[str, Any]:
    """The notebook's ``parameters`` cell as typed fields (papermill's inspection)."""
    import papermill

    from nbdeploy.runner import parameter_type

    path = notebook_path(root, relative)
    declared = papermill.inspect_notebook(str(path))
    fields = [
        {
            "name": name,
            "type": parameter_type(info),
            "default": info.get("default"),
            "help": info.get("help") or "",
        }
        for name, info in declared.items()
    ]
    note = None if declared else _NO_PARAMETERS.format(name=path.name)
    return {"notebook": relative, "name": _suggest_name(path.stem), "parameters": fields,
            "note": note}  # fmt: skip


_NO_PARAMETERS = (
    "{name} has no cell tagged 'parameters': tag the cell that sets its inputs "
    "(cell toolbar or Property Inspector > Cell Tags: parameters), save, and try again"
)


def _suggest_name(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip("-._")
    return (cleaned or "job")[:128]


def preview(every: Any = None, cron: Any = None, count: int = 3) -> dict[str, Any]:
    """The next ``count`` run times of an interval or a cron expression (ISO, local)."""
    from nbdeploy import scheduler
    from nbdeploy.cron import Cron
    from nbdeploy.models import ScheduledJob

    every_s, expr = _when(every, cron)
    if expr is not None:
        Cron(expr)
    now = time.time()
    job = ScheduledJob("preview", "", every_s=every_s, cron=expr, created=now)
    times = scheduler.next_times(job, now, count)
    return {"next_runs": [_iso(t) for t in times]}


def _when(every: Any, cron: Any) -> tuple[float | None, str | None]:
    from nbdeploy import scheduler

    if bool(every) == bool(cron):
        raise JobError("choose an interval (e.g. 30m, 6h, 1d) or a cron expression, not both")
    if every:
        if not isinstance(every, str | int | float) or isinstance(every, bool):
            raise JobError("the interval is text like '30m', '6h' or '1d'")
        return scheduler.parse_every(every), None
    if not isinstance(cron, str):
        raise JobError("the cron expression is text like '0 6 * * *'")
    return None, cron.strip()


def create(root: str | Path, body: dict[str, Any]) -> dict[str, Any]:
    """Create a schedule from the dialog: checked whole before anything is stored."""
    from nbdeploy import scheduler

    path = notebook_path(root, body.get("notebook"))
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise JobError("parameters must be an object of name: value")
    name = body.get("name") or path.stem
    if not isinstance(name, str):
        raise JobError("the job name must be text")
    names.check(name, "job")
    every, cron = body.get("every"), body.get("cron")
    _when(every, cron)
    import papermill

    if not papermill.inspect_notebook(str(path)):
        raise JobError(_NO_PARAMETERS.format(name=path.name))
    job = scheduler.schedule(
        path,
        every=every or None,
        cron=cron or None,
        parameters=params,
        name=name,
        cwd=path.parent,
        paused=body.get("paused") is True,
        catchup=body.get("catchup") is True,
        replace=False,
    )
    return _schedule_json(job, {})


def summary(limit: int = RECENT_RUNS) -> dict[str, Any]:
    """Every schedule with its next run and last status, and the recent runs."""
    from nbdeploy import runner, scheduler

    last = scheduler.last_statuses()
    schedules = [_schedule_json(job, last) for job in scheduler._all()]
    frame = runner.jobs(limit)
    runs = []
    for row in frame.to_dict("records"):
        runs.append(
            {
                "run_id": row["run_id"] if isinstance(row["run_id"], str) else None,
                "job": row["name"],
                "status": row["status"],
                "started": _iso_ts(row["started"]),
                "scheduled_for": _iso_ts(row["scheduled_for"]),
                "duration_s": _finite(row["duration_s"]),
                "output_path": row["output_path"] if isinstance(row["output_path"], str) else None,
                "error": _error_line(row["error"]),
                "failed_cell": _int(row["failed_cell"]),
                "produced": [p for p in str(row["produced"] or "").split(",") if p],
            }
        )
    return {"schedules": schedules, "runs": runs}


#: Where executed notebooks the lab cannot reach (outside its folder, or in a hidden
#: one such as ``.nbdeploy``) are copied to be opened, under the lab's folder.
OPENED_RUNS = "nbdeploy-runs"


def open_run(root: str | Path, run_id: str) -> dict[str, Any]:
    """A run's executed notebook as a path relative to the lab's folder, and its failing
    cell. Fetched from the registry when this machine lacks it (a teammate's run)."""
    import shutil

    from nbdeploy import registry

    try:
        run = registry.client().get_run(run_id)
    except Exception:
        raise JobError(f"no job run {run_id!r} in this registry") from None
    tags = run.data.tags
    if tags.get("nbdeploy.kind") != "job":
        raise JobError(f"{run_id!r} is not a job run")
    output = tags.get("nbdeploy.job.output")
    if not output:
        raise JobError(f"job run {run_id} kept no executed notebook (it never started)")
    base, path = Path(root).resolve(), Path(output)
    if not path.is_file():
        folder = registry.client().download_artifacts(run_id, "notebook")
        found = sorted(Path(folder).glob("*.ipynb"))
        if not found:
            raise JobError(f"the executed notebook of job run {run_id} is gone")
        path = found[0]
    path = path.resolve()
    if not _reachable(base, path):
        target = base / OPENED_RUNS / path.name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, target)
        path = target
    cell = tags.get("nbdeploy.job.failed_cell")
    return {"path": path.relative_to(base).as_posix(),
            "failed_cell": int(cell) if cell is not None else None}  # fmt: skip


def _reachable(base: Path, path: Path) -> bool:
    """Whether the lab can open ``path``: inside its folder and not in a hidden one."""
    if base not in path.parents:
        return False
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def _schedule_json(job: Any, last: dict[str, str]) -> dict[str, Any]:
    return {
        "name": job.name,
        "notebook": job.notebook,
        "every": _every_text(job.every_s),
        "cron": job.cron,
        "next_run": None if job.paused else _iso(job.next_run),
        "last_status": last.get(job.name),
        "paused": job.paused,
        "catchup": job.catchup,
        "parameters": job.parameters,
    }


def _every_text(seconds: float | None) -> str | None:
    if not seconds:
        return None
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))


def _iso_ts(value: Any) -> str | None:
    try:
        return None if value is None or value != value else value.isoformat()
    except AttributeError:
        return None


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 3) if math.isfinite(number) else None


def _error_line(error: Any) -> str | None:
    if not isinstance(error, str) or not error.strip():
        return None
    return error.strip().splitlines()[-1][:300]


def _int(value: Any) -> int | None:
    number = _finite(value)
    return None if number is None else int(number)
