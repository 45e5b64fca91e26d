"""Single-row latency and throughput, side by side in one run: nbdeploy ``/invocations``,
nbdeploy's Open Inference Protocol route (``/v2/models/bench/infer``, one FP64 tensor) and
Seldon MLServer 1.7.1 (same pickle, in-process inference, V2).

Every server is pinned to core 0, wrk to core 1; each round measures every target in
turn (so a noisy neighbour hits all of them alike) and the table shows medians:

- p50 and p99 at concurrency 1 (``wrk -t1 -c1 --latency``) and p99/p50
- requests/s at concurrency 16 (``wrk -t2 -c16``)

Run from the repository root (about 3 minutes with the defaults)::

    .venv/bin/python benchmarks/bench_latency.py [--rounds 5] [--seconds 8]

``--no-mlserver`` skips MLServer (its venv is created on first use otherwise);
``--floor`` adds a do-nothing app on the server's own HTTP stack (uvicorn, httptools,
uvloop): what of the tail belongs to the machine, the stack and wrk, not the model.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_serving as bs
import peers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk seconds per run")
    parser.add_argument("--no-mlserver", action="store_true")
    parser.add_argument(
        "--floor", action="store_true", help="also a do-nothing app on the same HTTP stack"
    )
    parser.add_argument(
        "--baseline", type=Path, help="also serve this checkout of nbdeploy (an A/B comparison)"
    )
    parser.add_argument(
        "--ref", default="bench@champion", help="what nbdeploy serves (an alias: its poller runs)"
    )
    args = parser.parse_args(argv)
    atexit.register(bs._cleanup)
    signal.signal(signal.SIGTERM, bs._on_signal)
    home = Path(tempfile.mkdtemp(prefix="nbdeploy-latency-"))
    os.environ["NBDEPLOY_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "NBDEPLOY_TRACKING_URI", "NBDEPLOY_AUDIT_DB"):
        os.environ.pop(key, None)
    from nbdeploy import config

    config.reset()
    try:
        return measure(args, home)
    finally:
        bs._cleanup()
        shutil.rmtree(home, ignore_errors=True)


def measure(args: argparse.Namespace, home: Path) -> int:
    load_start = os.getloadavg()[0]
    import nbdeploy as nd

    X, _ = bs.train_and_register()
    nd.promote("bench/1", to="champion", force=True)
    row = X.iloc[0].tolist()
    one, v2 = bs.split_body([row]), peers.v2_body(row)
    nb = peers.Nbdeploy(args.ref, "bench", one)
    targets = {
        "nbdeploy /invocations": (
            nb.url + "/invocations",
            peers.lua_script(home / "a.lua", one),
            nb.pgid,
        ),
        "nbdeploy V2 infer": (
            nb.url + "/v2/models/bench/infer",
            peers.lua_script(home / "b.lua", v2),
            nb.pgid,
        ),
    }
    servers: list[bs.Server] = [nb]
    if args.baseline is not None:
        base = peers.Nbdeploy(args.ref, "bench-base", one, args.baseline)
        servers.append(base)
        targets["baseline /invocations"] = (
            base.url + "/invocations",
            peers.lua_script(home / "d.lua", one),
            base.pgid,
        )
        targets["baseline V2 infer"] = (
            base.url + "/v2/models/bench/infer",
            peers.lua_script(home / "e.lua", v2),
            base.pgid,
        )
    if args.floor:
        floor = peers.Floor(one)
        servers.append(floor)
        targets["bare uvicorn (floor)"] = (
            floor.url + "/invocations",
            peers.lua_script(home / "f.lua", one),
            floor.pgid,
        )
    if not args.no_mlserver:
        ml = peers.MLServer(peers.pickle_of("bench/1"), home / "mlserver")
        ml.wait(v2)
        servers.append(ml)
        targets["MLServer V2 infer"] = (
            ml.infer_url,
            peers.lua_script(home / "c.lua", v2),
            ml.pgid,
        )
    # identical answers first: the same row through every route
    answers = {
        "nbdeploy /invocations": peers.post(nb.url + "/invocations", one)["predictions"],
        "nbdeploy V2 infer": peers.post(nb.url + "/v2/models/bench/infer", v2)["outputs"][0][
            "data"
        ],
    }
    if not args.no_mlserver:
        answers["MLServer V2 infer"] = peers.post(ml.infer_url, v2)["outputs"][0]["data"]
    same = len({json.dumps([float(v) for v in a]) for a in answers.values()}) == 1
    print(f"identical predictions on the benchmark row: {same} {answers}", flush=True)
    for server in servers:
        bs._pin_group(server.pgid, bs.CORE_SERVER)
    os.sched_setaffinity(0, {bs.CORE_CLIENT})
    for url, lua, _ in targets.values():  # warm every route
        peers.wrk(url, lua, 1, 2)
    results: dict[str, dict[str, list[float]]] = {
        k: {"p50": [], "p99": [], "rps": [], "cpu": []} for k in targets
    }
    for i in range(args.rounds):
        for label, (url, lua, pgid) in targets.items():
            cpu = peers.cpu_seconds(pgid)
            c1 = peers.wrk(url, lua, 1, args.seconds)
            # server CPU per request: what a request costs when the core is not shared
            results[label]["cpu"].append((peers.cpu_seconds(pgid) - cpu) / c1["requests"] * 1e6)
            c16 = peers.wrk(url, lua, 16, args.seconds)
            results[label]["p50"].append(c1["p50_ms"])
            results[label]["p99"].append(c1["p99_ms"])
            results[label]["rps"].append(c16["rps"])
            print(
                f"round {i + 1}/{args.rounds} {label}: c=1 p50 {c1['p50_ms']:.3f} ms "
                f"p99 {c1['p99_ms']:.3f} ms, {results[label]['cpu'][-1]:.0f} us CPU/request; "
                f"c=16 {c16['rps']:,.0f} req/s",
                flush=True,
            )
    med = statistics.median
    print(
        f"\n1-min load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}; "
        f"{args.rounds} rounds of {args.seconds:g} s per measurement, medians; server on "
        f"core {bs.CORE_SERVER}, wrk on core {bs.CORE_CLIENT}\n"
    )
    print(
        "| route | c=1 p50 (ms) | c=1 p99 (ms) | p99/p50 | server CPU per request, c=1 (us) "
        "| c=16 req/s |\n|---|---:|---:|---:|---:|---:|"
    )
    for label, r in results.items():
        p50, p99 = med(r["p50"]), med(r["p99"])
        print(
            f"| {label} | {p50:.3f} | {p99:.3f} | {p99 / p50:.2f} | {med(r['cpu']):.0f} | "
            f"{med(r['rps']):,.0f} |"
        )
    inv, v2r = (
        med(results["nbdeploy /invocations"]["p50"]),
        med(results["nbdeploy V2 infer"]["p50"]),
    )
    print(f"\nV2 p50 / /invocations p50: {v2r / inv:.2f} (target <= 1.2)")
    cpu_inv, cpu_v2 = (
        med(results["nbdeploy /invocations"]["cpu"]),
        med(results["nbdeploy V2 infer"]["cpu"]),
    )
    print(f"V2 CPU / /invocations CPU per request: {cpu_v2 / cpu_inv:.2f}")
    if "MLServer V2 infer" in results:
        theirs = results["MLServer V2 infer"]
        print(f"V2 p50 / MLServer V2 p50: {v2r / med(theirs['p50']):.2f} (<= 1)")
        print(f"V2 CPU / MLServer CPU per request: {cpu_v2 / med(theirs['cpu']):.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
