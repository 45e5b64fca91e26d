"""The embedded scheduler: concurrent runs in their own processes, no self-overlap,
catch-up, pause/resume, and job events, with real notebooks on the test kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

import nbdeploy as nd
from nbdeploy import scheduler
from nbdeploy.exceptions import JobError
from tests.conftest import kernel_name
from tests.test_jobs import _notebook

pytestmark = pytest.mark.slow


@pytest.fixture
def sleeper(home: Path, tmp_path: Path) -> Path:
    return _notebook(
        tmp_path / "sleeper.ipynb",
        "seconds = 0.0\nfail = False",
        "import time\ntime.sleep(seconds)",
        "if fail:\n    raise ValueError('the data is late')",
    )


def _wait(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_running_job_has_its_next_time_skipped_never_overlapped(sleeper):
    job = nd.schedule(sleeper, every="1m", name="sleeper", kernel=kernel_name())
    first = job.created + 60
    assert scheduler.claim("sleeper", first)  # a run of it is going (this live process)
    assert scheduler.run_due(first + 60) == []
    runs = nd.jobs()
    assert list(runs["status"]) == ["skipped"]
    assert runs["scheduled_for"][0].timestamp() == pytest.approx(first + 60)
    assert scheduler.last_statuses() == {"sleeper": "skipped"}


def test_catchup_runs_missed_times_oldest_first(sleeper):
    late = nd.schedule(sleeper, every="1m", name="late", kernel=kernel_name(), catchup=True)
    latest = nd.schedule(sleeper, every="1m", name="latest", kernel=kernel_name())
    now = late.created + 185  # three times were missed: +60, +120, +180
    ran: list[tuple[str, float]] = []
    for _ in range(4):
        ran += [(r.name, r.run_id) for r in scheduler.run_due(now)]  # type: ignore[misc]
    frame = nd.jobs()
    late_times = sorted(
        t.timestamp() - late.created for t in frame[frame.name == "late"].scheduled_for
    )
    assert late_times == pytest.approx([60, 120, 180], abs=0.01)
    started = frame[frame.name == "late"].sort_values("started").scheduled_for
    assert list(started) == sorted(started)  # run in order, oldest first
    latest_times = [
        t.timestamp() - latest.created for t in frame[frame.name == "latest"].scheduled_for
    ]
    assert latest_times == pytest.approx([180], abs=0.01)  # no catch-up: only the latest


def test_a_paused_job_does_not_run_and_resumes_without_backfill(sleeper):
    job = nd.schedule(sleeper, every=1, name="quiet", catchup=True, paused=True)
    time.sleep(2.2)  # two of its times pass while it is paused
    assert job.paused and scheduler.plan() == []
    resumed = scheduler.resume("quiet")
    assert not resumed.paused and resumed.since > job.created + 2
    assert scheduler.plan(resumed.since + 0.01) == []  # nothing from the paused stretch
    (planned,) = scheduler.plan(resumed.since + 1.5)
    assert planned[1] > resumed.since and planned[2] == "run"
    assert scheduler.pause("quiet").paused


def test_schedule_refuses_a_taken_name_and_a_wrong_type_and_leaves_nothing(sleeper):
    nd.schedule(sleeper, every="1h", name="taken")
    with pytest.raises(JobError, match="scheduled already"):
        nd.schedule(sleeper, every="2h", name="taken", replace=False)
    assert scheduler.get("taken").every_s == 3600
    with pytest.raises(JobError, match=r"'seconds' of sleeper\.ipynb is float"):
        nd.schedule(sleeper, every="1h", name="typo", parameters={"seconds": "soon"})
    with pytest.raises(JobError, match=r"'fail' .* is bool"):
        nd.run_job(sleeper, {"fail": "yes"}, kernel=kernel_name(), progress=False)
    assert list(scheduler.scheduled()["name"]) == ["taken"]
    nd.unschedule("taken")
    assert scheduler.scheduled().empty


class _Receiver(BaseHTTPRequestHandler):
    events: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).events.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver(monkeypatch):
    from nbdeploy import config

    _Receiver.events = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NBDEPLOY_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
    config.reset()
    yield _Receiver.events
    server.shutdown()


def test_finished_runs_post_job_events(sleeper, receiver):
    nd.schedule(sleeper, every="1h", name="ok", kernel=kernel_name())
    nd.schedule(sleeper, every="1h", name="bad", kernel=kernel_name(), parameters={"fail": True})
    good = scheduler.trigger("ok")
    bad = scheduler.trigger("bad")
    assert good is not None and bad is not None
    by_job = {e["job"]: e for e in receiver}
    assert by_job["ok"]["event"] == "job_succeeded" and by_job["ok"]["run_id"] == good.run_id
    assert by_job["ok"]["error"] is None and by_job["ok"]["duration_s"] > 0
    assert by_job["bad"]["event"] == "job_failed" and by_job["bad"]["run_id"] == bad.run_id
    assert "ValueError: the data is late" in by_job["bad"]["error"]
    assert "\n" not in by_job["bad"]["error"]
    assert by_job["bad"]["text"].startswith("nbdeploy job bad failed: ")
    from nbdeploy import registry

    assert registry.client().get_run(bad.run_id).data.tags["nbdeploy.job.webhook"] == "sent (204)"


def test_the_scheduler_runs_jobs_side_by_side(sleeper, home):
    """A long job and a short one, both due every 3 s: the short one runs while the long
    one sleeps, and the long one's times that come while it runs are skipped."""
    nd.schedule(sleeper, every=3, name="long", kernel=kernel_name(), parameters={"seconds": 9.0})
    nd.schedule(sleeper, every=3, name="short", kernel=kernel_name())
    env = {**os.environ, "NBDEPLOY_HOME": str(home), "NBDEPLOY_MAX_CONCURRENT_JOBS": "2"}
    log = (home / "scheduler.out").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "nbdeploy.cli", "scheduler", "--interval", "0.5"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:

        def done():
            frame = nd.jobs()
            short = frame[(frame.name == "short") & (frame.status == "succeeded")]
            long = frame[(frame.name == "long") & (frame.status == "succeeded")]
            skipped = frame[(frame.name == "long") & (frame.status == "skipped")]
            return (frame, long, short) if len(long) and len(short) >= 2 and len(skipped) else None

        try:
            _, long, short = _wait(done, 150, "a long run, two short runs and a skipped time")
        except AssertionError:
            raise AssertionError((home / "scheduler.out").read_text()[-3000:]) from None
    finally:
        child.terminate()
        child.wait(timeout=30)
        log.close()
    long_start = long.started.min()
    long_end = long_start + __import__("pandas").Timedelta(seconds=float(long.duration_s.min()))
    during = short[(short.started > long_start) & (short.started < long_end)]
    assert len(during) >= 1, "the short job waited for the long one"
    out = (home / "scheduler.out").read_text()
    assert "up to 2 jobs at once" in out
    assert "long: started for" in out and "short: succeeded (run" in out
    assert "long: skipped" in out
    # one line per stretch of skipped times, not one per time (a 9 s run due every 3 s)
    assert out.count("long: skipped") <= out.count("long: started for")


def test_the_schedule_magic_takes_catchup_and_paused(sleeper):
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance(history_length=0, history_load_length=0)
    try:
        sh.run_line_magic("load_ext", "nbdeploy")
        sh.run_line_magic(
            "deploy", f"schedule {sleeper} --every 1h --name nightly --catchup --paused"
        )
        sh.run_line_magic("deploy", f"schedule {sleeper} --every 1h --name plain")
    finally:
        InteractiveShell.clear_instance()
    jobs = scheduler.scheduled().set_index("name")
    assert bool(jobs.loc["nightly", "catchup"]) and bool(jobs.loc["nightly", "paused"])
    assert not jobs.loc["plain", "catchup"] and not jobs.loc["plain", "paused"]
