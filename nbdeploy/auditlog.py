"""The prediction log: every served, shadow and batch prediction, append-only.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed transaction survives
``kill -9`` of the writer, and a commit costs no fsync. The server writes one
transaction per micro-batch (group commit) before it releases the responses.

One row per request ("record") holds its rows columnar in an orjson payload; a
prediction id is ``<record_id>-<row>``. This keeps a 10,000-row request at one
insert while ``logs()`` still returns one row per prediction. Records are
hash-chained (each hash covers the previous one), so editing or deleting a row
afterwards is detectable. Feedback labels and rejected-request counts live in
their own append-only tables; prediction rows are never updated.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from nbdeploy import config
from nbdeploy.exceptions import AuditLogError

if TYPE_CHECKING:
    import pandas as pd

GENESIS = "0" * 64
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    deployment TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    alias TEXT,
    role TEXT NOT NULL,
    n_rows INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    payload BLOB NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_model_ts ON records (model_name, ts);
CREATE INDEX IF NOT EXISTS records_deployment_ts ON records (deployment, ts);
CREATE INDEX IF NOT EXISTS records_request ON records (request_id);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    deployment TEXT NOT NULL DEFAULT '',
    label BLOB NOT NULL,
    ts REAL NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_prediction ON feedback (prediction_id);
CREATE TABLE IF NOT EXISTS rejections (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    deployment TEXT NOT NULL,
    model_name TEXT NOT NULL,
    code TEXT NOT NULL,
    status INTEGER NOT NULL
);
"""
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


@dataclass
class Record:
    """One request's predictions by one model, as the server hands them to the log."""

    request_id: str
    deployment: str
    model_name: str
    model_version: int
    alias: str | None
    role: str  # served | shadow | batch
    n_rows: int
    latency_ms: float
    payload: bytes
    ts: float = 0.0
    record_id: str = ""

    def __post_init__(self) -> None:
        self.ts = self.ts or time.time()
        self.record_id = self.record_id or uuid.uuid4().hex[:20]

    def prediction_ids(self) -> list[str]:
        prefix = self.record_id + "-"
        return [prefix + str(i) for i in range(self.n_rows)]


_MAGIC = b"NBD1"


def encode_payload(body: dict[str, Any]) -> bytes:
    """A record's content: JSON for the small parts, raw bytes for numeric arrays.

    A 10,000 x 20 float input is 1.6 MB of float64 rather than 4.4 MB of JSON text:
    cheaper to write, to hash for the chain, and exact (no decimal round trip).
    """
    plain: dict[str, Any] = {}
    arrays: list[list[Any]] = []
    blocks: list[bytes] = []
    for key, value in body.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            array = np.ascontiguousarray(value)
            arrays.append([key, array.dtype.str, list(array.shape)])
            blocks.append(array.tobytes())
        else:
            plain[key] = value
    header = orjson.dumps({"plain": plain, "arrays": arrays}, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([_MAGIC, len(header).to_bytes(4, "little"), header, *blocks])


def decode_payload(payload: bytes) -> dict[str, Any]:
    """The inverse of :func:`encode_payload` (numeric arrays come back as numpy)."""
    if not payload.startswith(_MAGIC):
        return dict(orjson.loads(payload))
    size = int.from_bytes(payload[4:8], "little")
    header = orjson.loads(payload[8 : 8 + size])
    body = dict(header["plain"])
    offset = 8 + size
    for key, dtype, shape in header["arrays"]:
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        body[key] = np.frombuffer(payload, dt, count, offset).reshape(shape)
        offset += count * dt.itemsize
    return body


def _digest(prev: str, row: tuple[Any, ...], payload: bytes) -> str:
    head = "\x1f".join(str(v) for v in row).encode()
    return hashlib.sha256(prev.encode() + head + b"\x1e" + payload).hexdigest()


class AuditLog:
    """A connection to the log. Not shared between threads; open one per thread."""

    def __init__(self, path: Path | None = None, *, background_checkpoints: bool = False) -> None:
        self.path = Path(path or config.settings().audit_db)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            if background_checkpoints:
                # A checkpoint fsyncs; inside a commit it would stall every request of
                # that batch. A server checkpoints from a thread of its own instead.
                self.db.execute("PRAGMA wal_autocheckpoint=0")
                _Checkpointer(self.path).start()
        except sqlite3.Error as exc:
            raise AuditLogError(f"cannot open the audit log at {self.path}: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    # -- writing ------------------------------------------------------------

    def append(self, records: list[Record]) -> None:
        """Commit ``records`` in one transaction (group commit), chaining their hashes."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                last = db.execute("SELECT hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
                prev = last[0] if last else GENESIS
                rows = []
                for r in records:
                    meta = (
                        r.record_id,
                        r.request_id,
                        repr(r.ts),
                        r.deployment,
                        r.model_name,
                        r.model_version,
                        r.alias or "",
                        r.role,
                        r.n_rows,
                        repr(r.latency_ms),
                    )
                    digest = _digest(prev, meta, r.payload)
                    rows.append(
                        (
                            r.record_id,
                            r.request_id,
                            r.ts,
                            r.deployment,
                            r.model_name,
                            r.model_version,
                            r.alias,
                            r.role,
                            r.n_rows,
                            r.latency_ms,
                            r.payload,
                            prev,
                            digest,
                        )
                    )
                    prev = digest
                db.executemany(
                    "INSERT INTO records (record_id, request_id, ts, deployment, model_name, "
                    "model_version, alias, role, n_rows, latency_ms, payload, prev_hash, hash) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise AuditLogError(f"cannot write to the audit log: {exc}") from exc

    def reject(self, rows: list[tuple[float, str, str, str, int]]) -> None:
        """Count rejected requests, never their payload: (ts, deployment, model, code, status)."""
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    "INSERT INTO rejections (ts, deployment, model_name, code, status) "
                    "VALUES (?,?,?,?,?)",
                    rows,
                )
        except sqlite3.Error:
            pass  # counting a rejection must never turn it into a server error

    def add_feedback(
        self, model_name: str, prediction_ids: list[str], labels: list[Any], source: str
    ) -> int:
        if len(prediction_ids) != len(labels):
            raise AuditLogError(
                f"{len(prediction_ids)} prediction ids but {len(labels)} "
                "labels; pass one label per id"
            )
        if not prediction_ids:
            raise AuditLogError("no prediction ids given")
        owners = self._owners(model_name, prediction_ids)
        unknown = sum(1 for p in prediction_ids if str(p) not in owners)
        if unknown:
            raise AuditLogError(
                f"{unknown} of {len(prediction_ids)} prediction ids are not "
                f"logged predictions of {model_name!r}; nothing was recorded"
            )
        now = time.time()
        # stored under the model and deployment that made the prediction, whichever
        # name the caller used, so every reader finds the label
        rows = [
            (str(p), *owners[str(p)], orjson.dumps(_plain(label)), now, source)
            for p, label in zip(prediction_ids, labels, strict=True)
        ]
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    "INSERT INTO feedback (prediction_id, model_name, deployment, label, ts, "
                    "source) VALUES (?,?,?,?,?,?)",
                    rows,
                )
        except sqlite3.Error as exc:
            raise AuditLogError(f"cannot write feedback: {exc}") from exc
        return len(rows)

    def _owners(self, name: str, prediction_ids: list[str]) -> dict[str, tuple[str, str]]:
        """prediction id -> (model name, deployment) for the ids that ``name`` logged."""
        wanted: dict[str, list[str]] = {}
        for pid in map(str, prediction_ids):
            record, _, row = pid.rpartition("-")
            if record and row.isdigit():
                wanted.setdefault(record, []).append(pid)
        owners: dict[str, tuple[str, str]] = {}
        ids = list(wanted)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for rid, n, model, deployment in self.db.execute(
                f"SELECT record_id, n_rows, model_name, deployment FROM records WHERE record_id "
                f"IN ({marks}) AND (model_name = ? OR deployment = ?)",
                (*chunk, name, name),
            ):
                for pid in wanted[rid]:
                    if int(pid.rpartition("-")[2]) < n:
                        owners[pid] = (model, deployment)
        return owners

    # -- reading ------------------------------------------------------------

    def records(
        self,
        name: str,
        *,
        since: float | None = None,
        limit: int | None = None,
        role: str | None = None,
    ) -> list[tuple[Any, ...]]:
        where = ["(model_name = ? OR deployment = ?)"]
        args: list[Any] = [name, name]
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if role is not None:
            where.append("role = ?")
            args.append(role)
        sql = (
            "SELECT record_id, request_id, ts, model_name, model_version, alias, role, "
            f"latency_ms, n_rows, payload FROM records WHERE {' AND '.join(where)} "
            "ORDER BY seq DESC"
        )
        rows, total = [], 0
        for row in self.db.execute(sql, args):
            rows.append(row)
            total += row[8]
            if limit is not None and total >= limit:
                break
        rows.reverse()
        return rows

    def record(self, record_id: str) -> tuple[Any, ...] | None:
        """(request_id, ts, model_name, model_version, alias, role, payload) of one record."""
        row: tuple[Any, ...] | None = self.db.execute(
            "SELECT request_id, ts, model_name, model_version, alias, role, payload "
            "FROM records WHERE record_id = ?",
            (record_id,),
        ).fetchone()
        return row

    def window(
        self, name: str, since: float | None = None, until: float | None = None
    ) -> list[tuple[Any, ...]]:
        """(record_id, ts, model_version, alias, role, n_rows, latency_ms, payload) of
        ``name``'s records in [since, until], oldest first."""
        return self.db.execute(
            "SELECT record_id, ts, model_version, alias, role, n_rows, latency_ms, payload "
            "FROM records WHERE (model_name = ? OR deployment = ?) AND ts >= ? AND ts <= ? "
            "ORDER BY seq",
            (
                name,
                name,
                since if since is not None else -1.0,
                until if until is not None else float("inf"),
            ),
        ).fetchall()

    def rejections(self, name: str, since: float | None = None) -> list[tuple[Any, ...]]:
        """(ts, code, status) of every request ``name`` rejected since ``since``."""
        return self.db.execute(
            "SELECT ts, code, status FROM rejections WHERE (deployment = ? OR model_name = ?) "
            "AND ts >= ? ORDER BY seq",
            (name, name, since if since is not None else -1.0),
        ).fetchall()

    def watermark(self, name: str) -> tuple[Any, ...]:
        """Changes whenever ``name`` logs, rejects or gets feedback, or any alert fires:
        lets a live view skip recomputing when nothing happened."""
        args = (name, name)
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
        return (
            self.db.execute(
                "SELECT MAX(seq) FROM records WHERE model_name = ? OR deployment = ?", args
            ).fetchone()[0],
            self.db.execute(
                "SELECT MAX(seq) FROM rejections WHERE model_name = ? OR deployment = ?", args
            ).fetchone()[0],
            self.db.execute("SELECT MAX(seq) FROM feedback").fetchone()[0],
            self.db.execute("SELECT MAX(seq) FROM alerts").fetchone()[0]
            if "alerts" in tables
            else None,
        )

    def counts(self, name: str) -> dict[str, int]:
        predictions = self.db.execute(
            "SELECT COALESCE(SUM(n_rows), 0) FROM records WHERE model_name = ? OR deployment = ?",
            (name, name),
        ).fetchone()[0]
        rejected = self.db.execute(
            "SELECT COUNT(*) FROM rejections WHERE model_name = ? OR deployment = ?", (name, name)
        ).fetchone()[0]
        return {"predictions": int(predictions), "rejected": int(rejected)}

    def verify(self, record_id: str) -> bool:
        """Does the hash chain check out around this record?"""
        row = self.db.execute(
            "SELECT seq, record_id, request_id, ts, deployment, model_name, model_version, "
            "alias, role, n_rows, latency_ms, payload, prev_hash, hash FROM records "
            "WHERE record_id = ?",
            (record_id,),
        ).fetchone()
        if row is None:
            return False
        seq, *meta, payload, prev, digest = row
        meta[2], meta[6], meta[9] = repr(meta[2]), meta[6] or "", repr(meta[9])
        before = self.db.execute(
            "SELECT hash FROM records WHERE seq < ? ORDER BY seq DESC LIMIT 1", (seq,)
        ).fetchone()
        after = self.db.execute(
            "SELECT prev_hash FROM records WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
        ).fetchone()
        return (
            (before[0] if before else GENESIS) == prev
            and _digest(prev, tuple(meta), payload) == digest
            and (after is None or after[0] == digest)
        )


class _Checkpointer(threading.Thread):
    """Copies the WAL back into the database every second, off the request path."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="nbdeploy-checkpoint", daemon=True)
        self.path = path

    def run(self) -> None:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        while True:
            time.sleep(1.0)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                continue


_local = threading.local()


def shared() -> AuditLog:
    """This thread's connection to the configured log (reopened if the home changed)."""
    log = getattr(_local, "log", None)
    if log is None or log.path != config.settings().audit_db:
        log = _local.log = AuditLog()
    return log


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and not isinstance(value, str | bytes) else value


def _since(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    import pandas as pd

    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.timestamp()


def logs(
    name: str, *, since: Any = None, limit: int | None = None, role: str | None = None
) -> pd.DataFrame:
    """Logged predictions of a deployment or model, one row per prediction, oldest first."""
    import pandas as pd

    if role not in (None, "served", "shadow", "batch"):
        raise AuditLogError(f"role must be 'served', 'shadow' or 'batch', not {role!r}")
    records = shared().records(name, since=_since(since), limit=limit, role=role)
    meta: dict[str, list[Any]] = {c: [] for c in META_COLUMNS}
    features: dict[str, list[Any]] = {}
    outputs: dict[str, list[Any]] = {}
    total = 0
    for rid, req, ts, model, version, alias, rrole, latency, n, payload in records:
        body = decode_payload(payload)
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


def decode_inputs(body: dict[str, Any]) -> dict[str, list[Any]]:
    """A decoded payload's inputs as column name -> values."""
    columns = body["columns"]
    if "data" in body:
        data = np.asarray(body["data"], dtype=float)
        return {c: data[:, j].tolist() for j, c in enumerate(columns)}
    return {c: list(v) for c, v in zip(columns, body["columnar"], strict=True)}


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
