"""Soak: a fixed request rate for a long time, sampled every few seconds, drawn as a plot.

nbdeploy (``/invocations``, audit log on), ``mlflow models serve`` and Seldon MLServer 1.7.1
(V2) serve the benchmark model of ``bench_serving.py`` at the same time, all pinned to
core 0. One paced client thread per server (on core 1) sends single-row requests on a
fixed schedule over a keep-alive connection; latency counts from the scheduled send
time, so a server that falls behind shows its queueing (no coordinated omission). Every
``--interval`` seconds it records, per server: achieved requests/s, p50 and p99,
resident memory of all the server's processes (for nbdeploy that includes its
alert-check child), and for nbdeploy the sizes of ``audit.db`` and its WAL.
Output: a CSV, a markdown summary and a PNG (matplotlib).

Run from the repository root (an hour by default)::

    .venv/bin/python benchmarks/bench_soak.py [--minutes 60] [--rate 50] \\
        [--only nbdeploy,mlserver,mlflow] [--png docs/soak.png]
"""

from __future__ import annotations

import argparse
import atexit
import csv
import http.client
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_serving as bs
import peers


@dataclass
class Target:
    label: str
    server: bs.Server
    path: str
    body: bytes
    files: list[Path] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> tuple[list[float], int]:
        with self.lock:
            out, errors = self.latencies, self.errors
            self.latencies, self.errors = [], 0
        return out, errors


def pace(target: Target, rate: float, phase: float, stop: threading.Event) -> None:
    """Send on a fixed schedule; a late response delays later sends, never skips them.

    ``phase`` (a fraction of the period) staggers the servers' schedules: they share one
    core, and requests sent at the same instant would each wait behind the others' work.
    """
    host, port = target.server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    start, i = time.perf_counter() + phase / rate, 0
    while not stop.is_set():
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        try:
            conn.request("POST", target.path, target.body, headers)
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
        elapsed = time.perf_counter() - due
        with target.lock:
            if ok:
                target.latencies.append(elapsed)
            else:
                target.errors += 1
        i += 1


def rss_mb(pgid: int) -> float:
    total = 0
    for pid in bs._group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6 if path.exists() else 0.0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    # 50: mlflow models serve spends ~7 ms of CPU a request, so at 100 req/s it takes most
    # of the shared core and every server queues behind it
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s per server")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds per sample")
    parser.add_argument("--only", default="nbdeploy,mlserver,mlflow")
    parser.add_argument("--png", type=Path, default=Path("docs/soak.png"))
    parser.add_argument("--csv", type=Path, help="samples (default: next to the PNG)")
    args = parser.parse_args(argv)
    atexit.register(bs._cleanup)
    signal.signal(signal.SIGTERM, bs._on_signal)
    home = Path(tempfile.mkdtemp(prefix="nbdeploy-soak-"))
    os.environ["NBDEPLOY_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "NBDEPLOY_TRACKING_URI", "NBDEPLOY_AUDIT_DB"):
        os.environ.pop(key, None)
    from nbdeploy import config

    config.reset()
    try:
        return soak(args, home, config.settings())
    finally:
        bs._cleanup()
        shutil.rmtree(home, ignore_errors=True)


def soak(args: argparse.Namespace, home: Path, settings: object) -> int:
    import nbdeploy as nd

    wanted = set(args.only.split(","))
    load_start = os.getloadavg()[0]
    X, _ = bs.train_and_register()
    nd.promote("bench/1", to="champion", force=True)
    row = X.iloc[0].tolist()
    one, v2 = bs.split_body([row]), peers.v2_body(row)
    targets: list[Target] = []
    if "nbdeploy" in wanted:
        nb = peers.Nbdeploy("bench@champion", "bench", one)
        db = home / "audit.db"
        targets.append(Target("nbdeploy", nb, "/invocations", one, [db, home / "audit.db-wal"]))
    if "mlserver" in wanted:
        ml = peers.MLServer(peers.pickle_of("bench/1"), home / "mlserver")
        ml.wait(v2)
        targets.append(Target("MLServer 1.7.1", ml, "/v2/models/bench/infer", v2))
    if "mlflow" in wanted:
        mf = bs.MlflowServer(one, settings.tracking_uri, home / "mlflow.log")  # type: ignore[attr-defined]
        targets.append(Target("mlflow models serve", mf, "/invocations", one))
    for t in targets:
        bs._pin_group(t.server.pgid, bs.CORE_SERVER)
    os.sched_setaffinity(0, {bs.CORE_CLIENT})
    stop = threading.Event()
    threads = [
        threading.Thread(target=pace, args=(t, args.rate, k / len(targets), stop), daemon=True)
        for k, t in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    samples: list[dict[str, float | str]] = []
    t0 = time.perf_counter()
    end = t0 + args.minutes * 60
    next_at = t0 + args.interval
    try:
        while time.perf_counter() < end:
            time.sleep(max(0.0, next_at - time.perf_counter()))
            now = time.perf_counter()
            for t in targets:
                latencies, errors = t.take()
                sample: dict[str, float | str] = {
                    "t_s": round(now - t0, 1),
                    "server": t.label,
                    "rps": len(latencies) / args.interval,
                    "p50_ms": quantile(latencies, 0.5),
                    "p99_ms": quantile(latencies, 0.99),
                    "errors": errors,
                    "rss_mb": rss_mb(t.server.pgid),
                    "db_mb": size_mb(t.files[0]) if t.files else 0.0,
                    "wal_mb": size_mb(t.files[1]) if t.files else 0.0,
                }
                samples.append(sample)
            line = "; ".join(
                f"{s['server']}: {s['rps']:.0f}/s p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f} ms "
                f"rss {s['rss_mb']:.0f} MB"
                + (f" db {s['db_mb']:.0f} wal {s['wal_mb']:.0f} MB" if s["db_mb"] else "")
                for s in samples[-len(targets) :]
            )
            print(f"[{now - t0:6.0f} s] {line}", flush=True)
            next_at += args.interval
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=35)
        os.sched_setaffinity(0, os.sched_getaffinity(0) | {bs.CORE_SERVER})
    report(args, samples, targets, load_start)
    return 0


def report(
    args: argparse.Namespace,
    samples: list[dict[str, float | str]],
    targets: list[Target],
    load_start: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.png.parent.mkdir(parents=True, exist_ok=True)
    out_csv = args.csv or args.png.with_suffix(".csv")
    with out_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    panels = [
        (axes[0][0], ["rps"], "requests/s (achieved)", False),
        (axes[0][1], ["p50_ms", "p99_ms"], "latency from scheduled send (ms)", True),
        (axes[1][0], ["rss_mb"], "resident memory (MB)", False),
        (axes[1][1], ["db_mb", "wal_mb"], "nbdeploy audit.db / WAL (MB)", False),
    ]
    for ax, keys, title, log in panels:
        for t in targets:
            mine = [s for s in samples if s["server"] == t.label]
            if keys[0] == "db_mb" and not t.files:
                continue
            for key in keys:
                style = "--" if key in ("p99_ms", "wal_mb") else "-"
                ax.plot(
                    [float(s["t_s"]) / 60 for s in mine],
                    [float(s[key]) for s in mine],
                    style,
                    label=f"{t.label} {key.split('_')[0]}" if len(keys) > 1 else t.label,
                )
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.suptitle(
        f"soak: {args.rate:g} req/s per server for {args.minutes:g} min, single-row requests "
        f"(shared, loaded 2-core machine; 1-min load {load_start:.1f} at start)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(args.png, dpi=90)
    med = statistics.median
    print(f"\nplot: {args.png}; samples: {out_csv}\n")
    print(
        "| server | req/s (median) | p50 ms (median) | p99 ms (median of samples) | "
        "p99 ms (worst sample) | errors | RSS MB start -> end | DB + WAL MB at end |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for t in targets:
        mine = [s for s in samples if s["server"] == t.label]
        if not mine:
            continue
        first, last = mine[0], mine[-1]
        disk = f"{last['db_mb']:.0f} + {last['wal_mb']:.0f}" if t.files else "-"
        print(
            f"| {t.label} | {med(float(s['rps']) for s in mine):.0f} | "
            f"{med(float(s['p50_ms']) for s in mine):.2f} | "
            f"{med(float(s['p99_ms']) for s in mine):.2f} | "
            f"{max(float(s['p99_ms']) for s in mine):.2f} | "
            f"{sum(int(s['errors']) for s in mine)} | "
            f"{first['rss_mb']:.0f} -> {last['rss_mb']:.0f} | {disk} |"
        )
    print(
        f"\n1-min load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}; "
        f"servers on core {bs.CORE_SERVER}, client on core {bs.CORE_CLIENT}"
    )


if __name__ == "__main__":
    sys.exit(main())
