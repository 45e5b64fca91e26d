"""Does serving stay fast as the audit log grows? Fresh log vs a log of N predictions.

1. Registers the benchmark model of ``bench_serving.py`` in a temporary home, serves it
   (``nd.serve("bench/1")``) on a fresh log and measures single-row ``/invocations``:
   requests/s at concurrency 16, p50 and p99 at concurrency 1 (wrk, server on core 0,
   wrk on core 1, rounds alternate, medians).
2. Fills the log through the store's own API (``AuditLog.append``, hash chain and all)
   with N single-row records shaped exactly like the server's, spread over ``--days``
   days and ending now, in transactions of ``--batch`` records; checkpoints the WAL.
3. Serves the same model on the full log and measures the same numbers.
4. Times the queries behind ``nd.logs``, the monitor and ``nd.audit`` on the full log and
   prints the index SQLite picks for each (``EXPLAIN QUERY PLAN``), and what one
   single-record commit costs there (time and WAL pages written), fresh vs full.

Run from the repository root (10 million predictions: about 6 GB on disk, most of an
hour on a busy 2-core machine; ``--predictions`` makes it shorter)::

    .venv/bin/python benchmarks/bench_longlog.py [--predictions 10000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_serving as bs
import peers

MODEL = "bench"


def serve_and_measure(
    label: str, row: list[float], home: Path, db: Path, args: Any
) -> dict[str, float]:
    os.sched_setaffinity(0, ALL_CORES)
    os.environ["NBDEPLOY_AUDIT_DB"] = str(db)  # the server inherits it
    server = bs.NbdeployServer(bs.split_body([row]))
    try:
        bs._pin_group(server.pgid, bs.CORE_SERVER)
        os.sched_setaffinity(0, {bs.CORE_CLIENT})
        lua = peers.lua_script(home / "one.lua", bs.split_body([row]))
        peers.wrk(server.url + "/invocations", lua, 1, 2)  # warm up
        rps, p50, p99 = [], [], []
        for i in range(args.rounds):
            c16 = peers.wrk(server.url + "/invocations", lua, 16, args.seconds)
            c1 = peers.wrk(server.url + "/invocations", lua, 1, args.seconds)
            rps.append(c16["rps"])
            p50.append(c1["p50_ms"])
            p99.append(c1["p99_ms"])
            print(
                f"{label} round {i + 1}/{args.rounds}: c=16 {c16['rps']:,.0f} req/s; "
                f"c=1 p50 {c1['p50_ms']:.3f} ms p99 {c1['p99_ms']:.3f} ms; "
                f"{sizes(db)}",
                flush=True,
            )
    finally:
        server.stop()
        os.sched_setaffinity(0, ALL_CORES)
    med = statistics.median
    return {"rps": med(rps), "p50": med(p50), "p99": med(p99)}


def sizes(db: Path) -> str:
    wal = db.with_name(db.name + "-wal")
    mb = [p.stat().st_size / 1e6 if p.exists() else 0.0 for p in (db, wal)]
    return f"audit.db {mb[0]:,.0f} MB, WAL {mb[1]:,.0f} MB"


def fill(db: Path, n: int, batch: int, days: float, row: list[float]) -> dict[str, float]:
    """Append ``n`` single-row records the way the server logs them, oldest first."""
    import numpy as np

    from nbdeploy.auditlog import AuditLog, Record, encode_inputs, encode_payload

    rng = np.random.default_rng(7)
    columns = bs.COLUMNS
    payloads = []
    for _ in range(256):  # a pool of distinct, realistic payloads (1 row, proba, classes)
        x = np.asarray([row], dtype=np.float64) + rng.normal(0, 1, (1, len(row)))
        p = float(rng.uniform())
        body = {
            "columns": columns,
            "predictions": np.asarray([int(p > 0.5)]),
            "proba": np.asarray([[1 - p, p]]),
            "classes": [0, 1],
        }
        payloads.append((encode_payload(body), encode_inputs(columns, x)))
    log = AuditLog(db)
    log.db.execute("PRAGMA cache_size=-262144")  # 256 MB for this loader only
    start_ts, step = time.time() - days * 86400, days * 86400 / n
    t0, done, last = time.perf_counter(), 0, time.perf_counter()
    while done < n:
        k = min(batch, n - done)
        records = [
            Record(
                request_id=os.urandom(8).hex(),
                deployment=MODEL,
                model_name=MODEL,
                model_version=1,
                alias=None,
                role="served",
                n_rows=1,
                latency_ms=0.4,
                payload=payloads[(done + i) & 255][0],
                inputs=payloads[(done + i) & 255][1],
                ts=start_ts + (done + i) * step,
            )
            for i in range(k)
        ]
        log.append(records)
        done += k
        if time.perf_counter() - last > 15:
            rate = done / (time.perf_counter() - t0)
            print(f"  filled {done:,} / {n:,} ({rate:,.0f}/s), {sizes(db)}", flush=True)
            last = time.perf_counter()
    seconds = time.perf_counter() - t0
    log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.close()
    return {"seconds": seconds, "rate": n / seconds, "bytes": db.stat().st_size}


def commit_cost(db: Path, row: list[float], n: int = 500) -> tuple[float, float]:
    """Median seconds and mean WAL pages per single-record commit on the current log."""
    import numpy as np

    from nbdeploy.auditlog import AuditLog, Record, encode_inputs, encode_payload

    log = AuditLog(db)
    log.db.execute("PRAGMA wal_autocheckpoint=0")
    payload = encode_payload(
        {
            "columns": bs.COLUMNS,
            "predictions": np.asarray([1]),
            "proba": np.asarray([[0.3, 0.7]]),
            "classes": [0, 1],
        }
    )
    inputs = encode_inputs(bs.COLUMNS, np.asarray([row], dtype=np.float64))
    wal = db.with_name(db.name + "-wal")
    page = log.db.execute("PRAGMA page_size").fetchone()[0]
    before = wal.stat().st_size if wal.exists() else 0
    times = []
    for _ in range(n):
        record = Record(
            os.urandom(8).hex(), MODEL, MODEL, 1, None, "served", 1, 0.4, payload, inputs
        )
        t = time.perf_counter()
        log.append([record])
        times.append(time.perf_counter() - t)
    grown = (wal.stat().st_size - before) / page / n
    log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.close()
    return statistics.median(times), grown


def queries(path: Path) -> list[tuple[str, float, str]]:
    """(what, median seconds, index used) for the reads behind logs, monitor and audit."""
    import nbdeploy as nd
    from nbdeploy.auditlog import shared
    from nbdeploy.monitoring import data

    os.environ["NBDEPLOY_AUDIT_DB"] = str(path)
    from nbdeploy import config

    config.reset()
    db = sqlite3.connect(path)
    newest = db.execute("SELECT record_id FROM records ORDER BY seq DESC LIMIT 1").fetchone()[0]
    now = time.time()

    def plan(sql: str, params: tuple[Any, ...]) -> str:
        rows = db.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return "; ".join(r[-1] for r in rows)

    rec = (
        "SELECT record_id, request_id, ts, model_name, model_version, alias, role, latency_ms, "
        "n_rows, payload FROM records WHERE (model_name = ? OR deployment = ?)"
    )
    cases: list[tuple[str, Any, str]] = [
        (
            "nd.logs(name, limit=1000)",
            lambda: nd.logs(MODEL, limit=1000),
            plan(
                rec.replace(
                    "(model_name = ? OR deployment = ?)", "(+model_name = ? OR +deployment = ?)"
                )
                + " ORDER BY seq DESC",
                (MODEL, MODEL),
            ),
        ),
        (
            'nd.logs(name, since="15m")',
            lambda: nd.logs(MODEL, since="15m"),
            plan(rec + " AND ts >= ? ORDER BY seq DESC", (MODEL, MODEL, now - 900)),
        ),
        (
            'monitor: load_window(name, "1h")',
            lambda: data.load_window(MODEL, "1h"),
            plan(rec + " AND ts >= ? ORDER BY seq DESC", (MODEL, MODEL, now - 3600)),
        ),
        (
            "nd.audit: record(record_id)",
            lambda: shared().record(newest),
            plan("SELECT payload FROM records WHERE record_id = ?", (newest,)),
        ),
        (
            "nd.audit(newest prediction) (with chain check)",
            lambda: nd.audit(f"{newest}-0"),
            "records_id unique index, then a walk from that record to the head",
        ),
    ]
    out = []
    for what, call, used in cases:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        out.append((what, statistics.median(times), used))
        print(f"  {what}: {statistics.median(times) * 1000:,.1f} ms ({used})", flush=True)
    db.close()
    return out


ALL_CORES: set[int] = set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=20_000, help="records per fill commit")
    parser.add_argument("--days", type=float, default=30.0, help="time span of the fill")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk seconds per run")
    parser.add_argument("--home", type=Path, help="keep the home here (default: temporary)")
    parser.add_argument(
        "--reuse", action="store_true", help="--home was filled by an earlier run: skip the fill"
    )
    args = parser.parse_args(argv)
    ALL_CORES.update(os.sched_getaffinity(0))
    atexit.register(bs._cleanup)
    signal.signal(signal.SIGTERM, bs._on_signal)
    home = args.home or Path(tempfile.mkdtemp(prefix="nbdeploy-longlog-"))
    os.environ["NBDEPLOY_HOME"] = str(home)
    os.environ["NBDEPLOY_ALERT_INTERVAL_S"] = "0"  # measure serving, not the alert timer
    for key in ("MLFLOW_TRACKING_URI", "NBDEPLOY_TRACKING_URI", "NBDEPLOY_AUDIT_DB"):
        os.environ.pop(key, None)
    from nbdeploy import config

    config.reset()
    try:
        return run(args, home)
    finally:
        bs._cleanup()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, home: Path) -> int:
    load = os.getloadavg()[0]
    big, row_file = home / "full.db", home / "row.json"
    if args.reuse:
        row = json.loads(row_file.read_text())
    else:
        X, _ = bs.train_and_register()
        row = X.iloc[0].tolist()
        row_file.write_text(json.dumps(row))
    fresh_db = home / f"fresh-{time.time_ns()}.db"
    fresh_commit = commit_cost(fresh_db, row)
    fresh_db.unlink()
    fresh = serve_and_measure("fresh log", row, home, fresh_db, args)
    if not args.reuse:
        print(f"filling {args.predictions:,} predictions ...", flush=True)
        filled = fill(big, args.predictions, args.batch, args.days, row)
        per = filled["bytes"] / args.predictions
        print(
            f"filled in {filled['seconds']:,.0f} s ({filled['rate']:,.0f} records/s); "
            f"{sizes(big)}; {per:,.0f} bytes on disk per logged prediction",
            flush=True,
        )
    full_commit = commit_cost(big, row)
    full = serve_and_measure(f"{args.predictions:,}-prediction log", row, home, big, args)
    print("queries on the full log (median of 3):", flush=True)
    timed = queries(big)
    print(
        f"\n1-min load average at start {load:.2f}, at end {os.getloadavg()[0]:.2f}; "
        f"{args.rounds} rounds of {args.seconds:g} s per measurement (medians); server on "
        f"core {bs.CORE_SERVER}, wrk on core {bs.CORE_CLIENT}\n"
    )
    print(f"| single-row /invocations | fresh log | {args.predictions:,} predictions | ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| c=16 req/s | {fresh['rps']:,.0f} | {full['rps']:,.0f} | "
        f"{full['rps'] / fresh['rps']:.2f} |"
    )
    for key in ("p50", "p99"):
        print(
            f"| c=1 {key} (ms) | {fresh[key]:.3f} | {full[key]:.3f} | "
            f"{full[key] / fresh[key]:.2f} |"
        )
    print(
        f"| one single-record commit (ms) | {fresh_commit[0] * 1000:.3f} | "
        f"{full_commit[0] * 1000:.3f} | {full_commit[0] / fresh_commit[0]:.2f} |"
    )
    print(
        f"| WAL pages written per commit | {fresh_commit[1]:.1f} | {full_commit[1]:.1f} | "
        f"{full_commit[1] / fresh_commit[1]:.2f} |"
    )
    print("\n| query on the full log | median | plan |\n|---|---:|---|")
    for what, seconds, used in timed:
        print(f"| {what} | {seconds * 1000:,.1f} ms | {used} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
