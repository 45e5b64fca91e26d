"""Records as DataFrames: one row per prediction, features as columns."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from nbdeploy import config, durations
from nbdeploy.auditlog.payload import decode_inputs, decode_record
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
    import pandas as pd

    if role not in (None, "served", "shadow", "batch"):
        raise AuditLogError(f"role must be 'served', 'shadow' or 'batch', not {role!r}")
    records = shared().records(name, since=parse_time(since), limit=limit, role=role)
    if not records and since is None and role is None:  # a typo is not an empty log
        from nbdeploy.hints import unknown_name

        error = unknown_name(name)
        if error is not None:
            raise error
    meta: dict[str, list[Any]] = {c: [] for c in META_COLUMNS}
    features: dict[str, list[Any]] = {}
    outputs: dict[str, list[Any]] = {}
    total = 0
    for rid, req, ts, model, version, alias, rrole, latency, n, payload, inputs in records:
        body = decode_record(payload, inputs)
        meta["prediction_id"].extend(f"{rid}-{i}" for i in range(n))
        for key, value in (
            ("request_id", req),
            ("timestamp", ts),
            ("model_name", model),
            ("model_version", version),
            ("alias", alias),
            ("role", rrole),
            ("latency_ms", latency),
        ):
            meta[key].extend([value] * n)
        for column, values in decode_inputs(body).items():
            _extend(features, column, values, total)
        _extend(outputs, "prediction", _list(body["predictions"]), total)
        if body.get("proba") is not None:
            proba = np.asarray(body["proba"], dtype=float)
            for j, cls in enumerate(body["classes"]):
                _extend(outputs, f"proba_{cls}", proba[:, j].tolist(), total)
            _extend(outputs, "score", proba.max(axis=1).tolist(), total)
        for key in ("fallback", "fallback_reason", "model_prediction"):
            if key in body:
                _extend(outputs, key, _list(body[key]), total)
        total += n
    frame = pd.DataFrame(meta)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    taken = set(META_COLUMNS) | set(outputs)
    for column, values in features.items():
        frame["feature." + column if column in taken else column] = _pad(values, total)
    for column, values in outputs.items():
        frame[column] = _pad(values, total)
    if limit is not None and len(frame) > limit:
        frame = frame.iloc[len(frame) - limit :].reset_index(drop=True)
    return frame


def _list(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _extend(store: dict[str, list[Any]], key: str, values: list[Any], offset: int) -> None:
    column = store.setdefault(key, [])
    if len(column) < offset:
        column.extend([None] * (offset - len(column)))
    column.extend(values)


def _pad(values: list[Any], total: int) -> list[Any]:
    return values + [None] * (total - len(values))


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
