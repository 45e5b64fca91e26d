"""Alert rules and the alerts they fired: values and storage, no evaluation.

A :class:`Rule` compares one indicator of :meth:`MonitorReport.indicators` with a
bound: ``Rule("feature_psi", "max_feature_psi", ">", 0.2)``, or written as text,
``"max_feature_psi > 0.2"``. Fired alerts are rows of the ``alerts`` table of
``audit.db``. Evaluating rules over a report, sending webhooks and the server's timer
are ``monitoring.alerting``, which builds on this module and on ``report`` (so the
report, its rendering and the rules import each other in one direction only).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbdeploy import auditlog, names
from nbdeploy.exceptions import NbdeployError

if TYPE_CHECKING:
    import pandas as pd

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}  # fmt: skip
COLUMNS = ["ts", "deployment", "rule", "metric", "op", "threshold", "value", "window_s",
           "message", "webhook"]  # fmt: skip


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
        if self.then is not None:
            names.check(self.then, "job")

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
            threshold = float(parts[2])
        except ValueError:
            raise NbdeployError(f"rule {text!r}: {parts[2]!r} is not a number") from None
        return cls(" ".join(parts), parts[0], parts[1], threshold, then=then)


#: Drift rules need 200 rows: PSI over 10 bins of fewer rows is mostly noise.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("feature_psi", "max_feature_psi", ">", 0.2, min_rows=200),
    Rule("dataset_drift", "dataset_drift", ">=", 1.0, min_rows=200),
    Rule("prediction_drift", "prediction_psi", ">", 0.2, min_rows=200),
    Rule("accuracy", "accuracy", "<", 0.7, min_rows=30),
    Rule("error_rate", "error_rate", ">", 0.05, min_rows=20),
)


def _db() -> Any:
    return auditlog.shared().db  # the store creates the (hash-chained) alerts table


def parse_rules(rules: Iterable[Rule | str] | None) -> list[Rule]:
    """Rules and rule texts as rules; None means :data:`DEFAULT_RULES`."""
    return [r if isinstance(r, Rule) else Rule.parse(r) for r in (rules or DEFAULT_RULES)]


def breached(rule: Rule, value: float) -> bool:
    return _OPS[rule.op](value, rule.threshold)


def fired_since(name: str, rule: Rule, since: float) -> bool:
    """Whether ``rule`` already fired for deployment ``name`` after ``since``."""
    return (
        _db()
        .execute(
            "SELECT 1 FROM alerts WHERE deployment = ? AND rule = ? AND ts > ? LIMIT 1",
            (name, rule.name, since),
        )
        .fetchone()
        is not None
    )


def record(alert: dict[str, Any], webhook: str = "") -> int:
    """Store one fired alert (``alert`` holds every column but ``webhook``); its seq."""
    return auditlog.shared().add_alert(tuple(alert[c] for c in COLUMNS[:-1]), webhook)


def set_webhook(seq: int, outcome: str) -> None:
    """What became of the webhook POST of recorded alert ``seq`` (delivery is not
    evidence: the hash chain leaves this column out)."""
    _db().execute("UPDATE alerts SET webhook = ? WHERE seq = ?", (outcome, seq))


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
