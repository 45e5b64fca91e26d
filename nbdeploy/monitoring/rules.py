"""Alert rules over a deployment's recent traffic, recorded and sent to a webhook.

A :class:`Rule` compares one indicator of :meth:`MonitorReport.indicators` with a
bound: ``Rule("feature_psi", "max_feature_psi", ">", 0.2)``, or written as text,
``"max_feature_psi > 0.2"``. ``check_alerts`` evaluates rules on demand; a running
server evaluates the same rules every ``NBDEPLOY_ALERT_INTERVAL_S`` seconds over the
last ``NBDEPLOY_ALERT_WINDOW_S``. Each fired alert is stored in the ``alerts`` table
of ``audit.db`` and POSTed as JSON to ``NBDEPLOY_ALERT_WEBHOOK`` (or ``webhook=``),
with a ``text`` field so chat webhooks (Slack, Mattermost) show it as is. A rule that
keeps firing is sent once per cooldown (default: the window), not once per check.
"""

from __future__ import annotations

import json
import math
import operator
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbdeploy import auditlog, config
from nbdeploy.exceptions import NbdeployError

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.monitoring.report import MonitorReport

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}  # fmt: skip
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    deployment TEXT NOT NULL,
    rule TEXT NOT NULL,
    metric TEXT NOT NULL,
    op TEXT NOT NULL,
    threshold REAL NOT NULL,
    value REAL,
    window_s REAL,
    message TEXT NOT NULL,
    webhook TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_deployment_ts ON alerts (deployment, ts);
"""
COLUMNS = ["ts", "deployment", "rule", "metric", "op", "threshold", "value", "window_s",
           "message", "webhook"]  # fmt: skip
_MARKS = ", ".join("?" * len(COLUMNS))


@dataclass(frozen=True)
class Rule:
    """Fire when ``metric op threshold`` holds on at least ``min_rows`` rows."""

    name: str
    metric: str
    op: str
    threshold: float
    #: rows the indicator must rest on (labelled rows for accuracy) to be trusted
    min_rows: int = 0
    #: a scheduled job (``nd.schedule(..., name=)``) to run when the rule fires,
    #: e.g. the retrain notebook when accuracy falls
    then: str | None = None

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise NbdeployError(f"rule {self.name!r}: op must be one of {list(_OPS)}")

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``"max_feature_psi > 0.2"`` (or ``"accuracy < 0.8 then retrain-churn"``) -> a rule."""
        parts = text.split()
        then = None
        if len(parts) == 5 and parts[3] == "then":
            parts, then = parts[:3], parts[4]
        if len(parts) != 3 or parts[1] not in _OPS:
            raise NbdeployError(
                f"rule {text!r} is not 'METRIC OP NUMBER [then JOB]', e.g. 'error_rate > 0.05'"
            )
        try:
            return cls(" ".join(parts), parts[0], parts[1], float(parts[2]), then=then)
        except ValueError:
            raise NbdeployError(f"rule {text!r}: {parts[2]!r} is not a number") from None


#: Drift rules need 200 rows: PSI over 10 bins of fewer rows is mostly noise.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("feature_psi", "max_feature_psi", ">", 0.2, min_rows=200),
    Rule("dataset_drift", "dataset_drift", ">=", 1.0, min_rows=200),
    Rule("prediction_drift", "prediction_psi", ">", 0.2, min_rows=200),
    Rule("accuracy", "accuracy", "<", 0.7, min_rows=30),
    Rule("error_rate", "error_rate", ">", 0.05, min_rows=20),
)


def _db() -> Any:
    db = auditlog.shared().db
    db.executescript(_SCHEMA)
    return db


def _rules(rules: Iterable[Rule | str] | None) -> list[Rule]:
    return [r if isinstance(r, Rule) else Rule.parse(r) for r in (rules or DEFAULT_RULES)]


def check_alerts(
    name: str,
    rules: Iterable[Rule | str] | None = None,
    webhook: str | None = None,
    *,
    window: str | float | None = None,
    cooldown_s: float | None = None,
    report: MonitorReport | None = None,
) -> pd.DataFrame:
    """Evaluate ``rules`` (default :data:`DEFAULT_RULES`) on ``name``'s recent traffic.

    Returns one row per rule with its ``value`` and ``status``: ``fired`` (recorded,
    and sent to the webhook), ``repeat`` (still true, but already fired within
    ``cooldown_s``), ``ok``, or ``no data`` (too few rows to judge).
    """
    import pandas as pd

    from nbdeploy.monitoring.data import window_seconds
    from nbdeploy.monitoring.report import report as build

    s = config.settings()
    window = s.alert_window_s if window is None else window
    span = window_seconds(window)
    rep = report or build(name, window)
    url = webhook if webhook is not None else s.alert_webhook
    cooldown = cooldown_s if cooldown_s is not None else (span or 3600.0)
    values = rep.indicators()
    db, now, out = _db(), time.time(), []
    for rule in _rules(rules):
        value, rows, detail = values.get(rule.metric, (math.nan, 0, ""))
        status = "no data" if value != value or rows < rule.min_rows else "ok"
        if status == "ok" and _OPS[rule.op](value, rule.threshold):
            recent = db.execute(
                "SELECT 1 FROM alerts WHERE deployment = ? AND rule = ? AND ts > ? LIMIT 1",
                (name, rule.name, now - cooldown),
            ).fetchone()
            status = "repeat" if recent else "fired"
        message = (
            f"{name}: {rule.name}: {rule.metric} = {value:.4g} {rule.op} {rule.threshold:g} "
            f"over {rep.window} ({rows} rows)" + (f"; {detail}" if detail else "")
        )
        if status == "fired":
            alert = {"ts": now, "deployment": name, "rule": rule.name, "metric": rule.metric,
                     "op": rule.op, "threshold": rule.threshold, "value": value,
                     "window_s": span, "message": message,
                     "model": rep.overview["ref"]}  # fmt: skip
            if rule.then:  # one run per cooldown period, however many checks fire it
                moment = math.floor(now / cooldown) * cooldown if cooldown > 0 else now
                message += f"; started job {_start_job(rule.then, moment)!r}"
                alert["message"] = message
            sent = _post(url, alert) if url else ""
            db.execute(
                f"INSERT INTO alerts ({', '.join(COLUMNS)}) VALUES ({_MARKS})",
                (now, name, rule.name, rule.metric, rule.op, rule.threshold, value, span,
                 message, sent),
            )  # fmt: skip
        out.append({"rule": rule.name, "metric": rule.metric, "op": rule.op,
                    "threshold": rule.threshold, "value": value, "rows": rows,
                    "status": status, "message": message})  # fmt: skip
    return pd.DataFrame(out)


def _start_job(name: str, moment: float) -> str:
    """Run scheduled job ``name`` now, in a process of its own (jobs take minutes).

    The scheduler's claim makes a second trigger of the same moment a no-op.
    """
    import subprocess
    import sys

    from nbdeploy.scheduler import get

    get(name)  # an unknown job is an error in the rule, said here rather than lost
    log = config.settings().home / "jobs" / f"{name}.trigger.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "nbdeploy.cli", "scheduler", "--trigger", name,
             "--at", repr(moment)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=config.child_env(), start_new_session=True,
        )  # fmt: skip
    return name


def _post(url: str, alert: dict[str, Any]) -> str:
    """POST one alert as JSON; returns what happened (never raises: the alert is kept)."""
    body = json.dumps({"text": alert["message"], **alert}, default=str).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return f"sent ({answer.status})"
    except Exception as exc:  # an unreachable receiver must not lose the alert
        return f"failed: {type(exc).__name__}: {exc}"[:300]


def alerts(name: str | None = None, *, limit: int | None = 100) -> pd.DataFrame:
    """Recorded alerts, newest first (of deployment ``name``, or of all)."""
    import pandas as pd

    where, args = ("WHERE deployment = ?", [name]) if name else ("", [])
    sql = f"SELECT {', '.join(COLUMNS)} FROM alerts {where} ORDER BY seq DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    frame = pd.DataFrame(_db().execute(sql, args).fetchall(), columns=COLUMNS)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame


class AlertTimer(threading.Thread):
    """Evaluates the default rules for one deployment every ``interval`` seconds."""

    def __init__(self, name: str, interval: float) -> None:
        super().__init__(name="nbdeploy-alerts", daemon=True)
        self.deployment, self.interval = name, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        # A check reads and decodes the window's records: at steady traffic, seconds of
        # Python. In the server's process that time holds the GIL between requests (the
        # soak benchmark saw p50 jump to 0.9 s); a niced child process costs requests
        # neither the GIL nor, with a spare core, their CPU. It lives as long as the
        # server (same process group; it also ends when its parent is gone).
        code = (
            "import sys; from nbdeploy.monitoring.rules import alert_loop; "
            "alert_loop(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))"
        )
        command = [sys.executable, "-c", code, self.deployment, str(self.interval)]
        while not self.stopped.is_set():
            try:
                child = subprocess.Popen(
                    [*command, str(os.getpid())], env=config.child_env(), stdin=subprocess.DEVNULL
                )
            except OSError as exc:
                print(f"nbdeploy: alert checks not started: {exc}", flush=True)
                return
            while child.poll() is None and not self.stopped.wait(1.0):
                pass
            if child.poll() is None:
                child.terminate()
            self.stopped.wait(self.interval)  # it died: start another after a pause


def alert_loop(name: str, interval: float, parent: int) -> None:
    """The alert child's life: a check every ``interval`` seconds while its server lives."""
    os.nice(10)  # the server's requests come first
    while os.getppid() == parent:
        time.sleep(interval)
        check_once(name)


def check_once(name: str) -> None:
    """One timer tick: evaluate the default rules, print what fired (the child's work)."""
    try:
        checked = check_alerts(name)
    except NbdeployError:
        return  # no traffic yet
    except Exception as exc:  # monitoring must never take the server down
        print(f"nbdeploy: alert check failed: {type(exc).__name__}: {exc}", flush=True)
        return
    for message in checked.loc[checked["status"] == "fired", "message"]:
        print(f"nbdeploy: ALERT {message}", flush=True)


def start_timer(name: str) -> AlertTimer | None:
    """Start the alert timer of a running server (``NBDEPLOY_ALERT_INTERVAL_S`` > 0)."""
    interval = config.settings().alert_interval_s
    if interval <= 0:
        return None
    timer = AlertTimer(name, interval)
    timer.start()
    return timer
