"""Batch scoring and drift from Parquet: rows/s and peak memory.

    python benchmarks/bench_batch.py [--rows 2000000] [--files 8] [--chunk-rows 50000]
    python benchmarks/bench_batch.py --rows 20000000 --files 80 --columns 20 --cases dask-nolog
    python benchmarks/bench_batch.py --cases drift-wide --drift-rows 500000,2000000,4000000

Compares, on the quickstart pipeline (4 columns, one categorical; with ``--columns N`` a
scaler + one-hot + logistic pipeline on N generated columns, a categorical every fifth),
scoring N rows split over --files Parquet files:

- ``nd.score(engine="dask")``: a local Dask cluster, one file per task, with and
  without audit logging (the difference is the cost of logging batch predictions);
- ``nd.score`` in pandas, file by file in this process, with and without logging;
- MLflow's pyfunc model in pandas chunks (read a batch, predict, write), no logging;
- ``nd.drift`` over the files (streamed in record batches) vs on the whole table in memory;
- ``drift-wide``: streamed ``nd.drift`` of --drift-columns columns (a stored profile as
  reference) at each of --drift-rows sizes, and in memory at the sizes up to
  --drift-memory-rows, to show whether the peak grows with the data.

Each measurement runs in a fresh child process and times the call itself (model load
and, for Dask, starting the local cluster included; Python's imports not); peak memory
is the largest total RSS of that process and all its children (Dask workers included),
sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

CASES = ["dask", "dask-nolog", "pandas", "pandas-nolog", "pyfunc", "drift-files", "drift-memory"]
CASES += ["drift-wide"]
WIDE_FILE_ROWS = 250_000  # rows per file of the drift-wide data


def child(case: str, data: Path, out: Path, chunk: int) -> None:

    files = sorted(data.glob("*.parquet"))
    started = time.perf_counter()
    run(case, files, data, out, chunk)
    print(f"WORK_SECONDS {time.perf_counter() - started}")


def run(case: str, files: list[Path], data: Path, out: Path, chunk: int) -> None:
    import pandas as pd

    import nbdeploy as nd

    ref = os.environ.get("BENCH_REF", "churn/1")  # the model the parent registered

    if case.startswith("dask"):
        nd.score(ref, str(data), output=out, engine="dask", log=case == "dask", chunk_rows=chunk)
    elif case.startswith("pandas"):
        out.mkdir()
        for f in files:
            nd.score(ref, f, output=out / f.name, log=case == "pandas", chunk_rows=chunk)
    elif case == "pyfunc":
        import mlflow.pyfunc
        import pyarrow as pa
        import pyarrow.parquet as pq

        from nbdeploy import config

        mlflow.set_tracking_uri(config.settings().tracking_uri)
        model = mlflow.pyfunc.load_model(f"models:/{ref}")
        out.mkdir()
        for f in files:
            writer = None
            for batch in pq.ParquetFile(f).iter_batches(batch_size=chunk):
                frame = batch.to_pandas()
                # the signature nbdeploy registered: numbers as double, categories as strings
                casts = dict.fromkeys(frame.select_dtypes("integer").columns, "float64")
                casts.update(dict.fromkeys(frame.select_dtypes("category").columns, "object"))
                frame["prediction"] = model.predict(frame.astype(casts))
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = writer or pq.ParquetWriter(out / f.name, table.schema)
                writer.write_table(table)
            assert writer is not None
            writer.close()
    elif case == "drift-files":
        nd.drift(ref, str(data))
    elif case.startswith("wide-"):
        profile = json.loads((data.parent / "wide-profile.json").read_text())
        if case == "wide-stream":
            nd.drift(profile, str(data))
        else:
            nd.drift(profile, pd.concat(pd.read_parquet(f) for f in files))
    else:
        nd.drift(ref, pd.concat(pd.read_parquet(f) for f in files))


def measure(case: str, data: Path, work: Path, chunk: int) -> tuple[float, float]:
    out = work / f"out-{case}"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", case, str(data), str(out), str(chunk)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    peak = 0
    watched = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                tree = [watched, *watched.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output, _ = proc.communicate()
    stop.set()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{case} failed ({proc.returncode})")
    seconds = float(output.rsplit("WORK_SECONDS ", 1)[1])
    return seconds, peak / 2**20


def wide_frame(rows: int, columns: int, seed: int, drifted: bool) -> Any:
    """Numeric columns (normal, lognormal, heavy-tailed t) and a categorical every fifth."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    shift = 0.2 if drifted else 0.0
    out = {}
    for j in range(columns):
        kind = j % 5
        if kind == 4:
            out[f"c{j}"] = rng.choice(["a", "b", "c", "d", "e"], rows)
        elif kind == 3:
            out[f"c{j}"] = rng.standard_t(3, rows) + shift
        elif kind == 2:
            out[f"c{j}"] = rng.lognormal(shift, 1.0, rows)
        else:
            out[f"c{j}"] = rng.normal(shift * kind, 1.0, rows)
    return pd.DataFrame(out)


def drift_wide(work: Path, sizes: list[int], columns: int, memory_up_to: int) -> dict:
    """Streamed (and in-memory) drift of `columns` columns at each size; the data of a
    size is the first files of the largest one (symlinked), written once."""
    from nbdeploy.profiling import build_profile

    (work / "wide-profile.json").write_text(
        json.dumps(build_profile(wide_frame(50_000, columns, 0, drifted=False)))
    )
    files = -(-max(sizes) // WIDE_FILE_ROWS)
    source = work / "wide-all"
    source.mkdir()
    for i in range(files):
        wide_frame(WIDE_FILE_ROWS, columns, 1 + i, drifted=True).to_parquet(
            source / f"part-{i:04d}.parquet", index=False
        )
    print(f"drift over {columns} columns, {WIDE_FILE_ROWS:,} rows per Parquet file")
    print(f"{'case':<14}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}")
    results = {}
    for size in sizes:
        data = work / f"wide-{size}"
        data.mkdir()
        for i in range(-(-size // WIDE_FILE_ROWS)):
            name = f"part-{i:04d}.parquet"
            (data / name).symlink_to(source / name)
        rows = -(-size // WIDE_FILE_ROWS) * WIDE_FILE_ROWS
        for case in ("wide-stream", "wide-memory"):
            if case == "wide-memory" and size > memory_up_to:
                continue
            seconds, peak = measure(case, data, work, 0)
            results[f"{case}-{rows}"] = {"seconds": seconds, "rows": rows, "peak_mb": peak}
            print(f"{case:<14}{rows:>12,}{seconds:>10.1f}{rows / seconds:>12,.0f}{peak:>10.0f}")
    return results


def register_wide(columns: int) -> None:
    """A scaler + one-hot + logistic pipeline on ``wide_frame``'s columns, as ``wide/1``;
    the children score with it (``BENCH_REF``)."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import nbdeploy as nd

    X = wide_frame(20_000, columns, 0, drifted=False)
    numeric = list(X.select_dtypes("number").columns)
    categorical = [c for c in X.columns if c not in numeric]
    y = (X[numeric].sum(axis=1) + np.random.default_rng(0).normal(size=len(X)) > 0).astype(int)
    prep = ColumnTransformer(
        [("num", StandardScaler(), numeric), ("cat", OneHotEncoder(), categorical)]
    )
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=1000))]).fit(X, y)
    nd.register(model, "wide", X, y)
    os.environ["BENCH_REF"] = "wide/1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument(
        "--columns", type=int, default=0,
        help="score a pipeline on this many generated columns (e.g. 20) instead of the "
        "quickstart's 4",
    )  # fmt: skip
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--drift-rows", default="500000,2000000,4000000")
    parser.add_argument("--drift-columns", type=int, default=20)
    parser.add_argument("--drift-memory-rows", type=int, default=2_000_000)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, data, out, chunk = args.child
        child(case, Path(data), Path(out), int(chunk))
        return
    cases = args.cases.split(",")
    with tempfile.TemporaryDirectory(prefix="nbdeploy-bench-batch-") as tmp:
        work = Path(tmp)
        os.environ["NBDEPLOY_HOME"] = str(work / "home")
        if "drift-wide" in cases:
            sizes = [int(s) for s in args.drift_rows.split(",")]
            wide = drift_wide(work, sizes, args.drift_columns, args.drift_memory_rows)
            print(json.dumps({"drift_wide": wide}))
            cases.remove("drift-wide")
            if not cases:
                return
        data = work / "data"
        data.mkdir()
        per_file = args.rows // args.files
        if args.columns:
            register_wide(args.columns)
            for i in range(args.files):
                frame = wide_frame(per_file, args.columns, 100 + i, drifted=False)
                frame.to_parquet(data / f"part-{i:03d}.parquet", index=False)
        else:
            import nbdeploy as nd
            from nbdeploy.datasets import churn, churn_pipeline

            X, y = churn(5000, seed=0)
            nd.register(churn_pipeline().fit(X, y), "churn", X, y)
            for i in range(args.files):
                churn(per_file, seed=100 + i)[0].to_parquet(
                    data / f"part-{i:03d}.parquet", index=False
                )
        rows = per_file * args.files
        results = {}
        model = f"{args.columns} columns" if args.columns else "the quickstart pipeline"
        print(f"{rows:,} rows in {args.files} Parquet files, chunk {args.chunk_rows:,} rows, "
              f"{model}")  # fmt: skip
        print(f"{'case':<14}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}")
        for case in cases:
            seconds, peak = measure(case, data, work, args.chunk_rows)
            results[case] = {"seconds": seconds, "rows_per_s": rows / seconds, "peak_mb": peak}
            print(f"{case:<14}{seconds:>10.1f}{rows / seconds:>12,.0f}{peak:>10.0f}", flush=True)
        print(json.dumps({"rows": rows, "files": args.files, "results": results}))


if __name__ == "__main__":
    main()
