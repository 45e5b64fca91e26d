"""Recurring jobs: ``nd.schedule``, the embedded scheduler, and exports to cron/Airflow.

A job spec lives in ``$NBDEPLOY_HOME/jobs/schedule.db`` (SQLite): notebook,
parameters, ``every`` or a 5-field ``cron`` expression, the working directory it
was scheduled from, timeout and kernel. ``nbdeploy scheduler`` wakes up, and for
each job takes the latest scheduled time that is due. It first *claims* that
(job, time) pair with an insert under a unique key, and runs the job only if its
insert won: however often it is triggered, and however many schedulers run, each
scheduled time runs at most once. Claims persist, so a restart neither repeats a
run nor loses one that is due; a run interrupted by a crash is marked
``abandoned`` rather than repeated. Missed times are not backfilled: after
downtime only the latest due time runs (Airflow's ``catchup=False``).

The same spec exports to a crontab line, a Kubernetes CronJob, or an Airflow DAG
that runs the notebook with ``PapermillOperator``.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbdeploy import config, durations, names
from nbdeploy.cron import Cron, every_as_cron
from nbdeploy.exceptions import JobError
from nbdeploy.models import JobRun, ScheduledJob

if TYPE_CHECKING:
    import pandas as pd

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY, notebook TEXT NOT NULL, parameters TEXT NOT NULL,
    every_s REAL, cron TEXT, cwd TEXT NOT NULL, timeout REAL, kernel TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    name TEXT NOT NULL, scheduled_for REAL NOT NULL, claimed_at REAL NOT NULL,
    pid INTEGER NOT NULL, status TEXT NOT NULL, run_id TEXT,
    PRIMARY KEY (name, scheduled_for)
);
"""


def _db() -> sqlite3.Connection:
    folder = config.ensure_home() / "jobs"
    folder.mkdir(exist_ok=True)
    db = sqlite3.connect(folder / "schedule.db", timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


def parse_every(every: str | float) -> float:
    """``"30m"``, ``"6h"``, ``"1d"``, ``"90s"``, ``"2w"`` (or seconds) -> seconds."""
    if isinstance(every, int | float) and not isinstance(every, bool):
        seconds = float(every)
    else:
        parsed = durations.seconds(every)
        if parsed is None:
            raise JobError(f"every={every!r} is not an interval; write e.g. '30m', '6h', '1d'")
        seconds = parsed
    if seconds < 1:
        raise JobError(f"every={every!r} is shorter than a second")
    return seconds


def schedule(
    notebook: str | os.PathLike[str],
    *,
    every: str | float | None = None,
    cron: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    name: str | None = None,
    timeout: float | None = None,
    kernel: str | None = None,
) -> ScheduledJob:
    """Store a recurring job for the embedded scheduler (``nbdeploy scheduler``).

    Exactly one of ``every`` (``"30m"``, ``"6h"``, ``"1d"``) or ``cron`` (5 fields,
    e.g. ``"*/5 * * * *"``, local time). The notebook and parameters are checked
    now; relative paths in parameters resolve from the current directory, where
    the job will run. Scheduling an existing name replaces it.
    """
    from nbdeploy import runner

    if (every is None) == (cron is None):
        raise JobError("give exactly one of every='30m' or cron='*/5 * * * *'")
    every_s = parse_every(every) if every is not None else None
    if cron is not None:
        Cron(cron)  # refuse a malformed expression now, not at 3 a.m.
    params = dict(parameters or {})
    path = runner.resolve_notebook(notebook)
    runner.check_parameters(path, params)
    packaged = path.parent == runner.TEMPLATES and not os.fspath(notebook).endswith(".ipynb")
    spec = os.fspath(notebook) if packaged else str(path)
    name = names.check(path.stem if name is None else name, "job")
    with _db() as db:
        db.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?)",
            (
                name,
                spec,
                json.dumps(params),
                every_s,
                cron,
                str(Path.cwd()),
                timeout,
                kernel,
                time.time(),
            ),
        )
    return get(name)


def get(name: str) -> ScheduledJob:
    row = _db().execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
    if row is None:
        known = ", ".join(j.name for j in _all()) or "none"
        raise JobError(f"no scheduled job named {name!r} (scheduled: {known})")
    return _job(row)


def _job(row: tuple[Any, ...]) -> ScheduledJob:
    name, notebook, params, every_s, cron, cwd, timeout, kernel, created = row
    job = ScheduledJob(
        name, notebook, json.loads(params), every_s, cron, cwd, timeout, kernel, created
    )
    return ScheduledJob(**{**job.__dict__, "next_run": next_time(job, time.time())})


def _all() -> list[ScheduledJob]:
    return [_job(r) for r in _db().execute("SELECT * FROM jobs ORDER BY name")]


def scheduled() -> pd.DataFrame:
    """The stored job specs."""
    import pandas as pd

    frame = pd.DataFrame([j.__dict__ for j in _all()], columns=list(ScheduledJob.__annotations__))
    for col in ("created", "next_run"):
        frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
    return frame


def unschedule(name: str) -> None:
    get(name)
    with _db() as db:
        db.execute("DELETE FROM jobs WHERE name = ?", (name,))


def due_time(job: ScheduledJob, now: float) -> float | None:
    """The latest scheduled time of ``job`` at or before ``now`` (after its creation)."""
    if job.every_s:
        k = int((now - job.created) // job.every_s)
        return job.created + k * job.every_s if k >= 1 else None
    assert job.cron is not None
    return Cron(job.cron).previous(now, after=job.created)


def next_time(job: ScheduledJob, now: float) -> float:
    if job.every_s:
        k = int((now - job.created) // job.every_s) + 1
        return job.created + k * job.every_s
    assert job.cron is not None
    return Cron(job.cron).next(now)


def claim(name: str, scheduled_for: float) -> bool:
    """Take (job, time) for this process; False when anyone took it before."""
    cur = _db().execute(
        "INSERT OR IGNORE INTO claims VALUES (?,?,?,?,?,NULL)",
        (name, scheduled_for, time.time(), os.getpid(), "running"),
    )
    return cur.rowcount == 1


def _run(job: ScheduledJob, scheduled_for: float) -> JobRun:
    from nbdeploy import runner

    db = _db()
    try:
        result = runner.run_job(
            job.notebook,
            job.parameters,
            timeout=job.timeout,
            kernel=job.kernel,
            cwd=job.cwd,
            progress=False,
            name=job.name,
            scheduled_for=scheduled_for,
        )
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "refused"
        db.execute(
            "UPDATE claims SET status = ? WHERE name = ? AND scheduled_for = ?",
            (status, job.name, scheduled_for),
        )
        raise
    db.execute(
        "UPDATE claims SET status = ?, run_id = ? WHERE name = ? AND scheduled_for = ?",
        (result.status, result.run_id, job.name, scheduled_for),
    )
    return result


def run_due(now: float | None = None) -> list[JobRun]:
    """Run every job whose latest scheduled time is due and unclaimed; once per time."""
    now = time.time() if now is None else now
    done = []
    for job in _all():
        when = due_time(job, now)
        if when is not None and claim(job.name, when):
            try:
                done.append(_run(job, when))
            except JobError as exc:  # the spec went stale (notebook moved): say so, go on
                print(f"nbdeploy scheduler: {job.name}: {exc}", file=sys.stderr)
            except Exception as exc:  # e.g. the registry is down: the other jobs still run
                print(
                    f"nbdeploy scheduler: {job.name}: {type(exc).__name__}: {exc}", file=sys.stderr
                )
    return done


def trigger(name: str, at: float | None = None) -> JobRun | None:
    """Run a scheduled job now; None if the moment ``at`` was claimed already.

    Callers that may fire twice for one cause (two alert checks of the same window)
    pass the same ``at``, so the job runs once.
    """
    job = get(name)
    when = round(time.time() if at is None else at, 3)
    return _run(job, when) if claim(name, when) else None


def _recover() -> None:
    """After a crash: claims still 'running' whose process is gone are abandoned."""
    db = _db()
    for name, when, pid in db.execute(
        "SELECT name, scheduled_for, pid FROM claims WHERE status = 'running'"
    ).fetchall():
        try:
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except OSError:
            alive = False
        if not alive:
            db.execute(
                "UPDATE claims SET status = 'abandoned' WHERE name = ? AND scheduled_for = ?",
                (name, when),
            )


def loop(*, interval: float = 5.0, once: bool = False) -> None:
    """The embedded scheduler: ``nbdeploy scheduler`` runs this in the foreground."""
    _recover()
    pidfile = config.ensure_home() / "jobs" / "scheduler.pid"
    pidfile.write_text(str(os.getpid()))
    try:
        while True:
            for run in run_due():
                print(
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')} {run.name}: {run.status} "
                    f"({run.run_id}) {run.error or ''}",
                    flush=True,
                )
            if once:
                return
            jobs = _all()
            wait = min([j.next_run - time.time() for j in jobs] + [interval])
            time.sleep(max(wait, 0.2))
    finally:
        if pidfile.is_file() and pidfile.read_text() == str(os.getpid()):
            pidfile.unlink()


def start() -> int:
    """Start ``nbdeploy scheduler`` in the background (its own session); returns its pid."""
    pid = running()
    if pid:
        return pid
    log = (config.ensure_home() / "jobs" / "scheduler.log").open("ab")
    child = subprocess.Popen(
        [sys.executable, "-m", "nbdeploy.cli", "scheduler"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=config.child_env(),
        start_new_session=True,
    )
    return child.pid


def running() -> int | None:
    """The pid of a live scheduler for this home, if any."""
    try:
        pid = int((config.settings().home / "jobs" / "scheduler.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


# -- exports ------------------------------------------------------------------------


def _notebook_path(job: ScheduledJob) -> str:
    from nbdeploy import runner

    return str(runner.resolve_notebook(job.notebook, Path(job.cwd)))


def _cron_of(job: ScheduledJob) -> str:
    return job.cron or every_as_cron(job.every_s or 0)


def export_cron(name: str) -> str:
    """A crontab line that runs the job with ``nbdeploy job`` from its directory."""
    job = get(name)
    exe = Path(sys.executable).with_name("nbdeploy")
    args = [str(exe), "job", job.notebook]
    for key, value in job.parameters.items():
        args += ["-p", key, str(value)]
    if job.timeout:
        args += ["--timeout", f"{job.timeout:g}"]
    if job.kernel:
        args += ["--kernel", job.kernel]
    home = config.settings().home
    command = " ".join(shlex.quote(a) for a in args)
    log = shlex.quote(str(home / "jobs" / f"{name}.cron.log"))
    return (
        f"{_cron_of(job)} cd {shlex.quote(job.cwd)} && "
        f"NBDEPLOY_HOME={shlex.quote(str(home))} {command} >> {log} 2>&1"
    )


def export_kubernetes(name: str, *, image: str = "nbdeploy:latest") -> str:
    """A Kubernetes CronJob manifest running the job with ``nbdeploy job`` in ``image``."""
    job = get(name)
    args = ["nbdeploy", "job", job.notebook]
    for key, value in job.parameters.items():
        args += ["-p", key, str(value)]
    if job.timeout:
        args += ["--timeout", f"{job.timeout:g}"]
    command = ", ".join(json.dumps(a) for a in args)
    deadline = f"\n          activeDeadlineSeconds: {int(job.timeout) + 60}" if job.timeout else ""
    return f"""apiVersion: batch/v1
kind: CronJob
metadata:
  name: nbdeploy-{name.lower().replace("_", "-").replace(".", "-")}
  labels: {{app.kubernetes.io/managed-by: nbdeploy}}
spec:
  schedule: "{_cron_of(job)}"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never{deadline}
          containers:
            - name: job
              image: {image}
              command: [{command}]
              env:
                - {{name: NBDEPLOY_HOME, value: /data/nbdeploy}}
                # point these at the shared registry and log when a team outgrows one machine
                - {{name: MLFLOW_TRACKING_URI, value: ""}}
"""


def export_airflow(name: str) -> str:
    """An Airflow DAG file running the job's notebook with ``PapermillOperator``."""
    job = get(name)
    notebook = _notebook_path(job)
    home = str(config.settings().home)
    output = f"{home}/jobs/runs/{name}-{{{{ ts_nodash }}}}.ipynb"
    timeout = f"timedelta(seconds={job.timeout:g})" if job.timeout else "None"
    when = repr(job.cron) if job.cron else f"timedelta(seconds={job.every_s:g})"
    return f'''"""Airflow DAG generated by nbdeploy from the scheduled job {name!r}."""

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.papermill.operators.papermill import PapermillOperator

# the job kernel must see the same registry and audit log as the notebook that scheduled it
os.environ.setdefault("NBDEPLOY_HOME", {home!r})

with DAG(
    dag_id={"nbdeploy_" + name.replace("-", "_").replace(".", "_")!r},
    schedule={when},
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["nbdeploy"],
) as dag:
    PapermillOperator(
        task_id="run_notebook",
        input_nb={notebook!r},
        output_nb={output!r},
        parameters={job.parameters!r},
        kernel_name={job.kernel!r},
        # scheduled from {job.cwd}: relative paths in parameters meant that directory
        execution_timeout={timeout},
    )
'''
