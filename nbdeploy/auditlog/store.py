"""Writing and reading records: SQLite in WAL mode, group commit, hash chain."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nbdeploy import config
from nbdeploy.exceptions import AuditLogError

GENESIS = "0" * 64
_NUMPY = orjson.OPT_SERIALIZE_NUMPY  # labels may arrive as numpy scalars
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


def _digest(prev: str, row: tuple[Any, ...], payload: bytes) -> str:
    head = "\x1f".join(str(v) for v in row).encode()
    return hashlib.sha256(prev.encode() + head + b"\x1e" + payload).hexdigest()


class AuditLog:
    """A connection to the log. Not shared between threads; open one per thread."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        background_checkpoints: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """``timeout``: seconds a write waits for another process's lock (a server
        passes a short one, so that its requests fail fast rather than hang)."""
        self.path = Path(path or config.settings().audit_db)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
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
            (str(p), *owners[str(p)], orjson.dumps(label, option=_NUMPY), now, source)
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

    def breaks(self, record_id: str | None = None) -> list[str]:
        """Records from ``record_id`` (default: the first) to the newest whose hash does
        not recompute or whose link to the previous record is broken.

        Editing a row changes its digest; re-hashing it breaks the next row's link; fixing
        that link breaks the next row's digest, and so on up to the newest record. So a
        row is only vouched for when the chain holds from it all the way to the head.
        """
        start = 0
        if record_id is not None:
            found = self.db.execute(
                "SELECT seq FROM records WHERE record_id = ?", (record_id,)
            ).fetchone()
            if found is None:
                return [record_id]
            start = found[0]
        before = self.db.execute(
            "SELECT hash FROM records WHERE seq < ? ORDER BY seq DESC LIMIT 1", (start,)
        ).fetchone()
        expected_prev = before[0] if before else GENESIS
        broken = []
        for row in self.db.execute(
            "SELECT record_id, request_id, ts, deployment, model_name, model_version, alias, "
            "role, n_rows, latency_ms, payload, prev_hash, hash FROM records WHERE seq >= ? "
            "ORDER BY seq",
            (start,),
        ):
            *meta, payload, prev, digest = row
            meta[2], meta[6], meta[9] = repr(meta[2]), meta[6] or "", repr(meta[9])
            if prev != expected_prev or _digest(prev, tuple(meta), payload) != digest:
                broken.append(meta[0])
            expected_prev = digest
        return broken

    def head(self) -> str:
        """The newest record's hash: keep it elsewhere (a ticket, a signed file) to make
        a later rewrite of the whole chain detectable too."""
        row = self.db.execute("SELECT hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        return str(row[0]) if row else GENESIS

    def verify(self, record_id: str) -> bool:
        """Does the hash chain hold from this record to the newest one?"""
        return not self.breaks(record_id)


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
