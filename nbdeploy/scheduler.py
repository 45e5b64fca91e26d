"""Recurring jobs: ``nd.schedule`` and the embedded scheduler.

A job spec lives in ``$NBDEPLOY_HOME/jobs/schedule.db`` (SQLite): notebook,
parameters, ``every`` or a 5-field ``cron`` expression, the working directory it
was scheduled from, timeout, kernel, and whether it is paused or catches up.

Every scheduled time a job is run for is first *claimed* with an insert under a
unique (job, time) key, and runs only if that insert won: however often it is
triggered and however many schedulers run, each scheduled time runs at most once.
Claims persist, so a restart neither repeats a run nor loses one that is due; a run
whose process died is marked ``abandoned`` rather than repeated.

``nbdeploy scheduler`` runs each due job in a process of its own, up to
``NBDEPLOY_MAX_CONCURRENT_JOBS`` at once, so a long retrain delays no other job. A
job never overlaps itself: a time that comes while it still runs is claimed as
``skipped`` (listed by ``nd.jobs()``). After downtime only the latest due time runs,
unless the job was scheduled with ``catchup=True``: then missed times run one after
another, oldest first. A finished run posts ``job_succeeded`` / ``job_failed`` to
``NBDEPLOY_ALERT_WEBHOOK`` when it is set.

The same spec exports (``nbdeploy.exports.jobs``) to a crontab line, a Kubernetes
CronJob, or an Airflow DAG that runs the notebook with ``PapermillOperator``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbdeploy import config, durations, names
from nbdeploy.cron import Cron
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
# Columns added after the first release; older schedule.db files get them on open.
_ADDED = {"paused": "INTEGER NOT NULL DEFAULT 0", "catchup": "INTEGER NOT NULL DEFAULT 0",
          "since": "REAL"}  # fmt: skip
_JOB_COLS = "name, notebook, parameters, every_s, cron, cwd, timeout, kernel, created, paused, "
_JOB_COLS += "catchup, since"
#: Missed times a catching-up job runs at most after downtime (the oldest are dropped).
MAX_CATCHUP = 1000


def _db() -> sqlite3.Connection:
    folder = config.ensure_home() / "jobs"
    folder.mkdir(exist_ok=True)
    db = sqlite3.connect(folder / "schedule.db", timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    for column, kind in _ADDED.items():
        if column not in have:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
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
    catchup: bool = False,
    paused: bool = False,
    replace: bool = True,
    cwd: str | os.PathLike[str] | None = None,
) -> ScheduledJob:
    """Store a recurring job for the embedded scheduler (``nbdeploy scheduler``).

    Exactly one of ``every`` (``"30m"``, ``"6h"``, ``"1d"``) or ``cron`` (5 fields,
    e.g. ``"*/5 * * * *"``, local time). The notebook and parameters are checked
    now; relative paths in parameters resolve from the current directory (or
    ``cwd``), where the job will run. ``catchup=True`` runs the times missed while
    no scheduler ran, oldest first; ``paused=True`` stores the job without running
    it until ``resume(name)``. Scheduling an existing name replaces it, unless
    ``replace=False`` (then a taken name is refused).
    """
    from nbdeploy import runner

    if (every is None) == (cron is None):
        raise JobError("give exactly one of every='30m' or cron='*/5 * * * *'")
    every_s = parse_every(every) if every is not None else None
    if cron is not None:
        Cron(cron)  # refuse a malformed expression now, not at 3 a.m.
    if timeout is not None and not timeout > 0:
        raise JobError(f"timeout must be a positive number of seconds, not {timeout!r}")
    params = dict(parameters or {})
    workdir = Path(cwd).resolve() if cwd is not None else Path.cwd()
    path = runner.resolve_notebook(notebook, workdir)
    runner.check_parameters(path, params)
    packaged = path.parent == runner.TEMPLATES and not os.fspath(notebook).endswith(".ipynb")
    spec = os.fspath(notebook) if packaged else str(path)
    name = names.check(path.stem if name is None else name, "job")
    now = time.time()
    row = (name, spec, json.dumps(params), every_s, cron, str(workdir), timeout, kernel, now)
    with _db() as db:
        if not replace and db.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone():
            raise JobError(f"a job named {name!r} is scheduled already; choose another name")
        db.execute(
            f"INSERT OR REPLACE INTO jobs ({_JOB_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (*row, int(paused), int(catchup), now),
        )
    return get(name)


def get(name: str) -> ScheduledJob:
    row = _db().execute(f"SELECT {_JOB_COLS} FROM jobs WHERE name = ?", (name,)).fetchone()
    if row is None:
        known = ", ".join(j.name for j in _all()) or "none"
        raise JobError(f"no scheduled job named {name!r} (scheduled: {known})")
    return _job(row)


def _job(row: tuple[Any, ...]) -> ScheduledJob:
    name, notebook, params, every_s, cron, cwd, timeout, kernel, created, paused, catchup, since = (
        row
    )
    job = ScheduledJob(
        name, notebook, json.loads(params), every_s, cron, cwd, timeout, kernel, created
    )
    return dataclasses.replace(
        job,
        next_run=next_time(job, time.time()),
        paused=bool(paused),
        catchup=bool(catchup),
        since=since if since is not None else created,
    )


def _all() -> list[ScheduledJob]:
    return [_job(r) for r in _db().execute(f"SELECT {_JOB_COLS} FROM jobs ORDER BY name")]


def scheduled() -> pd.DataFrame:
    """The stored job specs, with each one's last status."""
    import pandas as pd

    last = last_statuses()
    columns = [*ScheduledJob.__annotations__, "last_status"]
    rows = [{**j.__dict__, "last_status": last.get(j.name)} for j in _all()]
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("created", "next_run", "since"):
        frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
    return frame


def unschedule(name: str) -> None:
    """Remove a scheduled job (its past runs stay recorded)."""
    get(name)
    with _db() as db:
        db.execute("DELETE FROM jobs WHERE name = ?", (name,))


def pause(name: str) -> ScheduledJob:
    """Stop running ``name`` at its times until ``resume(name)``; a running run goes on."""
    get(name)
    _db().execute("UPDATE jobs SET paused = 1 WHERE name = ?", (name,))
    return get(name)


def resume(name: str) -> ScheduledJob:
    """Run ``name`` at its times again; times that passed while paused are not caught up."""
    get(name)
    _db().execute("UPDATE jobs SET paused = 0, since = ? WHERE name = ?", (time.time(), name))
    return get(name)


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


def next_times(job: ScheduledJob, now: float, count: int = 3) -> list[float]:
    """The next ``count`` scheduled times after ``now``."""
    times: list[float] = []
    for _ in range(count):
        now = next_time(job, now)
        times.append(now)
    return times


def _missed(job: ScheduledJob, db: sqlite3.Connection, now: float) -> list[float]:
    """A catching-up job's unclaimed times since its last claim, oldest first."""
    (last,) = db.execute(
        "SELECT MAX(scheduled_for) FROM claims WHERE name = ?", (job.name,)
    ).fetchone()
    after = max(last or 0.0, job.since or job.created)
    times: list[float] = []
    when = next_time(job, after)
    while when <= now:
        times.append(when)
        when = next_time(job, when)
    return times[-MAX_CATCHUP:]


def _running(db: sqlite3.Connection, name: str | None = None) -> list[tuple[str, float, int]]:
    """Claims whose run is still going (its process alive): (job, time, pid)."""
    sql = "SELECT name, scheduled_for, pid FROM claims WHERE status = 'running'"
    rows = db.execute(sql + (" AND name = ?" if name else ""), (name,) if name else ()).fetchall()
    return [(n, w, p) for n, w, p in rows if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError, OSError):  # our own finished child: reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def plan(now: float | None = None) -> list[tuple[ScheduledJob, float, str]]:
    """What is due at ``now``: (job, scheduled time, "run" | "skip") per job at most.

    A job that is still running has its due time skipped, never overlapped; a
    catching-up job is given its oldest missed time.
    """
    now = time.time() if now is None else now
    db = _db()
    out: list[tuple[ScheduledJob, float, str]] = []
    for job in _all():
        if job.paused:
            continue
        if job.catchup:
            missed = _missed(job, db, now)
            when: float | None = missed[0] if missed else None
        else:
            when = due_time(job, now)
            if when is not None and when < (job.since or job.created):
                when = None  # came while paused
        if when is None:
            continue
        if db.execute(
            "SELECT 1 FROM claims WHERE name = ? AND scheduled_for = ?", (job.name, when)
        ).fetchone():
            continue
        out.append((job, when, "skip" if _running(db, job.name) else "run"))
    return out


def claim(name: str, scheduled_for: float, status: str = "running", pid: int = 0) -> bool:
    """Take (job, time) for this process; False when anyone took it before."""
    cur = _db().execute(
        "INSERT OR IGNORE INTO claims VALUES (?,?,?,?,?,NULL)",
        (name, scheduled_for, time.time(), pid or os.getpid(), status),
    )
    return cur.rowcount == 1


def _run(job: ScheduledJob, scheduled_for: float, run_id: str | None = None) -> JobRun:
    from nbdeploy import runner

    db = _db()
    db.execute(
        "UPDATE claims SET pid = ? WHERE name = ? AND scheduled_for = ?",
        (os.getpid(), job.name, scheduled_for),
    )
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
            run_id=run_id,
        )
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "refused"
        db.execute(
            "UPDATE claims SET status = ? WHERE name = ? AND scheduled_for = ?",
            (status, job.name, scheduled_for),
        )
        if run_id is not None:
            runner.abandon_record(run_id, f"{type(exc).__name__}: {exc}")
        raise
    db.execute(
        "UPDATE claims SET status = ?, run_id = ? WHERE name = ? AND scheduled_for = ?",
        (result.status, result.run_id, job.name, scheduled_for),
    )
    _announce(job, result)
    return result


def _announce(job: ScheduledJob, run: JobRun) -> None:
    """Post ``job_succeeded`` / ``job_failed`` to the alert webhook, when one is set.

    The run is recorded before this (it is the record); the outcome is kept on it as
    the tag ``nbdeploy.job.webhook``, in words that never include the URL.
    """
    url = config.settings().alert_webhook
    if not url:
        return
    from nbdeploy import registry, webhooks

    last_line = (run.error or "").strip().splitlines()[-1:] or [""]
    text = f"nbdeploy job {job.name} {run.status}" + (f": {last_line[0]}" if last_line[0] else "")
    event = {
        "event": f"job_{run.status}",
        "job": job.name,
        "run_id": run.run_id,
        "status": run.status,
        "duration_s": run.duration_s,
        "registered": list(run.produced),
        "promoted": list(run.promoted),
        "error": last_line[0] or None,
        "text": text,
    }
    outcome = webhooks.send(url, event)
    with contextlib.suppress(Exception):  # the registry may be down; the event was sent
        registry.client().set_tag(run.run_id, "nbdeploy.job.webhook", outcome)
    if not outcome.startswith("sent"):
        print(f"nbdeploy scheduler: {job.name}: webhook {outcome}", file=sys.stderr)


def run_due(now: float | None = None) -> list[JobRun]:
    """Run what is due now in this process, one after another (``--once``, tests).

    The same rules as the scheduler loop: each (job, time) once, a running job's
    time skipped, paused jobs left alone, catching-up jobs oldest first.
    """
    done = []
    for job, when, action in plan(now):
        if action == "skip":
            claim(job.name, when, "skipped")
            continue
        if not claim(job.name, when):
            continue
        try:
            done.append(_run(job, when))
        except JobError as exc:  # the spec went stale (notebook moved): say so, go on
            print(f"nbdeploy scheduler: {job.name}: {exc}", file=sys.stderr)
        except Exception as exc:  # e.g. the registry is down: the other jobs still run
            print(f"nbdeploy scheduler: {job.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return done


def trigger(
    name: str, at: float | None = None, run_id: str | None = None, *, claimed: bool = False
) -> JobRun | None:
    """Run a scheduled job now; None if the moment ``at`` was claimed already.

    Callers that may fire twice for one cause (two alert checks of the same window)
    pass the same ``at``, so the job runs once. With ``claimed`` (the scheduler loop)
    or ``run_id`` (a record made by :func:`start_run`) the claim was taken already.
    """
    job = get(name)
    when = round(time.time(), 3) if at is None else at
    if run_id is not None or claimed:
        return _run(job, when, run_id)
    return _run(job, when) if claim(name, when) else None


def start_run(name: str, at: float | None = None) -> str:
    """Start a run of ``name`` now in a process of its own; returns its run id at once.

    The run is recorded (status ``running``) before this returns, so ``nd.jobs()``
    and the lab panel list it under that id straight away.
    """
    from nbdeploy import runner

    job = get(name)
    when = round(time.time(), 3) if at is None else at
    if _running(_db(), name):
        raise JobError(f"job {name!r} is running already; wait for it to finish")
    if not claim(name, when):
        raise JobError(f"job {name!r} was started for this moment already")
    try:
        run_id = runner.start_record(job.notebook, job.parameters, job.kernel, name, when, job.cwd)
        child = _spawn(job.name, when, run_id)
    except BaseException:
        _db().execute(
            "UPDATE claims SET status = 'refused' WHERE name = ? AND scheduled_for = ?",
            (name, when),
        )
        raise
    _db().execute(
        "UPDATE claims SET pid = ?, run_id = ? WHERE name = ? AND scheduled_for = ?",
        (child.pid, run_id, name, when),
    )
    return run_id


def _spawn(name: str, when: float, run_id: str | None) -> subprocess.Popen[bytes]:
    """A process running the claimed (job, time); it records itself unless ``run_id``."""
    folder = config.ensure_home() / "jobs"
    out = (folder / "runner.log").open("ab")
    argv = [sys.executable, "-m", "nbdeploy.cli", "scheduler", "--trigger", name]
    argv += ["--at", repr(when), "--claimed"]
    argv += ["--run-id", run_id] if run_id else []
    with out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=config.child_env(), start_new_session=True,
        )  # fmt: skip


def last_statuses() -> dict[str, str]:
    """Each job's latest claimed status (running, succeeded, failed, skipped, ...)."""
    rows = _db().execute(
        "SELECT name, status FROM claims c WHERE scheduled_for = "
        "(SELECT MAX(scheduled_for) FROM claims WHERE name = c.name)"
    )
    return dict(rows.fetchall())


def skipped(limit: int = 1000) -> list[tuple[str, float, float]]:
    """Skipped times, newest first: (job, scheduled time, when it was skipped)."""
    return (
        _db()
        .execute(
            "SELECT name, scheduled_for, claimed_at FROM claims WHERE status = 'skipped' "
            "ORDER BY scheduled_for DESC LIMIT ?",
            (limit,),
        )
        .fetchall()
    )


def _recover() -> None:
    """After a crash: claims still 'running' whose process is gone are abandoned."""
    db = _db()
    for name, when, pid in db.execute(
        "SELECT name, scheduled_for, pid FROM claims WHERE status = 'running'"
    ).fetchall():
        if pid == os.getpid() or not _alive(pid):
            _abandon(name, when)


_GONE = "the run's process ended before it finished (killed, or the machine went down)"


def _abandon(name: str, when: float) -> None:
    """Mark a run whose process died: its claim, and its record when it had one."""
    db = _db()
    row = db.execute(
        "SELECT run_id FROM claims WHERE name = ? AND scheduled_for = ? AND status = 'running'",
        (name, when),
    ).fetchone()
    db.execute(
        "UPDATE claims SET status = 'abandoned' WHERE name = ? AND scheduled_for = ?", (name, when)
    )
    if row and row[0]:
        from nbdeploy import runner

        with contextlib.suppress(Exception):  # the registry may be down too; the claim says it
            runner.abandon_record(row[0], _GONE)


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class Dispatcher:
    """The scheduler loop's state: which runs it started and is waiting for."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # (job, scheduled time) -> (process, start time) of the runs this loop started
        self.children: dict[tuple[str, float], tuple[subprocess.Popen[bytes], float]] = {}
        # job -> times skipped while its current run goes on: one line per stretch
        self.skips: dict[str, int] = {}

    def tick(self, now: float | None = None) -> None:
        self.reap()
        db = _db()
        for job, when, action in plan(now):
            if action == "skip":
                if claim(job.name, when, "skipped"):
                    self.skips[job.name] = self.skips.get(job.name, 0) + 1
                    if self.skips[job.name] == 1:  # the rest of the stretch: counted at its end
                        print(f"{_stamp()} {job.name}: skipped {_clock(when)} (still running)",
                              flush=True)  # fmt: skip
                continue
            if len(_running(db)) >= self.limit:
                continue  # stays due; the next tick looks again
            if not claim(job.name, when):
                continue  # another scheduler took it
            try:
                child = _spawn(job.name, when, None)
            except OSError as exc:
                db.execute(
                    "UPDATE claims SET status = 'refused' WHERE name = ? AND scheduled_for = ?",
                    (job.name, when),
                )
                print(f"{_stamp()} {job.name}: not started: {exc}", flush=True)
                continue
            db.execute(
                "UPDATE claims SET pid = ? WHERE name = ? AND scheduled_for = ?",
                (child.pid, job.name, when),
            )
            self.children[(job.name, when)] = (child, time.time())
            print(f"{_stamp()} {job.name}: started for {_clock(when)} (pid {child.pid})",
                  flush=True)  # fmt: skip

    def reap(self) -> None:
        db = _db()
        for (name, when), (child, started) in list(self.children.items()):
            if child.poll() is None:
                continue
            del self.children[(name, when)]
            row = db.execute(
                "SELECT status, run_id FROM claims WHERE name = ? AND scheduled_for = ?",
                (name, when),
            ).fetchone()
            if row and row[0] == "running":
                _abandon(name, when)
            status = row[0] if row and row[0] != "running" else "abandoned"
            took = time.time() - started
            skipped = self.skips.pop(name, 0)
            more = f"; {skipped} times skipped while it ran" if skipped > 1 else ""
            print(f"{_stamp()} {name}: {status} (run {row[1] if row else None}, {took:.1f} s"
                  f"{more})", flush=True)  # fmt: skip


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def loop(*, interval: float = 5.0, once: bool = False) -> None:
    """The embedded scheduler: ``nbdeploy scheduler`` runs this in the foreground."""
    _recover()
    pidfile = config.ensure_home() / "jobs" / "scheduler.pid"
    pidfile.write_text(str(os.getpid()))
    limit = config.settings().max_concurrent_jobs
    print(f"{_stamp()} nbdeploy scheduler: up to {limit} jobs at once", flush=True)
    try:
        if once:
            for run in run_due():
                print(f"{_stamp()} {run.name}: {run.status} (run {run.run_id}) {run.error or ''}")
            return
        dispatcher = Dispatcher(limit)
        while True:
            try:
                dispatcher.tick()
            except sqlite3.Error as exc:  # e.g. the disk is full: say so, try again later
                print(f"{_stamp()} nbdeploy scheduler: {type(exc).__name__}: {exc}", flush=True)
            waits = [j.next_run - time.time() for j in _all() if not j.paused]
            wait = min([*waits, interval] if not dispatcher.children else [*waits, 1.0])
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
