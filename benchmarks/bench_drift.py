"""Drift detection side by side: nbdeploy vs Evidently 0.7 ``DataDriftPreset``.

Same data for both: 1,000,000 reference and 1,000,000 current rows x 20 numeric
columns, with drift injected into a few known columns. Each tool runs in its own fresh
subprocess (its own peak RSS, VmHWM), data passed through ``.npy`` files.
Evidently needs pandas<3, so it runs from a venv of its own::

    python3 -m venv .venv-evidently
    .venv-evidently/bin/pip install "evidently==0.7.*" "pandas<3"
    .venv/bin/python benchmarks/bench_drift.py            # --evidently-runs 3 --runs 5

nbdeploy is measured (a) against a stored profile (``build_profile`` once, as at
registration; each timed run parses the profile JSON and computes drift end to end)
and (b) from two DataFrames. Times are medians of repeated runs in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_ROWS, N_COLS = 1_000_000, 20
# column -> what is done to it in the current data (in units of the column's std)
INJECTED = {"f2": "mean +0.5 std", "f7": "std x1.5", "f13": "mean +0.2 std"}


def make_data(directory: Path, seed: int = 42) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    kinds = [rng.normal, rng.lognormal, rng.uniform, rng.exponential] * (N_COLS // 4)
    ref = np.empty((N_COLS, N_ROWS))  # one contiguous row per column
    cur = np.empty((N_COLS, N_ROWS))
    for j, draw in enumerate(kinds):
        ref[j] = draw(size=N_ROWS)
        cur[j] = draw(size=N_ROWS)
    for name, change in INJECTED.items():
        j = int(name[1:])
        if change.startswith("mean"):
            cur[j] += float(change.split("+")[1].split()[0]) * ref[j].std()
        else:
            mean = cur[j].mean()
            cur[j] = mean + (cur[j] - mean) * float(change.split("x")[1])
    np.save(directory / "reference.npy", ref)
    np.save(directory / "current.npy", cur)


def _frame(path: Path):
    import numpy as np
    import pandas as pd

    # Read column by column straight into its own array, so that loading the data
    # does not inflate the peak memory we measure.
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        (n_cols, n_rows), _, dtype = np.lib.format.read_array_header_1_0(f)
        cols = {f"f{j}": np.fromfile(f, dtype=dtype, count=n_rows) for j in range(n_cols)}
    return pd.DataFrame(cols, copy=False)


def worker_nbdeploy(directory: Path, mode: str, runs: int) -> dict:
    import orjson

    from nbdeploy.monitoring.driftstats import drift
    from nbdeploy.profiling import load_profile

    current = _frame(directory / "current.npy")
    if mode == "profile":
        raw = (directory / "profile.json").read_bytes()

        def once():
            return drift(load_profile(orjson.loads(raw)), current)
    else:
        reference = _frame(directory / "reference.npy")

        def once():
            return drift(reference, current)

    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        report = once()
        times.append(time.perf_counter() - t0)
    cols = report.columns
    return {"times": times, "flagged": sorted(cols.index[cols["drifted"]]),
            "statistic": cols["statistic"].round(4).to_dict()}  # fmt: skip


def worker_evidently(directory: Path, runs: int) -> dict:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference, current = _frame(directory / "reference.npy"), _frame(directory / "current.npy")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
        metrics = snapshot.dict()["metrics"]
        times.append(time.perf_counter() - t0)
    drifts = [m for m in metrics if m["config"].get("type", "").endswith("ValueDrift")]
    return {"times": times,
            "flagged": sorted(m["config"]["column"] for m in drifts
                              if m["value"] >= m["config"]["threshold"]),
            "statistic": {m["config"]["column"]: round(m["value"], 4) for m in drifts},
            "method": drifts[0]["config"]["method"]}  # fmt: skip


def peak_rss_mb() -> float:
    """This process's own peak RSS.

    ``ru_maxrss`` survives ``execve`` on Linux, so a worker would report its parent's
    peak (the parent holds the generated data); VmHWM belongs to the new address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(python: str, directory: Path, tool: str, runs: int) -> dict:
    out = subprocess.run(
        [python, __file__, "--worker", tool, "--dir", str(directory), "--runs", str(runs)],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs for nbdeploy")
    parser.add_argument("--evidently-runs", type=int, default=3)
    parser.add_argument("--evidently-python", default=str(ROOT / ".venv-evidently/bin/python"))
    parser.add_argument("--worker", choices=["profile", "frames", "evidently"])
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--write", type=Path, help="also write the table into this markdown file")
    args = parser.parse_args()
    if args.worker:
        if args.worker == "evidently":
            result = worker_evidently(args.dir, args.runs)
        else:
            result = worker_nbdeploy(args.dir, args.worker, args.runs)
        result["max_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    import orjson

    from nbdeploy.profiling import build_profile

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_data(directory)
        reference = _frame(directory / "reference.npy")
        t0 = time.perf_counter()
        profile = orjson.dumps(build_profile(reference))
        build_s = time.perf_counter() - t0
        (directory / "profile.json").write_bytes(profile)
        del reference
        results = {
            "nbdeploy, stored profile": run_worker(sys.executable, directory, "profile", args.runs),
            "nbdeploy, two DataFrames": run_worker(sys.executable, directory, "frames", args.runs),
            "Evidently 0.7 DataDriftPreset": run_worker(
                args.evidently_python, directory, "evidently", args.evidently_runs
            ),
        }
    load = (load_before, os.getloadavg()[0])
    table = render(results, build_s, len(profile), load, args)
    print(table)
    if args.write:
        args.write.write_text(table + "\n")


def render(results: dict, build_s: float, profile_bytes: int, load: tuple, args) -> str:
    evid = statistics.median(results["Evidently 0.7 DataDriftPreset"]["times"])
    expected = sorted(INJECTED)
    lines = [
        "| tool | runs | median time | vs Evidently | peak RSS | drifted columns flagged |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        med = statistics.median(r["times"])
        ok = "same as injected" if r["flagged"] == expected else "DIFFERENT"
        lines.append(
            f"| {name} | {len(r['times'])} | {med:.3f} s | {evid / med:,.0f}x | "
            f"{r['max_rss_mb']:,.0f} MB | {', '.join(r['flagged'])} ({ok}) |"
        )
    agree = len({tuple(r["flagged"]) for r in results.values()}) == 1
    cpu = platform.processor() or platform.machine()
    return "\n".join(
        [
            f"1,000,000 reference x 1,000,000 current rows x {N_COLS} numeric columns "
            f"(normal, lognormal, uniform, exponential); drift injected: "
            + ", ".join(f"{k} {v}" for k, v in INJECTED.items()) + ".",
            "",
            *lines,
            "",
            f"All tools flag the same columns: {'yes' if agree else 'NO'}. Evidently chose "
            f"\"{results['Evidently 0.7 DataDriftPreset']['method']}\" for every column, "
            "nbdeploy's default verdict statistic is the same (threshold 0.1).",
            f"Building the stored profile once (at registration): {build_s:.2f} s, "
            f"{profile_bytes / 1024:,.0f} KB of JSON. Peak RSS includes the data held in memory "
            f"(one 1M x 20 float64 frame is 160 MB). Machine: {cpu}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; 1-minute load average {load[0]:.1f} before, "
            f"{load[1]:.1f} after (other work on the machine slows every tool).",
            "",
            "Reproduce: `.venv/bin/python benchmarks/bench_drift.py "
            f"--runs {args.runs} --evidently-runs {args.evidently_runs}`",
        ]
    )  # fmt: skip


if __name__ == "__main__":
    main()
