"""A minimal 5-field cron expression: ``minute hour day-of-month month day-of-week``.

Each field takes ``*``, numbers, lists (``1,15``), ranges (``1-5``) and steps
(``*/5``, ``10-50/20``); day-of-week is 0-7 with 0 and 7 both Sunday. As in cron,
when both day fields are restricted a day matches if either does. Times are local.
"""

from __future__ import annotations

import datetime as dt

from nbdeploy.exceptions import JobError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))
_HORIZON = dt.timedelta(days=4 * 366)  # covers "29 February"


class Cron:
    """A parsed expression; ``next(t)`` / ``previous(t)`` in epoch seconds."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        parts = expr.split()
        if len(parts) != 5:
            raise JobError(f"cron {expr!r} needs 5 fields: minute hour day month weekday")
        sets = [_field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _FIELDS, strict=True)]
        self.minutes, self.hours, self.days, self.months, weekdays = sets
        self.weekdays = {d % 7 for d in weekdays}
        # as in vixie cron: a day field starting with "*" (also "*/2") does not restrict
        self.any_day, self.any_weekday = parts[2].startswith("*"), parts[4].startswith("*")

    def _day_ok(self, t: dt.datetime) -> bool:
        day, weekday = t.day in self.days, (t.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday

    def matches(self, t: dt.datetime) -> bool:
        return (
            t.month in self.months
            and self._day_ok(t)
            and t.hour in self.hours
            and t.minute in self.minutes
        )

    def _step(self, t: dt.datetime, sign: int) -> dt.datetime:
        """Move to the next candidate minute, skipping whole days/hours that cannot match."""
        if t.month not in self.months or not self._day_ok(t):
            day = t.replace(hour=0, minute=0)
            return day + dt.timedelta(days=1) if sign > 0 else day - dt.timedelta(minutes=1)
        if t.hour not in self.hours:
            hour = t.replace(minute=0)
            return hour + dt.timedelta(hours=1) if sign > 0 else hour - dt.timedelta(minutes=1)
        return t + dt.timedelta(minutes=sign)

    def next(self, after: float) -> float:
        """The first matching minute strictly after ``after``."""
        t = dt.datetime.fromtimestamp(after).replace(second=0, microsecond=0)
        t += dt.timedelta(minutes=1)
        end = t + _HORIZON
        while not self.matches(t):
            t = self._step(t, +1)
            if t > end:
                raise JobError(f"cron {self.expr!r} never matches")
        return t.timestamp()

    def previous(self, at: float, *, after: float | None = None) -> float | None:
        """The last matching minute at or before ``at`` (and after ``after``), if any."""
        t = dt.datetime.fromtimestamp(at).replace(second=0, microsecond=0)
        floor = dt.datetime.fromtimestamp(after) if after is not None else t - _HORIZON
        while t > floor:
            if self.matches(t):
                return t.timestamp()
            t = self._step(t, -1)
        return None


def _field(text: str, name: str, lo: int, hi: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, stop = lo, hi
            elif "-" in body:
                a, b = body.split("-", 1)
                start, stop = int(a), int(b)
            else:
                start = int(body)
                stop = hi if step_text else start
        except ValueError:
            raise JobError(
                f"cron {name} field {text!r} is not valid (e.g. *, 5, 1-5, */15)"
            ) from None
        if step < 1 or not lo <= start <= stop <= hi:
            raise JobError(f"cron {name} field {text!r} is out of range {lo}-{hi}")
        values.update(range(start, stop + 1, step))
    return values


def every_as_cron(seconds: float) -> str:
    """An interval as a cron expression, where cron can say it exactly."""
    minutes = seconds / 60
    if minutes == int(minutes) and minutes >= 1:
        m = int(minutes)
        if m < 60 and 60 % m == 0:
            return f"*/{m} * * * *" if m > 1 else "* * * * *"
        if m % 60 == 0 and m < 1440 and 24 % (m // 60) == 0:
            h = m // 60
            return f"0 */{h} * * *" if h > 1 else "0 * * * *"
        if m == 1440:
            return "0 0 * * *"
        if m == 10080:
            return "0 0 * * 0"
    raise JobError(
        f"an interval of {seconds:g} s has no exact cron form; schedule the job with cron= instead"
    )
