"""Where does the single-row p99 come from? An instrumenting profiler for the tail.

Runs a real deployment (``bench@champion``, alias poller and alert timer on) in this
process, drives it with ``wrk -c1`` from the other core, and records with timestamps:
every request (ASGI start to end), every garbage collection (``gc.callbacks``), every
audit-log commit, every WAL checkpoint, every alias poll and every alert check. Then,
for the requests slower than the run's p99, it reports what overlapped them. What
overlaps nothing is time the process did not get the core (other processes).

    .venv/bin/python benchmarks/tail_probe.py [--seconds 60] [--baseline]
        [--pin-all] [--no-background]

``--baseline`` skips ``steady_tail()`` (gc.freeze and the 0.5 ms GIL switch interval)
to compare with the server as it was. ``--pin-all`` puts every thread of the server
(writer, maintenance) on its core, as ``bench_latency.py`` pins a server; by default
only the event loop's thread is. ``--no-background`` turns off the work nbdeploy does
beside requests (WAL checkpoints, anchors, the alert child), to see what of the tail
is its own.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_serving as bs
import peers

EVENTS: dict[str, list[tuple[float, float]]] = defaultdict(list)
COMMIT_MEDIAN = [0.0]


def timed(kind: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            EVENTS[kind].append((start, time.perf_counter()))

    return wrapper


def instrument() -> None:
    from nbdeploy.auditlog import store
    from nbdeploy.monitoring import alerting
    from nbdeploy.serving import batching

    store.AuditLog.append = timed("audit-log commit", store.AuditLog.append)  # type: ignore[method-assign]
    alerting.check_alerts = timed("alert check", alerting.check_alerts)  # (in its child)
    registry_module = sys.modules["nbdeploy.registry"]
    registry_module.alias_holder = timed("alias poll", registry_module.alias_holder)  # type: ignore[attr-defined]
    del batching  # the follower imports registry lazily: the patch above is what it calls

    from nbdeploy.auditlog import maintenance

    maintenance.Maintenance.checkpoint = timed(  # type: ignore[method-assign]
        "WAL checkpoint", maintenance.Maintenance.checkpoint
    )
    began: dict[int, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[info["generation"]] = time.perf_counter()
        else:
            EVENTS[f"gc gen{info['generation']}"].append(
                (began.pop(info["generation"], time.perf_counter()), time.perf_counter())
            )

    gc.callbacks.append(on_gc)


class Probe:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = time.perf_counter()
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            EVENTS["request"].append((start, time.perf_counter()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--pin-all", action="store_true")
    parser.add_argument("--no-background", action="store_true")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="nbdeploy-tail-"))
    os.environ["NBDEPLOY_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "NBDEPLOY_TRACKING_URI", "NBDEPLOY_AUDIT_DB"):
        os.environ.pop(key, None)
    from nbdeploy import config

    config.reset()
    try:
        return probe(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def probe(args: argparse.Namespace, home: Path) -> int:
    import uvicorn

    import nbdeploy as nd
    from nbdeploy import config
    from nbdeploy.monitoring.alerting import start_timer
    from nbdeploy.serving import server as srv
    from nbdeploy.serving.app import App

    X, _ = bs.train_and_register()
    nd.promote("bench/1", to="champion", force=True)
    instrument()
    if args.no_background:
        from nbdeploy.auditlog import maintenance

        maintenance.Maintenance.run = lambda self: None  # type: ignore[method-assign]
    if args.pin_all:  # threads started from here on inherit the core
        os.sched_setaffinity(0, {bs.CORE_SERVER})
    s = config.settings()
    dep = srv.ServerSetup(
        "bench@champion",
        name="bench",
        shadow=[],
        split={},
        threshold=None,
        fallback=None,
        trust_unverified=False,
    )
    app = App(dep.primary, max_body_bytes=s.max_body_bytes, max_rows=s.max_rows, router=dep.router)
    if not args.no_background:
        start_timer(dep.name)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/invocations"
    lua = peers.lua_script(home / "one.lua", bs.split_body([X.iloc[0].tolist()]))
    os.sched_setaffinity(0, {bs.CORE_SERVER})
    if not args.baseline:
        srv.steady_tail()
    server = uvicorn.Server(
        uvicorn.Config(Probe(app), loop="uvloop", http="httptools", lifespan="off",
                       access_log=False, log_level="warning")
    )  # fmt: skip

    def drive() -> None:
        time.sleep(1.0)
        wrk = ["taskset", "-c", str(bs.CORE_CLIENT), "wrk", "-t1", "-c1", "-s", str(lua)]
        subprocess.run([*wrk, "-d2s", url], capture_output=True)
        EVENTS.clear()
        subprocess.run([*wrk, f"-d{args.seconds:g}s", url], capture_output=True)
        server.should_exit = True

    threading.Thread(target=drive, daemon=True).start()
    load = os.getloadavg()[0]
    server.run(sockets=[sock])
    report(args, load)
    return 0


def report(args: argparse.Namespace, load: float) -> None:
    requests = EVENTS.pop("request")
    latencies = sorted(end - start for start, end in requests)
    p50 = statistics.median(latencies)
    p99 = latencies[int(0.99 * len(latencies))]
    slow = [(s, e) for s, e in requests if e - s >= p99]
    commits = [b - a for a, b in EVENTS.get("audit-log commit", [])]
    COMMIT_MEDIAN[0] = statistics.median(commits) if commits else 0.0
    print(
        f"\n{'baseline' if args.baseline else 'steady_tail'}"
        f"{', all threads pinned' if args.pin_all else ''}"
        f"{', no background work' if args.no_background else ''}: {len(requests):,} requests; "
        f"server-side p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, p99/p50 {p99 / p50:.2f}; "
        f"1-min load {load:.1f}\n"
    )
    # each slow request is blamed on what covered most of its time beyond the median
    # (if that covers at least half of it); the rest is time the core was elsewhere
    blame: dict[str, int] = defaultdict(int)
    for s, e in slow:
        cover = {
            kind: sum(max(0.0, min(b, e) - max(a, s)) for a, b in spans)
            for kind, spans in EVENTS.items()
            if kind != "audit-log commit"
        }
        commits = [b - a for a, b in EVENTS.get("audit-log commit", []) if a < e and b > s]
        cover["audit-log commit (its own, beyond 2x median)"] = sum(
            c for c in commits if c > 2 * COMMIT_MEDIAN[0]
        )
        kind, covered = max(cover.items(), key=lambda kv: kv[1], default=("", 0.0))
        excess = (e - s) - p50
        blame[kind if covered >= 0.5 * excess else "nothing recorded (core elsewhere)"] += 1
    print("| event | count | median ms | max ms |\n|---|---:|---:|---:|")
    for kind, spans in sorted(EVENTS.items()):
        durations = [(b - a) * 1000 for a, b in spans]
        if durations:
            print(
                f"| {kind} | {len(spans):,} | {statistics.median(durations):.3f} | "
                f"{max(durations):.2f} |"
            )
    long_commits = [(a, b) for a, b in EVENTS.get("audit-log commit", []) if b - a > 0.005]
    for kind in ("WAL checkpoint", "alias poll", "alert check"):
        spans = EVENTS.get(kind, [])
        during = [c for c in long_commits if any(a < c[1] and b > c[0] for a, b in spans)]
        if long_commits:
            print(
                f"commits over 5 ms: {len(long_commits)}, of which {len(during)} overlap a {kind}"
            )
    print("\n| slowest 1% of requests: mostly covered by | share |\n|---|---:|")
    for kind, count in sorted(blame.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {count / len(slow):.0%} |")


if __name__ == "__main__":
    sys.exit(main())
