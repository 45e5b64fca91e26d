"""Native vs ONNX serving: the same verified version answered by its own library and by
onnxruntime (``nbdeploy serve REF --runtime onnx``).

    python benchmarks/bench_runtimes.py [--requests 300]

For the quickstart pipeline and an XGBoost classifier: in-process predict time per
batch (1, 100 and 10,000 rows, median of repeats) and over HTTP the median latency of
single-row requests sent one after another to a real server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbdeploy-bench-rt-") as tmp:
        os.environ["NBDEPLOY_HOME"] = tmp
        import httpx
        import xgboost

        import nbdeploy as nd
        from nbdeploy.datasets import churn, churn_pipeline
        from nbdeploy.serving.adapter import load

        X, y = churn(5000, seed=0)
        X_test, _ = churn(10_000, seed=1)
        numeric = X.assign(contract=X["contract"].cat.codes.astype("int64"))
        numeric_test = X_test.assign(contract=X_test["contract"].cat.codes.astype("int64"))
        models = {
            "pipeline": (nd.register(churn_pipeline().fit(X, y), "pipe", X, y), X_test),
            "xgboost": (
                nd.register(
                    xgboost.XGBClassifier(n_estimators=100, max_depth=4).fit(numeric, y == "yes"),
                    "xgb",
                    numeric,
                    (y == "yes").astype(int),
                ),
                numeric_test,
            ),
        }
        head = f"{'model':<10}{'runtime':<8}{'1 row ms':>10}{'100 ms':>9}{'10k ms':>9}"
        print(head + f"{'HTTP p50 ms':>13}")
        for label, (mv, test) in models.items():
            for runtime in ("native", "onnx"):
                model = load(mv.ref, runtime=runtime)
                cells = []
                for n in (1, 100, 10_000):
                    rows = model.schema.from_frame(test.head(n))
                    cells.append(
                        timed(lambda m=model, r=rows: m.predict(r), 50 if n < 10_000 else 10)
                    )
                dep = nd.serve(mv.ref, name=f"{label}-{runtime}", runtime=runtime)
                one = test.head(1).to_dict(orient="records")
                body = {
                    "dataframe_records": [
                        {k: (v.item() if hasattr(v, "item") else v) for k, v in one[0].items()}
                    ]
                }
                latencies = []
                with httpx.Client() as client:
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        client.post(dep.url + "/invocations", json=body).raise_for_status()
                        latencies.append(time.perf_counter() - started)
                dep.stop()
                p50 = statistics.median(latencies) * 1000
                print(
                    f"{label:<10}{runtime:<8}{cells[0]:>10.3f}{cells[1]:>9.3f}{cells[2]:>9.2f}{p50:>13.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
