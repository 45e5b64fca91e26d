"""How ``%deploy logs`` shows the prediction log: readable, with the data untouched.

``nd.logs`` returns exact values: 20-character ids, nanosecond UTC timestamps,
latencies to the microsecond. Shown as they are, the features a user looks for are
pushed off the right edge. :class:`PredictionLog` is that same DataFrame (every
operation sees the exact values) whose notebook display puts the features and the
prediction first, shortens the request id, shows time to the second and latency to
two decimals.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

#: shown after the features and predictions, in this order
_META = ("prediction_id", "timestamp", "model_name", "model_version", "alias", "role",
         "latency_ms", "request_id")  # fmt: skip


class PredictionLog(pd.DataFrame):
    """A prediction log whose display is formatted for reading (data unchanged)."""

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame  # derived frames are plain: only the log itself is dressed

    def readable(self) -> pd.DataFrame:
        """The displayed copy: rounded, shortened, features first."""
        frame = pd.DataFrame(self).copy()
        if "timestamp" in frame:
            stamps = pd.to_datetime(frame["timestamp"], utc=True)
            frame["timestamp"] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S")
        if "latency_ms" in frame:
            frame["latency_ms"] = frame["latency_ms"].astype(float).round(2)
        if "request_id" in frame:
            frame["request_id"] = frame["request_id"].astype(str).str[:8] + "…"
        for column in frame.columns:
            if column not in _META and pd.api.types.is_float_dtype(frame[column]):
                frame[column] = frame[column].round(4)
        first = [c for c in ("prediction_id", "timestamp") if c in frame]
        meta = [c for c in _META if c in frame and c not in first]
        rest = [c for c in frame.columns if c not in _META]
        return frame[first + rest + meta]

    def _repr_html_(self) -> str | None:
        return self.readable()._repr_html_()

    def __repr__(self) -> str:
        return repr(self.readable())


def readable(frame: Any) -> PredictionLog:
    """``frame`` (``nd.logs``'s DataFrame) shown for reading; its data stays exact."""
    return PredictionLog(frame)
