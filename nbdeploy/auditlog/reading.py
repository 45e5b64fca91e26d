"""Reading the SQLite log: the chain's entries for verification, records for queries.

Mixed into :class:`nbdeploy.auditlog.store.AuditLog` (``self.db`` is its connection);
apart from the writes so that each file stays one concern.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbdeploy.auditlog import chain as chains
from nbdeploy.auditlog.chain import GENESIS

_RECORD_COLUMNS = ", ".join(chains.RECORD_FIELDS)
#: Rejected requests are counted per deployment, code and this many seconds.
REJECTION_BUCKET_S = 60.0


class Reads:
    db: sqlite3.Connection
    anchor_path: Path
    chain: chains.Chain

    # -- the chain ----------------------------------------------------------

    def heads(self) -> dict[str, tuple[int, str]]:
        """(seq, hash) of the newest entry of each chained table that has one."""
        out = {}
        for table in chains.TABLES:
            row = self.db.execute(
                f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            if row:
                out[table] = (int(row[0]), str(row[1]))
        return out

    def head(self) -> str:
        """The newest record's hash."""
        return self.heads().get("records", (0, GENESIS))[1]

    def anchor(self) -> None:
        """Keep the newest hashes outside the database (see :mod:`.anchor`)."""
        from nbdeploy.auditlog import anchor

        def holds(table: str, seq: int, digest: str) -> bool:
            row = self.db.execute(f"SELECT hash FROM {table} WHERE seq = ?", (seq,)).fetchone()
            return row is not None and str(row[0]) == digest

        anchor.write(self.anchor_path, self.heads(), self.chain, holds)

    def erasures(self) -> str:
        """Changes with every erasure (``nd.erase``, retention): the generation of inputs."""
        row = self.db.execute("SELECT value FROM chain_meta WHERE key = 'erasures'").fetchone()
        return "0" if row is None else str(row[0])

    def key_id(self) -> str | None:
        """The key id the log was started with (None: nothing written yet)."""
        row = self.db.execute("SELECT value FROM chain_meta WHERE key = 'key_id'").fetchone()
        return None if row is None else str(row[0])

    def entries(
        self, table: str, after: int = 0
    ) -> Iterator[tuple[int, str, str, str, bytes, str]]:
        """(seq, id, prev_hash, hash, content, name) of ``table``'s entries after seq
        ``after``, oldest first; ``name`` is the model or deployment it belongs to."""
        if table == "records":
            sql = (f"SELECT seq, {_RECORD_COLUMNS}, payload, inputs, prev_hash, hash, deployment "
                   "FROM records WHERE seq > ? ORDER BY seq")  # fmt: skip
            for seq, *fields, payload, inputs, prev, digest, deployment in self._stream(sql, after):
                body = chains.record_content(fields, payload, inputs)
                yield seq, fields[0], prev, digest, body, f"{fields[4]}\x00{deployment}"
        elif table == "feedback":
            sql = ("SELECT seq, prediction_id, model_name, deployment, ts, source, label, "
                   "prev_hash, hash FROM feedback WHERE seq > ? ORDER BY seq")  # fmt: skip
            for seq, *fields, label, prev, digest in self._stream(sql, after):
                body = chains.feedback_content(fields, label)
                yield seq, fields[0], prev, digest, body, f"{fields[1]}\x00{fields[2]}"
        else:
            sql = (f"SELECT seq, {', '.join(chains.ALERT_FIELDS)}, prev_hash, hash FROM alerts "
                   "WHERE seq > ? ORDER BY seq")  # fmt: skip
            for seq, *fields, prev, digest in self._stream(sql, after):
                body = chains.alert_content(fields)
                yield seq, f"{fields[2]}", prev, digest, body, f"{fields[1]}\x00"

    def _stream(self, sql: str, after: int) -> Iterator[tuple[Any, ...]]:
        """Rows in pages, so a long walk holds no read snapshot for its whole length."""
        while True:
            page = self.db.execute(sql + " LIMIT 200", (after,)).fetchall()
            yield from page
            if len(page) < 200:
                return
            after = page[-1][0]

    def record_link(self, record_id: str) -> tuple[int, str] | None:
        """(seq, prev_hash) of one record."""
        row = self.db.execute(
            "SELECT seq, prev_hash FROM records WHERE record_id = ?", (record_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def hash_before(self, table: str, seq: int) -> str:
        row = self.db.execute(
            f"SELECT hash FROM {table} WHERE seq < ? ORDER BY seq DESC LIMIT 1", (seq,)
        ).fetchone()
        return str(row[0]) if row else GENESIS

    def entry_hash(self, table: str, seq: int) -> str | None:
        row = self.db.execute(f"SELECT hash FROM {table} WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    # -- reading ------------------------------------------------------------

    def records(
        self,
        name: str,
        *,
        since: float | None = None,
        limit: int | None = None,
        role: str | None = None,
        after: int = 0,
        upto: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """``name``'s records (with ``seq`` in (``after``, ``upto``]), oldest first; the
        newest that hold ``limit`` predictions when a limit is given."""
        # Without a start time, walk the table newest first (rowid order: no sort, and
        # the loop below stops at ``limit``); the unary + keeps SQLite from collecting
        # every record of ``name`` through the name indexes and sorting them all.
        # With one, the (name, ts) indexes find just that window. After a known record
        # (a LogTail's next read), the rowid range finds just the records logged since.
        walk = since is None or after > 0
        names = "(+model_name = ? OR +deployment = ?)" if walk else None
        where = [names or "(model_name = ? OR deployment = ?)"]
        args: list[Any] = [name, name]
        for clause, value in (("+ts >= ?" if after else "ts >= ?", since), ("role = ?", role),
                              ("seq > ?", after or None), ("seq <= ?", upto)):  # fmt: skip
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = (
            "SELECT record_id, request_id, ts, model_name, model_version, alias, role, "
            f"latency_ms, n_rows, payload, inputs FROM records WHERE {' AND '.join(where)} "
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

    def newest_seq(self) -> int:
        """The seq of the newest record (0: none yet)."""
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0])

    def record(self, record_id: str) -> tuple[Any, ...] | None:
        """(request_id, ts, model_name, model_version, alias, role, payload, inputs)."""
        row: tuple[Any, ...] | None = self.db.execute(
            "SELECT request_id, ts, model_name, model_version, alias, role, payload, inputs "
            "FROM records WHERE record_id = ?",
            (record_id,),
        ).fetchone()
        return row

    def window(
        self, name: str, since: float | None = None, until: float | None = None
    ) -> list[tuple[Any, ...]]:
        """(record_id, ts, model_version, alias, role, n_rows, latency_ms, payload, inputs)
        of ``name``'s records in [since, until], oldest first."""
        return self.db.execute(
            "SELECT record_id, ts, model_version, alias, role, n_rows, latency_ms, payload, "
            "inputs FROM records WHERE (model_name = ? OR deployment = ?) AND ts >= ? AND "
            "ts <= ? ORDER BY seq",
            (
                name,
                name,
                since if since is not None else -1.0,
                until if until is not None else float("inf"),
            ),
        ).fetchall()

    def rejections(self, name: str, since: float | None = None) -> list[tuple[Any, ...]]:
        """(minute, code, status, count) of the requests ``name`` rejected since ``since``."""
        return self.db.execute(
            "SELECT ts, code, status, count FROM rejections WHERE (deployment = ? OR "
            "model_name = ?) AND ts >= ? ORDER BY seq",
            (name, name, since - since % REJECTION_BUCKET_S if since is not None else -1.0),
        ).fetchall()

    def watermark(self, name: str) -> tuple[Any, ...]:
        """Changes whenever ``name`` logs, rejects or gets feedback, or any alert fires:
        lets a live view skip recomputing when nothing happened."""
        args = (name, name)
        return (
            # newest first, stopping at the first match (MAX() over the name indexes
            # would visit every record of the name)
            (
                self.db.execute(
                    "SELECT seq FROM records WHERE +model_name = ? OR +deployment = ? "
                    "ORDER BY seq DESC LIMIT 1",
                    args,
                ).fetchone()
                or (None,)
            )[0],
            self.db.execute(
                "SELECT MAX(seq), SUM(count) FROM rejections WHERE model_name = ? OR "
                "deployment = ?",
                args,
            ).fetchone(),
            self.db.execute("SELECT MAX(seq) FROM feedback").fetchone()[0],
            self.db.execute("SELECT MAX(seq) FROM alerts").fetchone()[0],
        )

    def counts(self, name: str) -> dict[str, int]:
        predictions = self.db.execute(
            "SELECT COALESCE(SUM(n_rows), 0) FROM records WHERE model_name = ? OR deployment = ?",
            (name, name),
        ).fetchone()[0]
        rejected = self.db.execute(
            "SELECT COALESCE(SUM(count), 0) FROM rejections WHERE model_name = ? OR deployment = ?",
            (name, name),
        ).fetchone()[0]
        return {"predictions": int(predictions), "rejected": int(rejected)}
