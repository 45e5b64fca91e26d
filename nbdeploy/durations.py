"""Durations as people write them: ``"90s"``, ``"15m"``, ``"6h"``, ``"7d"``, ``"2w"``.

One parser for every place that takes one: schedules (``every=``), monitor and alert
windows, and audit time ranges ("the last 6h").
"""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")


def seconds(text: object) -> float | None:
    """The duration in seconds, or None when ``text`` is not written as one."""
    match = _DURATION.fullmatch(str(text))
    return float(match[1]) * _UNITS[match[2]] if match else None
