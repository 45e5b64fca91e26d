"""How much of a tail does this machine add to work that has no tail of its own?

Times the exact step the server spends most of a request on, the loaded benchmark
model's ``predict`` of one row (``bench/1`` through ``serving.adapter``, as the server
calls it), back to back on the server's core: no HTTP, no threads, no I/O, no audit
log. Whatever p99/p50 this shows comes from the host (other guests, the hypervisor,
caches, the CPU's clock), and a server doing this work under ``wrk`` cannot show less.

    .venv/bin/python benchmarks/host_jitter.py [--rounds 4] [--seconds 8]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_serving as bs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    with bs.scratch_home("nbdeploy-jitter-"):
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    from nbdeploy.serving.adapter import load

    X, _ = bs.train_and_register()
    model = load("bench/1")
    row = model.schema.from_matrix(X.iloc[[0]].to_numpy(dtype=float))  # as a numeric body
    os.sched_setaffinity(0, {bs.CORE_SERVER})
    gc.freeze()  # as the server does once it is ready
    ratios = []
    print("| round | calls | p50 (ms) | p99 (ms) | p99/p50 | 1-min load |")
    print("|---:|---:|---:|---:|---:|---:|")
    for i in range(args.rounds):
        spans = []
        end = time.perf_counter() + args.seconds
        while (start := time.perf_counter()) < end:
            model.predict(row)
            spans.append(time.perf_counter() - start)
        spans.sort()
        p50, p99 = spans[len(spans) // 2], spans[int(0.99 * len(spans))]
        ratios.append(p99 / p50)
        print(
            f"| {i + 1} | {len(spans):,} | {p50 * 1e3:.3f} | {p99 * 1e3:.3f} | "
            f"{p99 / p50:.2f} | {os.getloadavg()[0]:.2f} |",
            flush=True,
        )
    print(f"\nmedian p99/p50 over {args.rounds} rounds: {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
