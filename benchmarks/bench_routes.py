"""What one single-row request costs on each route, in process (no network, no log).

The part that differs between ``/invocations`` and the V2 route is parsing the body into
model inputs, predicting, and building the response; the batcher and the audit-log
commit after it are the same code for both. This times exactly that part for the
benchmark model of ``bench_serving.py``, many times over, and reports the minimum and
the median: on a shared machine the minimum is what the code costs when it has the
core, the median adds the neighbours. Routes:

- ``/invocations`` ``dataframe_split`` (what bench_serving sends)
- V2, one FP64 tensor ``[1, 20]``, and V2, one named input per column (the fast path)
- V2 through the checked column path (taken when the body holds JSON true/false): checked
  columns, stacked into the same float matrix (before this change: a pandas DataFrame)

Run from the repository root: ``.venv/bin/python benchmarks/bench_routes.py [--n 3000]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_serving as bs
import peers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="timed calls per route and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with bs.scratch_home("nbdeploy-routes-"):
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    import orjson

    from nbdeploy.serving import wire
    from nbdeploy.serving.adapter import load
    from nbdeploy.serving.batching import Answer

    X, _ = bs.train_and_register()
    model = load("bench/1")
    schema = model.schema
    row = X.iloc[0].tolist()
    split, tensor = bs.split_body([row]), peers.v2_body(row)
    named = json.dumps(
        {
            "inputs": [
                {"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
                for c, v in zip(schema.names, row, strict=True)
            ]
        }
    ).encode()

    def answer(inputs: Any) -> Answer:
        out = model.predict(inputs)
        return Answer(out.predictions, ["0123456789abcdef0123-0"], 1, out.proba, model.classes)

    def invocations() -> bytes:
        inputs = wire.from_mlflow_json(schema, orjson.loads(split), may_hold_booleans=False)
        a = answer(inputs)
        body = {"predictions": a.predictions, "prediction_ids": a.prediction_ids}
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)

    def v2(body: bytes, booleans: bool) -> Any:
        def call() -> bytes:
            inputs = wire.from_oip(schema, orjson.loads(body), may_hold_booleans=booleans)
            out = wire.oip_response(model.name, answer(inputs), None)
            return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)

        return call

    routes = {
        "/invocations dataframe_split": invocations,
        "V2 one FP64 tensor (fast path)": v2(tensor, False),
        "V2 named inputs (fast path)": v2(named, False),
        "V2 checked column path (body holds true/false)": v2(tensor, True),
    }
    results = {r: [f() for f in [routes[r]]] and {"min": [], "med": []} for r in routes}
    for _ in range(args.rounds):
        for label, call in routes.items():
            for _ in range(200):  # warm
                call()
            times = []
            for _ in range(args.n):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            results[label]["min"].append(min(times) * 1e6)
            results[label]["med"].append(statistics.median(times) * 1e6)
    med = statistics.median
    base = med(results["/invocations dataframe_split"]["min"])
    print(f"\n1-min load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.n} calls")
    print("| route (parse + predict + response) | min (us) | median (us) | min vs /invocations |")
    print("|---|---:|---:|---:|")
    for label, r in results.items():
        print(
            f"| {label} | {med(r['min']):.0f} | {med(r['med']):.0f} | {med(r['min']) / base:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
