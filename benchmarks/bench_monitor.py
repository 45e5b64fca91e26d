"""What the monitor's report costs, with and without the views beyond the anchors.

    python benchmarks/bench_monitor.py [--rows 20000] [--labelled 5000] [--repeat 3]

A throwaway home: the quickstart's churn model registered with one passthrough column
(``region``) and tested on held-out data (so the label-free estimate has something to
calibrate on), served, sent ``--rows`` predictions in requests of 100 rows, and given
``--labelled`` feedback labels. Then, medians of ``--repeat`` runs: ``report(extras=False)``
(the first stage's tabs: traffic, drift, quality, performance, alerts, compare),
``report()`` (plus fairness, anomalies and the label-free estimate), and each of those
views alone over the same window.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_seconds(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--labelled", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ["NBDEPLOY_HOME"] = tempfile.mkdtemp(prefix="bench-monitor-")
    import nbdeploy as nd
    from nbdeploy.datasets import churn, churn_pipeline
    from nbdeploy.monitoring import beyond
    from nbdeploy.monitoring.data import load_window
    from nbdeploy.monitoring.report import report

    X, y = churn(3000, seed=0)
    X_hold, y_hold = churn(2000, seed=1)
    rng = np.random.default_rng(0)
    model = churn_pipeline().fit(X, y)
    mv = nd.register(model, "churn", X, y, passthrough=["region"])
    nd.test(mv, X_hold.assign(region=rng.choice(["north", "south"], len(X_hold))), y_hold)
    nd.promote(mv, to="champion")
    dep = nd.serve("churn@champion")
    try:
        X_live, y_live = churn(args.rows, seed=2)
        X_live = X_live.assign(region=rng.choice(["north", "south", "east"], args.rows))
        ids: list[str] = []
        for start in range(0, args.rows, 100):
            out = dep.predict(X_live.iloc[start : start + 100])
            ids += list(out["prediction_id"])
        nd.feedback("churn", ids[: args.labelled], list(y_live.iloc[: args.labelled]))
    finally:
        dep.stop()
    window = "1h"
    w = load_window("churn", window)
    print(f"{len(w.served)} logged predictions, {len(w.labels)} labelled", flush=True)
    timings = {
        "report(extras=False)": lambda: report("churn", window, extras=False),
        "report()": lambda: report("churn", window),
        "views beyond the anchors (beyond.compute)": lambda: beyond.compute(w),
        "nd.fairness(by='region')": lambda: nd.fairness("churn", by="region"),
        "nd.anomalies": lambda: nd.anomalies("churn"),
        "nd.estimate": lambda: nd.estimate("churn"),
        "snapshot HTML of report()": lambda: report("churn", window)._repr_html_(),
    }
    print(f"\n| step ({args.rows:,} rows, {args.labelled:,} labelled) | median s |")
    print("|---|---:|")
    for step, work in timings.items():
        work()  # warm: imports and caches, as in a panel that is already open
        print(f"| {step} | {median_seconds(work, args.repeat):.2f} |", flush=True)


if __name__ == "__main__":
    main()
