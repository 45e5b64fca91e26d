"""Records as DataFrames: one row per prediction, features as columns."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from nbdeploy import config, durations
from nbdeploy.auditlog import postgres
from nbdeploy.auditlog.frames import Decoded, decode_many, kept_rows
from nbdeploy.auditlog.store import shared
from nbdeploy.exceptions import AuditLogError

if TYPE_CHECKING:
    import pandas as pd

META_COLUMNS = (
    "prediction_id",
    "request_id",
    "timestamp",
    "model_name",
    "model_version",
    "alias",
    "role",
    "latency_ms",
)


def parse_time(value: Any) -> float | None:
    """Epoch seconds from a number, a datetime or ISO string (UTC unless it says
    otherwise), or a duration back from now like ``"15m"``, ``"6h"``, ``"7d"``."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    import pandas as pd

    text = str(value).strip()
    ago = durations.seconds(text)
    if ago is not None:
        return time.time() - ago
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise AuditLogError(
            f"{text[:40]!r} is not a time: give an ISO time like '2026-01-31T12:00', "
            "epoch seconds, or a duration back from now like '6h'"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float(stamp.timestamp())


def logs(
    name: str, *, since: Any = None, limit: int | None = None, role: str | None = None
) -> pd.DataFrame:
    """Logged predictions of a deployment or model, one row per prediction, oldest first."""
    if role not in (None, "served", "shadow", "batch"):
        raise AuditLogError(f"role must be 'served', 'shadow' or 'batch', not {role!r}")
    records = shared().records(name, since=parse_time(since), limit=limit, role=role)
    if not records and since is None and role is None:  # a typo is not an empty log
        from nbdeploy.hints import unknown_name

        error = unknown_name(name)
        if error is not None:
            raise error
    frame = _frame(*_decode(records))
    if limit is not None and len(frame) > limit:
        frame = frame.iloc[len(frame) - limit :].reset_index(drop=True)
    return frame


def _decode(records: list[tuple[Any, ...]]) -> tuple[dict[str, list[Any]], Decoded]:
    """Records (as ``AuditLog.records`` gives them): each row's metadata, and columns."""
    if not records:
        return {c: [] for c in META_COLUMNS}, Decoded(0)
    rids, *fields, counts, payloads, inputs = map(list, zip(*records, strict=True))
    meta = {"prediction_id": [f"{r}-{i}" for r, n in zip(rids, counts, strict=True)
                              for i in range(n)]}  # fmt: skip
    single = all(n == 1 for n in counts)  # one prediction per record: nothing to repeat
    for key, values in zip(META_COLUMNS[1:], fields, strict=True):
        meta[key] = values if single else _repeat(values, counts)
    return meta, decode_many(list(zip(payloads, inputs, strict=True)), counts)


def _frame(meta: dict[str, list[Any]], decoded: Decoded) -> pd.DataFrame:
    """One row per prediction: metadata, then features, then outputs."""
    import pandas as pd

    columns: dict[str, Any] = dict(meta)
    columns["timestamp"] = pd.to_datetime(
        np.asarray(meta["timestamp"], dtype=float), unit="s", utc=True
    )
    features, outputs = decoded.columns()
    taken = set(META_COLUMNS) | set(outputs)
    for column, feature in features.items():
        columns["feature." + column if column in taken else column] = feature
    columns.update(outputs)
    return pd.DataFrame(columns)


class LogTail:
    """One name's logged predictions over a sliding window, read incrementally.

    A process that reads the same window again and again (a server's alert child,
    every minute) keeps what it decoded and reads only the records appended since: a
    check costs the new traffic, not the whole hour, and gives what ``logs()`` gives.
    Any erasure in the log (a new :meth:`AuditLog.erasures` generation) makes the next
    read a full one, so erased inputs never linger here. On PostgreSQL every read is
    full: a sequence number is drawn before its transaction commits, so a lower one can
    become visible after a higher one was read.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.meta: dict[str, list[Any]] = {c: [] for c in META_COLUMNS}
        self.decoded = Decoded(0)
        self.key: tuple[Any, ...] = ()  # (erasure generation, limit) of the rows held
        self.since: float | None = None
        self.seq = -1  # the newest record read (-1: nothing read yet)

    def read(self, since: float | None, limit: int | None) -> pd.DataFrame:
        """As ``logs(name, since=since, limit=limit)`` (``limit``: None or at least 1)."""
        if limit is not None and limit < 1:
            raise AuditLogError(f"a tail keeps at least one row, not limit={limit}")
        log = shared()
        newest, key = log.newest_seq(), (log.erasures(), limit)
        again = (
            self.seq >= 0
            and key == self.key
            and (self.since is None or (since is not None and since >= self.since))
            and not postgres.is_url(config.settings().audit_db)
        )
        after = self.seq if again else 0
        records = log.records(self.name, since=since, limit=limit, after=after, upto=newest)
        meta, decoded = _decode(records)
        if again:
            for column, values in meta.items():
                self.meta[column].extend(values)
            self.decoded.extend(decoded)
            meta, decoded = self.meta, self.decoded
        keep = np.ones(decoded.total, bool)
        if since is not None:
            keep &= np.asarray(meta["timestamp"], dtype=float) >= since
        if limit is not None and keep.sum() > limit:
            keep[np.flatnonzero(keep)[:-limit]] = False  # the newest ``limit`` rows stay
        if not keep.all():
            first = int(keep.argmax())
            if keep[first:].all():  # what leaves a window is mostly its oldest rows
                meta = {c: values[first:] for c, values in meta.items()}
            else:
                meta = {c: list(kept_rows(values, keep)) for c, values in meta.items()}
            decoded = decoded.take(keep)
        self.meta, self.decoded = meta, decoded
        self.key, self.since, self.seq = key, since, newest
        return _frame(meta, decoded)


def _repeat(values: list[Any], counts: list[int]) -> list[Any]:
    """Each record's value once per prediction of the record."""
    return [value for value, n in zip(values, counts, strict=True) for _ in range(n)]


def labels(name: str) -> pd.DataFrame:
    """The latest ground-truth label per prediction id of ``name``."""
    import pandas as pd

    rows = (
        shared()
        .db.execute(
            "SELECT prediction_id, label, ts FROM feedback "
            "WHERE model_name = ? OR deployment = ? ORDER BY seq",
            (name, name),
        )
        .fetchall()
    )
    frame = pd.DataFrame(
        [(pid, orjson.loads(label), ts) for pid, label, ts in rows],
        columns=["prediction_id", "label", "ts"],
    )
    return frame.drop_duplicates("prediction_id", keep="last").reset_index(drop=True)


def feedback(name: str, prediction_ids: Any, labels: Any) -> int:
    """Record ground-truth labels for logged predictions; returns how many were recorded."""
    ids = [str(p) for p in list(prediction_ids)]
    return shared().add_feedback(name, ids, list(labels), source=config.settings().user)
