"""Monitoring of served models: drift, data quality, performance, alerts.

- :func:`drift` — ``nd.drift``: the drift engine, taking a model ref as reference;
- :func:`report` — every number of the monitor panel for one time window;
- :func:`check_alerts` / :func:`alerts` — rules evaluated on demand (and by a
  running server on a timer), recorded in ``audit.db`` and sent to a webhook.

The panel itself is :func:`nbdeploy.widgets.monitor` (``nd.monitor``).
"""

from __future__ import annotations

from nbdeploy.monitoring.alerting import check_alerts
from nbdeploy.monitoring.data import WINDOWS, drift, load_window
from nbdeploy.monitoring.report import MonitorReport, report
from nbdeploy.monitoring.rules import DEFAULT_RULES, Rule, alerts

__all__ = [
    "DEFAULT_RULES",
    "WINDOWS",
    "MonitorReport",
    "Rule",
    "alerts",
    "check_alerts",
    "drift",
    "load_window",
    "report",
]
