"""The audit log on disk under sustained load: WAL size and bytes per logged prediction.

One nbdeploy server (the 20-feature model of ``bench_serving.py``, pinned to core 0)
takes single-row requests from wrk at concurrency 16 (core 1) for ``--seconds``. Every
0.25 s the size of ``audit.db`` and ``audit.db-wal`` is sampled. Reported: throughput
and latency (wrk), the WAL's largest and final size, the bytes on disk per logged
prediction, and what the server's checkpointer did.

``--unbounded`` runs the same load with the WAL bound off (``NBDEPLOY_AUDIT_WAL_MAX_MB``
so large that only the passive checkpoint every second runs, as before issue 11):
the WAL then grows for as long as the load lasts.

    .venv/bin/python benchmarks/bench_wal.py [--seconds 60] [--unbounded]

Needs ``wrk`` and ``taskset``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_serving import (
    CORE_CLIENT,
    CORE_SERVER,
    NbdeployServer,
    _cleanup,
    _pin_group,
    run_wrk,
    split_body,
    train_and_register,
)


class Sampler(threading.Thread):
    def __init__(self, db: Path, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.db, self.wal, self.every = db, db.with_name(db.name + "-wal"), every
        self.samples: list[tuple[float, int, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stopped.wait(self.every):
            size = self.wal.stat().st_size if self.wal.exists() else 0
            self.samples.append((time.monotonic() - t0, self.db.stat().st_size, size))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (default 60)")
    parser.add_argument("--wal-max-mb", type=float, default=64.0, help="NBDEPLOY_AUDIT_WAL_MAX_MB")
    parser.add_argument("--unbounded", action="store_true", help="turn the WAL bound off")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("error: needs wrk and taskset (apt-get install -y wrk)", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="nbdeploy-wal-"))
    os.environ["NBDEPLOY_HOME"] = str(home)
    os.environ["NBDEPLOY_AUDIT_WAL_MAX_MB"] = "1e9" if args.unbounded else str(args.wal_max_mb)
    for name in ("MLFLOW_TRACKING_URI", "NBDEPLOY_TRACKING_URI", "NBDEPLOY_AUDIT_DB"):
        os.environ.pop(name, None)
    from nbdeploy import config

    config.reset()
    db = config.settings().audit_db
    load = os.getloadavg()[0]
    server = None
    try:
        X, _ = train_and_register()
        one = split_body([X.iloc[0].tolist()])
        lua = home / "post.lua"
        lua.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(one.decode())}\n"
        )
        server = NbdeployServer(one)
        _pin_group(server.pgid, CORE_SERVER)
        os.sched_setaffinity(0, {CORE_CLIENT})
        sampler = Sampler(db)
        sampler.start()
        result = run_wrk(server.url, lua, 2, 16, args.seconds)
        sampler.stopped.set()
        sampler.join()
        with sqlite3.connect(db) as conn:
            logged = conn.execute("SELECT COALESCE(SUM(n_rows), 0) FROM records").fetchone()[0]
        wal_max = max(s[2] for s in sampler.samples)
        db_end, wal_end = sampler.samples[-1][1:]
        print(f"1-min load average at start: {load:.2f} (2 cores; other work skews numbers)")
        print(f"WAL bound: {'off' if args.unbounded else f'{args.wal_max_mb:g} MiB'}")
        print(f"wrk c=16, {args.seconds:g} s: {result['rps']:,.0f} req/s, p50 "
              f"{result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms")  # fmt: skip
        print(f"logged predictions: {logged:,}")
        print(f"audit.db {db_end / 2**20:.1f} MiB, audit.db-wal at the end "
              f"{wal_end / 2**20:.1f} MiB, largest {wal_max / 2**20:.1f} MiB")  # fmt: skip
        print(f"bytes on disk per logged prediction: {(db_end + wal_end) / max(logged, 1):,.0f} "
              f"(database file alone: {db_end / max(logged, 1):,.0f})")  # fmt: skip
        for i in range(0, len(sampler.samples), max(1, len(sampler.samples) // 12)):
            t, d, w = sampler.samples[i]
            print(f"  t={t:5.1f} s  db {d / 2**20:7.1f} MiB  wal {w / 2**20:7.1f} MiB")
        return 0
    finally:
        if server is not None:
            server.stop()
        _cleanup()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
