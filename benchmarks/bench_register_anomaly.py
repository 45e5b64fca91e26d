"""What fitting the anomaly detector adds to ``nd.register``.

    python benchmarks/bench_register_anomaly.py

Registers the quickstart's churn pipeline with ``anomaly_fpr=None`` (no detector) and
with the default (1%), alternating, in one process and a throwaway NBDEPLOY_HOME, at
1,500 and 100,000 training rows; prints the median of each.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time


def main() -> None:
    os.environ["NBDEPLOY_HOME"] = tempfile.mkdtemp(prefix="bench-register-")
    import nbdeploy as nd
    from nbdeploy.datasets import churn, churn_pipeline

    for rows in (1_500, 100_000):
        X, y = churn(rows)
        model = churn_pipeline().fit(X, y)
        nd.register(model, "warm-up", X, y)
        times: dict[str, list[float]] = {"without detector": [], "with detector": []}
        for _ in range(3):
            for label, fpr in (("without detector", None), ("with detector", 0.01)):
                started = time.perf_counter()
                nd.register(model, "churn", X, y, anomaly_fpr=fpr)
                times[label].append(time.perf_counter() - started)
        medians = {k: statistics.median(v) for k, v in times.items()}
        added = medians["with detector"] - medians["without detector"]
        print(f"{rows:>7} rows: " + ", ".join(f"{k} {v:.3f} s" for k, v in medians.items())
              + f", added {added:+.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
