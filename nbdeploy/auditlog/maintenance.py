"""Housekeeping of the log, off the request path: anchor, checkpoints, retention.

One thread per process and log (a file or a PostgreSQL database). Any process that
writes the log refreshes the anchor (:mod:`.anchor`) every ``NBDEPLOY_AUDIT_ANCHOR_S``
seconds after a write, and once more when it exits cleanly. A server's thread also:

- keeps the write-ahead log bounded. SQLite only rewinds the WAL once a checkpoint has
  copied *every* frame back while no reader needs the old ones; under steady traffic a
  passive checkpoint never catches up, and the WAL grew by gigabytes an hour. So each
  second a PASSIVE checkpoint copies what it can without blocking anyone, and as soon
  as the WAL passes a quarter of ``NBDEPLOY_AUDIT_WAL_MAX_MB`` (checked five times a
  second) a PASSIVE pass is followed by a RESTART checkpoint, which copies the little
  that is left and rewinds the WAL (``journal_size_limit`` then cuts the file back to
  that quarter). RESTART briefly holds the write lock; it gives up after 2 ms if a
  reader is in the way, and tries again at the next tick;
- applies retention (``NBDEPLOY_RETENTION_DAYS``): the inputs of older records are
  erased every ten minutes, as ``nd.erase`` does.
"""

from __future__ import annotations

import atexit
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nbdeploy import config

if TYPE_CHECKING:
    from nbdeploy.auditlog.store import AuditLog

RETENTION_EVERY_S = 600.0
#: How often the thread looks at the WAL's size (a stat call) and the anchor's age.
TICK_S = 0.2
_threads: dict[Path | str, Maintenance] = {}
_lock = threading.Lock()


class Maintenance(threading.Thread):
    def __init__(self, path: Path | str, settings: config.Settings) -> None:
        super().__init__(name="nbdeploy-audit-maintenance", daemon=True)
        self.path, self.settings = path, settings
        self.serving = False
        self.dirty = False
        self.written = False  # this process wrote the log: anchor once more at exit
        self.stopped = threading.Event()
        #: what the checkpoints did, for the benchmark and the tests
        self.stats = {"passive": 0, "caught_up": 0, "restart": 0, "busy": 0, "anchors": 0}

    def wrote(self) -> None:
        self.dirty = self.written = True
        if not self.is_alive() and not self.stopped.is_set():
            with _lock:
                if not self.is_alive() and self.ident is None:
                    self.start()

    def run(self) -> None:
        from nbdeploy.auditlog.store import AuditLog

        s = self.settings
        log: AuditLog | None = None
        last_anchor = last_retention = last_checkpoint = -math.inf  # all due at once
        # PostgreSQL keeps its own write-ahead log: only SQLite's needs checkpoints here
        wal = isinstance(self.path, Path)
        while not self.stopped.wait(TICK_S):
            if not _exists(self.path):
                return  # the log was removed (a test's home): nothing left to keep
            now = time.monotonic()
            try:
                if log is None:
                    # opening sets pragmas, which can meet a writer's lock: try next tick
                    log = AuditLog(self.path, maintained=False, settings=s, busy_timeout_s=0.05)
                size = log.wal_bytes() if self.serving and wal else 0
                full = size > wal_reset_bytes(s)
                if self.serving and wal and (full or now - last_checkpoint >= 1.0):
                    last_checkpoint = now
                    self.checkpoint(log, restart=full, force=size > 2 * wal_reset_bytes(s))
                if self.dirty and now - last_anchor >= s.audit_anchor_s:
                    self.anchor(log)
                    last_anchor = now
                if self.serving and s.retention_days and now - last_retention >= RETENTION_EVERY_S:
                    last_retention = now
                    expire(log, s.retention_days)
            except Exception as exc:  # housekeeping must never take a server down
                print(f"nbdeploy: audit log maintenance: {type(exc).__name__}: {exc}", flush=True)

    def anchor(self, log: AuditLog) -> None:
        self.dirty = False
        log.anchor()
        self.stats["anchors"] += 1

    def checkpoint(self, log: AuditLog, *, restart: bool, force: bool = False) -> None:
        self.stats[log.checkpoint(catch_up=restart, force=force)] += 1


def wal_reset_bytes(settings: config.Settings) -> int:
    """Past this size a server rewinds the WAL, which is then cut back to it: a quarter
    of ``NBDEPLOY_AUDIT_WAL_MAX_MB`` leaves room for the writes of a few ticks."""
    return int(settings.audit_wal_max_mb * 2**20 / 4)


def expire(log: AuditLog, days: float) -> int:
    """Erase the inputs of records older than ``days`` days; returns how many records."""
    return log.expire(time.time() - days * 86400.0, f"retention: older than {days:g} days")


def _exists(path: Path | str) -> bool:
    return not isinstance(path, Path) or path.exists()


def ensure(path: Path | str, settings: config.Settings, *, serving: bool) -> Maintenance:
    """This process's maintenance of ``path``; a serving log starts it right away,
    others on their first write."""
    with _lock:
        thread = _threads.get(path)
        stale = thread is not None and (
            thread.settings is not settings
            or thread.stopped.is_set()
            or (thread.ident is not None and not thread.is_alive())
        )
        if stale and thread is not None:
            thread.stopped.set()
            _anchor_now(thread)
        if thread is None or stale:
            thread = _threads[path] = Maintenance(path, settings)
    if serving:
        thread.serving = True
        thread.wrote()
    return thread


def _anchor_now(thread: Maintenance) -> None:
    from nbdeploy.auditlog.store import AuditLog

    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout=2.0)  # let a pass in progress finish its anchor
    if thread.written and _exists(thread.path):
        thread.dirty = False
        try:
            log = AuditLog(thread.path, maintained=False, settings=thread.settings)
            log.anchor()
            log.close()
        except Exception as exc:
            print(f"nbdeploy: audit anchor not written: {exc}", flush=True)


@atexit.register
def shutdown() -> None:
    """Stop every maintenance thread of this process, anchoring what it wrote since the
    last anchor: at a clean exit, or before the databases go away."""
    with _lock:
        threads = list(_threads.values())
        _threads.clear()
    for thread in threads:
        thread.stopped.set()
        _anchor_now(thread)
