"""``nbdeploy audit migrate --to postgresql://...``: move a log onto PostgreSQL.

Every table (records, feedback, alerts, rejections and the chain's key id) is copied
row for row, sequence numbers and hashes included, in one transaction on the target.
The chain is verified on the source first (nothing is copied from a log that does not
hold) and on the target after; the copy is kept only when it verifies too and holds
as many rows of every table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy.auditlog.postgres import is_url
from nbdeploy.auditlog.store import AuditLog
from nbdeploy.auditlog.verifying import VerifyReport, verify
from nbdeploy.exceptions import AuditLogError

TABLES = ("chain_meta", "records", "feedback", "alerts", "rejections")


def migrate(to: str, source: str | Path | None = None) -> dict[str, int]:
    """Copy the SQLite log at ``source`` (default: this home's) into the empty
    PostgreSQL log ``to``; returns the rows copied per table."""
    if not is_url(to):
        raise AuditLogError(f"--to takes a postgresql:// URL, not {config.redact_url(str(to))!r}")
    origin = config.settings().audit_db if source is None else source
    if is_url(origin) or not Path(origin).is_file():
        raise AuditLogError(f"no SQLite audit log at {origin}; pass the file to copy from")
    src = AuditLog(Path(origin), maintained=False)
    try:
        _holds(verify(log=src), "the source log")
        dst = AuditLog(to, maintained=False)
        try:
            if int(dst.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]):
                raise AuditLogError(f"{dst.where} already holds records; migrate into an empty log")
            copied = _copy(src, dst)
            try:
                _holds(verify(log=dst), "the copy")
            except AuditLogError:  # never leave a copy that does not verify
                for table in reversed(TABLES):
                    dst.db.execute(f"DELETE FROM {table}")
                raise
            return copied
        finally:
            dst.close()
    finally:
        src.close()


def _holds(report: VerifyReport, what: str) -> None:
    if not report.ok:
        raise AuditLogError(f"{what} does not verify, so nothing was copied: {report.summary()}")


def _copy(src: AuditLog, dst: AuditLog) -> dict[str, int]:
    copied: dict[str, int] = {}
    dst.db.execute("BEGIN IMMEDIATE")
    try:
        for table in TABLES:
            columns = [str(r[1]) for r in src.db.execute(f"PRAGMA table_info({table})")]
            if not columns:
                continue
            listed = ", ".join(columns)
            order = " ORDER BY seq" if "seq" in columns else ""
            cursor = src.db.execute(f"SELECT {listed} FROM {table}{order}")
            insert = f"INSERT INTO {table} ({listed}) VALUES ({','.join('?' * len(columns))})"
            n = 0
            while chunk := cursor.fetchmany(2000):
                dst.db.executemany(insert, [_plain(row) for row in chunk])
                n += len(chunk)
            if "seq" in columns:  # new entries continue after the copied sequence numbers
                dst.db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'), "
                    f"COALESCE((SELECT MAX(seq) FROM {table}), 0) + 1, false)"
                )
            held = int(dst.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            if held != n:
                raise AuditLogError(f"copied {n} rows of {table} but the target holds {held}")
            copied[table] = n
        dst.db.execute("COMMIT")
    except BaseException:
        dst.db.rollback()
        raise
    return copied


def _plain(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
