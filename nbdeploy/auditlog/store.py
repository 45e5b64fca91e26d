"""Writing and reading the log in SQLite: WAL, group commit, chained entries.

All SQL of the log lives here (and in :mod:`queries` for DataFrames); hashing and
checking the chain is :mod:`nbdeploy.auditlog.chain`. The same statements run on
PostgreSQL (``NBDEPLOY_AUDIT_DB=postgresql://...``) through :mod:`.postgres`, which
presents a PostgreSQL connection in ``sqlite3``'s dialect.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nbdeploy import config
from nbdeploy.auditlog import chain as chains
from nbdeploy.auditlog import maintenance, postgres
from nbdeploy.auditlog.chain import GENESIS, Chain
from nbdeploy.auditlog.reading import _RECORD_COLUMNS, REJECTION_BUCKET_S, Reads
from nbdeploy.exceptions import AuditLogError

_NUMPY = orjson.OPT_SERIALIZE_NUMPY  # labels may arrive as numpy scalars
#: Passive checkpoints in a row that try to copy the WAL's last frames between commits.
CATCH_UP_PASSES = 20
#: The longest a RESTART checkpoint waits for readers, holding new writers meanwhile (ms)
RESTART_WAIT_MS = 2
# ``seq`` is a plain rowid, not AUTOINCREMENT: rows are only ever appended, so the next
# seq is max + 1 either way, and AUTOINCREMENT's bookkeeping row (sqlite_sequence) was one
# more page written to the WAL by every commit. Logs made before keep their schema.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
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
    inputs BLOB NOT NULL,
    erased INTEGER NOT NULL DEFAULT 0,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_model_ts ON records (model_name, ts);
CREATE INDEX IF NOT EXISTS records_deployment_ts ON records (deployment, ts);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY,
    prediction_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    deployment TEXT NOT NULL DEFAULT '',
    label BLOB NOT NULL,
    ts REAL NOT NULL,
    source TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_prediction ON feedback (prediction_id);
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    deployment TEXT NOT NULL,
    rule TEXT NOT NULL,
    metric TEXT NOT NULL,
    op TEXT NOT NULL,
    threshold REAL NOT NULL,
    value REAL,
    window_s REAL,
    message TEXT NOT NULL,
    webhook TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_deployment_ts ON alerts (deployment, ts);
CREATE TABLE IF NOT EXISTS rejections (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    deployment TEXT NOT NULL,
    model_name TEXT NOT NULL,
    code TEXT NOT NULL,
    status INTEGER NOT NULL,
    count INTEGER NOT NULL,
    UNIQUE (ts, deployment, model_name, code, status)
);
CREATE TABLE IF NOT EXISTS chain_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_ALERT_COLUMNS = ", ".join((*chains.ALERT_FIELDS, "webhook"))
_ROW_ID = re.compile(r"0|[1-9][0-9]*")


def parse_prediction_id(prediction_id: Any) -> tuple[str, int]:
    """``"<record>-<row>"`` -> (record, row); the row in plain ASCII digits, no padding."""
    record, sep, row = str(prediction_id).rpartition("-")
    if not sep or not record or not _ROW_ID.fullmatch(row):
        raise AuditLogError(
            "a prediction id looks like '<record>-<row>' with the row in digits, e.g. "
            "'5f0c8e2b6a1d4c3e9f70-0' (see the prediction_id column of nd.logs(name))"
        )
    return record, int(row)


@dataclass
class Record:
    """One request's predictions by one model, as the server hands them to the log.

    ``payload`` holds the outputs, ``inputs`` the rows' inputs (stored apart so that
    inputs can be erased without touching the outputs or the chain).
    """

    request_id: str
    deployment: str
    model_name: str
    model_version: int
    alias: str | None
    role: str  # served | shadow | batch
    n_rows: int
    latency_ms: float
    payload: bytes
    inputs: bytes
    ts: float = 0.0
    record_id: str = ""

    def __post_init__(self) -> None:
        self.ts = self.ts or time.time()
        self.record_id = self.record_id or ordered_id(24)

    def prediction_ids(self) -> list[str]:
        prefix = self.record_id + "-"
        return [prefix + str(i) for i in range(self.n_rows)]

    def fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in chains.RECORD_FIELDS)


def ordered_id(length: int) -> str:
    """Hex: milliseconds since the epoch (11 digits), then random digits (52 bits for a
    record id). New ids sort after old ones, so each insert into an index on them lands
    on its last, cached leaf; random ids put every insert on a cold leaf once the log is
    large (benchmarks/bench_longlog.py: a commit cost 1.5x more on a 10M-record log)."""
    return f"{time.time_ns() // 1_000_000:011x}{os.urandom(8).hex()}"[:length]


class AuditLog(Reads):
    """A connection to the log. Not shared between threads; open one per thread.

    ``busy_timeout_s``: how long a write waits for another writer's lock before it
    fails with :class:`AuditLogError` (a server keeps this short and answers 503).
    ``background_checkpoints``: this process serves; a thread of its own checkpoints
    the WAL, refreshes the anchor and applies retention (:mod:`.maintenance`). Other
    writers only refresh the anchor (``maintained=False``: not even that).
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        background_checkpoints: bool = False,
        busy_timeout_s: float = 30.0,
        maintained: bool = True,
        settings: config.Settings | None = None,
    ) -> None:
        self.settings = s = settings or config.settings()
        target = path or s.audit_db
        #: a SQLite file, or a PostgreSQL URL (shown redacted: it may hold a password)
        self.path: Path | str = target if postgres.is_url(target) else Path(target)
        self.where = config.redact_url(str(self.path))
        self.chain = Chain(s.audit_key)
        self.anchor_path = s.audit_anchor
        self._key_checked = False
        self.db: Any
        if isinstance(self.path, str):
            self.db = postgres.Connection(self.path)
            self._open_postgres()
        else:
            self._open_sqlite(self.path, s, busy_timeout_s, background_checkpoints)
        self._maintenance = (
            maintenance.ensure(self.path, s, serving=background_checkpoints) if maintained else None
        )

    def _open_postgres(self) -> None:
        try:
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self.db.close()
            raise AuditLogError(f"cannot open the audit log at {self.where}: {exc}") from None

    def _open_sqlite(
        self, path: Path, s: config.Settings, busy_timeout_s: float, background_checkpoints: bool
    ) -> None:
        self._busy_ms = int(busy_timeout_s * 1000)
        self._checkpoints_elsewhere = background_checkpoints
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL survives kill -9; FULL also survives power loss (an fsync per commit)
            self.db.execute(f"PRAGMA synchronous={'FULL' if s.audit_sync == 'full' else 'NORMAL'}")
            # a WAL that a checkpoint has reset is cut back to this size
            self.db.execute(f"PRAGMA journal_size_limit={maintenance.wal_reset_bytes(s)}")
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(records)")}
            if not columns or "inputs" in columns:
                self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise AuditLogError(f"cannot open the audit log at {self.path}: {exc}") from exc
        if columns and "inputs" not in columns:
            raise AuditLogError(
                f"the audit log at {self.path} was written by an older nbdeploy (hash chain "
                "format 1); move it aside to start a new log (it stays readable by that version)"
            )
        if background_checkpoints:
            # A checkpoint fsyncs; inside a commit it would stall every request of that
            # batch. A server checkpoints from a thread of its own instead.
            self.db.execute("PRAGMA wal_autocheckpoint=0")

    def close(self) -> None:
        self.db.close()

    # -- writing ------------------------------------------------------------

    def _begin(self, wait: bool = True) -> None:
        """Take the write lock; the first time, check that this log is chained with
        this process's key (mixing keys would break the chain for good).

        ``wait=False``: raise :class:`_NotNow` at once, nothing written, unless the
        lock is free right now."""
        if wait:
            self.db.execute("BEGIN IMMEDIATE")
        else:
            self.db.execute("PRAGMA busy_timeout = 0")
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                raise _NotNow from None
            finally:
                self.db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        if self._key_checked:
            return
        self.db.execute(
            "INSERT OR IGNORE INTO chain_meta VALUES ('format', ?), ('key_id', ?)",
            (str(chains.FORMAT), self.chain.key_id),
        )
        stored = self.db.execute("SELECT value FROM chain_meta WHERE key = 'key_id'").fetchone()[0]
        if stored != self.chain.key_id:
            self.db.execute("ROLLBACK")
            raise AuditLogError(
                f"the audit log at {self.where} is chained "
                + ("with another NBDEPLOY_AUDIT_KEY" if stored else "without NBDEPLOY_AUDIT_KEY")
                + "; use the key it was started with, or move it aside to start a new log"
            )
        self._key_checked = True

    def _last(self, table: str) -> str:
        row = self.db.execute(f"SELECT hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
        return str(row[0]) if row else GENESIS

    def _write(self, what: str, work: Any, wait: bool = True) -> Any:
        try:
            self._begin(wait)
            try:
                result = work()
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise AuditLogError(f"cannot write {what} to the audit log: {exc}") from exc
        if self._maintenance is not None:
            self._maintenance.wrote()
        return result

    def append(self, records: list[Record]) -> None:
        """Commit ``records`` in one transaction (group commit), chaining their hashes."""
        self._write("predictions", lambda: self._insert(records))

    def append_now(self, records: list[Record]) -> bool:
        """Commit ``records`` only if nothing can make the caller wait: a SQLite log
        whose write lock is free right now and whose commits never fsync (synchronous
        NORMAL, checkpoints on the maintenance thread). False: nothing was written (the
        lock is held elsewhere, the log is PostgreSQL, ``NBDEPLOY_AUDIT_SYNC=full``, or
        commits may checkpoint), so the caller commits with :meth:`append`."""
        if (
            not isinstance(self.path, Path)
            or self.settings.audit_sync == "full"
            or not self._checkpoints_elsewhere
        ):
            return False
        try:
            self._write("predictions", lambda: self._insert(records), wait=False)
        except _NotNow:
            return False
        return True

    def _insert(self, records: list[Record]) -> None:
        prev, rows = self._last("records"), []
        for r in records:
            fields = r.fields()
            digest = self.chain.link(prev, chains.record_content(fields, r.payload, r.inputs))
            rows.append((*fields, r.payload, r.inputs, prev, digest))
            prev = digest
        self.db.executemany(
            f"INSERT INTO records ({_RECORD_COLUMNS}, payload, inputs, prev_hash, hash) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )

    def add_alert(self, values: tuple[Any, ...], webhook: str = "") -> int:
        """Record a fired alert (``values`` in :data:`chain.ALERT_FIELDS` order); its seq."""

        def work() -> int:
            prev = self._last("alerts")
            digest = self.chain.link(prev, chains.alert_content(values))
            cursor = self.db.execute(
                f"INSERT INTO alerts ({_ALERT_COLUMNS}, prev_hash, hash) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*values, webhook, prev, digest),
            )
            return int(cursor.lastrowid or 0)

        seq: int = self._write("an alert", work)
        return seq

    def reject(self, rows: list[tuple[float, str, str, str, int]]) -> None:
        """Count rejected requests, never their payload: (ts, deployment, model, code,
        status). Counts add up per minute and code, so a flood adds no rows."""
        buckets = Counter(
            (ts - ts % REJECTION_BUCKET_S, deployment, model, code, status)
            for ts, deployment, model, code, status in rows
        )
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    "INSERT INTO rejections (ts, deployment, model_name, code, status, count) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT (ts, deployment, model_name, code, status) "
                    "DO UPDATE SET count = rejections.count + excluded.count",
                    [(*key, n) for key, n in buckets.items()],
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
        for pid in prediction_ids:
            parse_prediction_id(pid)
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
        entries = [
            (str(p), *owners[str(p)], now, source, orjson.dumps(label, option=_NUMPY))
            for p, label in zip(prediction_ids, labels, strict=True)
        ]

        def work() -> None:
            prev, rows = self._last("feedback"), []
            for *fields, label in entries:
                digest = self.chain.link(prev, chains.feedback_content(fields, label))
                rows.append((*fields, label, prev, digest))
                prev = digest
            self.db.executemany(
                "INSERT INTO feedback (prediction_id, model_name, deployment, ts, source, label, "
                "prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
                rows,
            )

        self._write("feedback", work)
        return len(entries)

    def _owners(self, name: str, prediction_ids: list[str]) -> dict[str, tuple[str, str]]:
        """prediction id -> (model name, deployment) for the ids that ``name`` logged."""
        wanted: dict[str, list[tuple[str, int]]] = {}
        for pid in map(str, prediction_ids):
            record, row = parse_prediction_id(pid)
            wanted.setdefault(record, []).append((pid, row))
        owners: dict[str, tuple[str, str]] = {}
        for rid, n, model, deployment in self._select_records(
            "record_id, n_rows, model_name, deployment", list(wanted), name
        ):
            for pid, row in wanted[rid]:
                if row < n:
                    owners[pid] = (model, deployment)
        return owners

    def _select_records(
        self, columns: str, record_ids: list[str], name: str | None = None
    ) -> Iterator[tuple[Any, ...]]:
        for start in range(0, len(record_ids), 500):
            chunk = record_ids[start : start + 500]
            sql = f"SELECT {columns} FROM records WHERE record_id IN ({','.join('?' * len(chunk))})"
            if name is None:
                yield from self.db.execute(sql, chunk)
            else:
                yield from self.db.execute(
                    sql + " AND (model_name = ? OR deployment = ?)", (*chunk, name, name)
                )

    def erase(self, rows: dict[str, set[int]], why: str) -> int:
        """Remove the inputs of ``rows`` (record id -> row numbers); the outputs, the
        other rows and the chain stay. Returns how many rows were newly erased."""
        found = {
            rid: (n, inputs)
            for rid, n, inputs in self._select_records("record_id, n_rows, inputs", list(rows))
        }
        missing = [r for r, wanted in rows.items() if r not in found or max(wanted) >= found[r][0]]
        if missing:
            raise AuditLogError(
                f"{len(missing)} of the given prediction ids are not in the audit log; "
                "nothing was erased"
            )
        now, updates, newly = time.time(), [], 0
        for rid, wanted in rows.items():
            inputs = found[rid][1]
            erased = chains.erase_rows(inputs, wanted, now, why)
            count = len(chains.erasures(erased))
            newly += count - len(chains.erasures(inputs))
            if erased is not inputs:
                updates.append((erased, count, rid))
        if updates:
            self.db.execute("PRAGMA secure_delete=ON")  # freed pages are zeroed, not left

            def work() -> None:
                self.db.executemany(
                    "UPDATE records SET inputs = ?, erased = ? WHERE record_id = ?", updates
                )
                # a new erasure generation: readers that keep decoded rows (LogTail) reread
                generation = str(int(self.erasures()) + 1)
                self.db.execute("DELETE FROM chain_meta WHERE key = 'erasures'")
                self.db.execute("INSERT INTO chain_meta VALUES ('erasures', ?)", (generation,))

            self._write("an erasure", work)
            try:  # the old pages may still sit in the WAL: copy back and cut it to zero
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # busy: the next checkpoints overwrite them
        return newly

    def expire(self, before: float, why: str, limit: int = 500) -> int:
        """Erase the inputs of records older than ``before`` (retention), oldest first,
        ``limit`` records per transaction. Returns how many records were erased."""
        done = 0
        while True:
            rows = self.db.execute(
                "SELECT record_id, n_rows FROM records WHERE ts < ? AND erased < n_rows "
                "ORDER BY seq LIMIT ?",
                (before, limit),
            ).fetchall()
            if not rows:
                return done
            self.erase({rid: set(range(n)) for rid, n in rows}, why)
            done += len(rows)

    # -- housekeeping (a server's maintenance thread) ---------------------------

    def wal_bytes(self) -> int:
        if not isinstance(self.path, Path):  # PostgreSQL manages its own
            return 0
        wal = self.path.with_name(self.path.name + "-wal")
        return wal.stat().st_size if wal.exists() else 0

    def checkpoint(self, *, catch_up: bool, force: bool) -> str:
        """Copy the WAL back into the database; returns what happened: ``passive``,
        ``caught_up`` (the next commit rewinds the WAL), ``restart`` or ``busy``.

        ``catch_up``: passive passes until two see the same, fully copied WAL (no commit
        came in between), which takes no lock against writers; a commit that was already
        under way can still keep the WAL from rewinding. ``force`` (the WAL kept
        growing): one passive pass, then a RESTART checkpoint, which holds writers for
        the few frames left.
        """
        try:
            before = -1
            for _ in range(CATCH_UP_PASSES if catch_up and not force else 1):
                _, frames, copied = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames == copied == before:
                    return "caught_up"
                before = frames if frames == copied else -1
            if force:
                # while RESTART waits for a reader, new writers wait for it: a long read
                # (a monitor's window) held every commit 50 ms at a time. Wait a couple
                # of milliseconds at most; the next tick tries again.
                waited = self.db.execute("PRAGMA busy_timeout").fetchone()[0]
                self.db.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
                try:
                    busy = self.db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
                finally:
                    self.db.execute(f"PRAGMA busy_timeout = {int(waited)}")
                return "busy" if busy else "restart"
        except sqlite3.Error:
            return "busy"
        return "passive"

    def verify(self, record_id: str) -> bool:
        """Does the chain vouch for this record? (see :func:`.verifying.record_holds`)"""
        from nbdeploy.auditlog.verifying import record_holds

        return record_holds(self, record_id)


class _NotNow(Exception):
    """The write lock was not free at once (:meth:`AuditLog.append_now`)."""


_local = threading.local()


def shared() -> AuditLog:
    """This thread's connection to the configured log (reopened if the home changed)."""
    log = getattr(_local, "log", None)
    if log is None or log.settings is not config.settings():
        if log is not None:
            log.close()
        log = _local.log = AuditLog()
    return log
