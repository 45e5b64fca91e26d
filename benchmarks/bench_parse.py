"""What one large request costs the server: a 4 MiB CSV body (issue 9, item 5).

1. In process: peak memory (tracemalloc) and time to turn the body into checked column
   arrays with ``nbdeploy.serving.wire.from_csv``, and the same for a JSON body of the
   same rows (``dataframe_split``).
2. Live: a server is started; while the large CSV request is answered, ``/health`` is
   polled and its slowest answer reported (the event loop must keep answering).

Run it against any checkout to compare before and after::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_parse.py [--mib 4]

The machine's other load changes the times; compare runs made side by side.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import orjson


def body(mib: float) -> tuple[bytes, bytes, int]:
    from nbdeploy.datasets import churn

    X, _ = churn(1000, seed=3)
    line = X.to_csv(index=False).splitlines()
    header, rows = line[0], line[1:]
    n = int(mib * 2**20 / (sum(map(len, rows)) / len(rows) + 1))
    csv = "\n".join([header] + [rows[i % len(rows)] for i in range(n)]) + "\n"
    frame = X.iloc[[i % len(X) for i in range(n)]]
    split = {"columns": list(X.columns), "data": frame.astype(object).values.tolist()}
    return csv.encode(), orjson.dumps({"dataframe_split": split}), n


def measure(work) -> tuple[float, float]:
    """Seconds (median of 3 plain runs), then peak MiB allocated (a traced run, which
    is slower, so it is not timed)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    work()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20


def in_process(csv: bytes, js: bytes) -> None:
    from nbdeploy.datasets import churn
    from nbdeploy.schema import Schema
    from nbdeploy.serving import app, wire

    schema = Schema.infer(churn(100)[0])
    csv_s, csv_mib = measure(lambda: wire.from_csv(schema, csv))
    js_s, js_mib = measure(
        lambda: wire.from_mlflow_json(schema, app.parse_json(js), may_hold_booleans=False)
    )
    print(f"CSV  {len(csv) / 2**20:.1f} MiB: {csv_s:.2f} s, peak {csv_mib:.0f} MiB above the body")
    print(f"JSON {len(js) / 2**20:.1f} MiB: {js_s:.2f} s, peak {js_mib:.0f} MiB above the body")
    if "max_rows" in inspect.signature(wire.from_csv).parameters:
        over = csv + csv  # twice the rows, limit at the original count: stops half way
        rows = csv.count(b"\n") - 1
        stop_s, stop_mib = measure(lambda: _refused(wire, schema, over, rows))
        print(f"CSV over the row limit: refused after {stop_s:.2f} s, peak {stop_mib:.0f} MiB")


def _refused(wire, schema, body: bytes, limit: int) -> None:
    try:
        wire.from_csv(schema, body, max_rows=limit)
    except wire.TooManyRows:
        return
    raise AssertionError("not refused")


def live(csv: bytes) -> None:
    import nbdeploy as nd
    from nbdeploy import config
    from nbdeploy.datasets import churn, churn_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NBDEPLOY_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("NBDEPLOY_TOKEN", None)
        config.reset()
        X, y = churn(1000, seed=0)
        nd.register(churn_pipeline().fit(X, y), "parse", X, y)
        dep = nd.serve("parse/1")
        try:
            with httpx.Client() as client:
                for _ in range(20):
                    client.get(dep.url + "/health")
                quiet = [_timed(client, dep.url) for _ in range(50)]
                done = threading.Event()
                status: list[int] = []

                def big() -> None:
                    r = httpx.post(
                        dep.url + "/invocations",
                        content=csv,
                        headers={"content-type": "text/csv"},
                        timeout=300,
                    )
                    status.append(r.status_code)
                    done.set()

                started = time.perf_counter()
                threading.Thread(target=big).start()
                during = []
                while not done.is_set():
                    during.append(_timed(client, dep.url))
                big_s = time.perf_counter() - started
        finally:
            dep.stop()
    print(
        f"live: the {len(csv) / 2**20:.1f} MiB CSV request took {big_s:.2f} s "
        f"(status {status[0]}); /health meanwhile: {len(during)} answers, "
        f"slowest {max(during) * 1000:.0f} ms (median when idle "
        f"{statistics.median(quiet) * 1000:.1f} ms)"
    )


def _timed(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    client.get(url + "/health", timeout=60)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=4.0)
    args = parser.parse_args()
    csv, js, n = body(args.mib)
    print(f"{n} rows")
    in_process(csv, js)
    live(csv)


if __name__ == "__main__":
    main()
