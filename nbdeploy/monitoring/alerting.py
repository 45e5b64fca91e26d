"""Alerts: rules evaluated over a deployment's recent traffic, recorded and sent.

``check_alerts`` evaluates rules (``monitoring.rules``) on demand; a running server
evaluates the same rules every ``NBDEPLOY_ALERT_INTERVAL_S`` seconds over the last
``NBDEPLOY_ALERT_WINDOW_S``. Each fired alert is stored in the ``alerts`` table of
``audit.db`` first, then POSTed as JSON to ``NBDEPLOY_ALERT_WEBHOOK`` (or ``webhook=``)
by :func:`nbdeploy.webhooks.send` (retried with back-off; the outcome is stored with
the alert), with a ``text`` field so chat webhooks (Slack, Mattermost) show it as is.
A rule that keeps firing is sent once per cooldown (default: the window), not once
per check.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from nbdeploy import config, webhooks
from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring.rules import (
    Rule,
    breached,
    fired_since,
    parse_rules,
    record,
    set_webhook,
)

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.monitoring.report import MonitorReport


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
    if webhook:  # "" turns NBDEPLOY_ALERT_WEBHOOK off for this call
        webhooks.check_url(webhook)  # before anything fires, and without echoing it
    window = s.alert_window_s if window is None else window
    span = window_seconds(window)
    chosen = parse_rules(rules)
    # fairness, anomalies and the label-free estimate only when a rule reads them
    needs = {"disparity", "anomaly_rate", "estimated_accuracy"} & {r.metric for r in chosen}
    rep = report or build(name, window, extras=bool(needs))
    url = webhook if webhook is not None else s.alert_webhook
    cooldown = cooldown_s if cooldown_s is not None else (span or 3600.0)
    values = rep.indicators()
    now, out = time.time(), []
    for rule in chosen:
        value, rows, detail = values.get(rule.metric, (math.nan, 0, ""))
        status = "no data" if value != value or rows < rule.min_rows else "ok"
        if status == "ok" and breached(rule, value):
            status = "repeat" if fired_since(name, rule, now - cooldown) else "fired"
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
            seq = record(alert, "sending" if url else "")  # recorded, whatever the receiver does
            if url:
                set_webhook(seq, webhooks.send(url, {"text": message, **alert}))
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
            "import sys; from nbdeploy.monitoring.alerting import alert_loop; "
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
    from nbdeploy.monitoring.data import keep_windows

    os.nice(10)  # the server's requests come first
    keep_windows()  # each check decodes the last minute's records, not the whole window
    steps = max(1, round(interval))  # look for the server every second: a stopped or
    while True:  # killed one must not leave a child behind to run one more check
        for _ in range(steps):
            time.sleep(interval / steps)
            if os.getppid() != parent:
                return
        check_once(name)


def check_once(name: str) -> None:
    """One timer tick: evaluate the default rules, print what fired."""
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
