"""The first ``nd.register`` in a fresh process: in an existing home, and in a new one.

A notebook user pays the first register of each kernel (MLflow's import, its store,
saving the model) and, once per project, the creation of the registry itself. Each
case runs in its own Python process, as a new kernel would, after pandas and
scikit-learn are imported and the model is fitted (the user's notebook has done that
already); the timer covers ``import nbdeploy`` and the register call.

Each case reports wall time and the process's CPU time (user + system, all threads):
on a machine shared with other work the wall time stretches with the load, the CPU
time much less.

Cases (medians of ``--repeat`` processes each):
- ``warm``: a second register in the same process (what the README reported before);
- ``cold kernel``: the first register of a new process, in a home that has a registry;
- ``new home``: the first register of a new process in an empty home;
- ``new home, empty cache``: the same with an empty user cache (once per MLflow
  version and machine: nbdeploy builds the empty MLflow database it copies).

    python benchmarks/bench_register.py [--repeat 5] [--pythonpath OTHER_CHECKOUT]

``--pythonpath`` measures another checkout of nbdeploy (e.g. an older commit,
exported with ``git archive``) in the same way, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
from nbdeploy.datasets import churn, churn_pipeline  # pandas, scikit-learn: the user's
X, y = churn(1000, seed=0)
clf = churn_pipeline().fit(X, y)
start, cpu = time.perf_counter(), time.process_time()
import nbdeploy as nd
nd.register(clf, "churn", X, y)
first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
start, cpu = time.perf_counter(), time.process_time()
nd.register(clf, "churn", X, y)
print(json.dumps({"first": first, "second": time.perf_counter() - start,
                  "first_cpu": first_cpu, "second_cpu": time.process_time() - cpu}))
"""


def run(home: Path, cache: Path, pythonpath: str) -> dict[str, float]:
    env = {**os.environ, "NBDEPLOY_HOME": str(home), "XDG_CACHE_HOME": str(cache),
           "PYTHONPATH": pythonpath}  # fmt: skip
    for own_registry in ("MLFLOW_TRACKING_URI", "NBDEPLOY_TRACKING_URI"):
        env.pop(own_registry, None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        cwd=home.parent,  # not a checkout: `python -c` puts the working directory first
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="processes per case")
    parser.add_argument(
        "--pythonpath",
        default=str(Path(__file__).resolve().parent.parent),
        help="the nbdeploy checkout to measure (default: this one)",
    )
    args = parser.parse_args()
    names = {
        "warm": "warm (second register, same process)",
        "cold": "cold kernel (first register, existing home)",
        "new": "new home (first register, empty home)",
        "empty": "new home, empty cache (once per MLflow version)",
    }
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}

    def keep(case: str, result: dict[str, float], which: str = "first") -> None:
        wall[case].append(result[which])
        cpu[case].append(result[which + "_cpu"])

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shared_cache = root / "cache"
        existing = root / "existing"
        run(existing, shared_cache, args.pythonpath)  # the registry exists, the cache is built
        for i in range(args.repeat):
            keep("empty", run(root / f"empty-cache-{i}", root / f"cache-{i}", args.pythonpath))
            keep("new", run(root / f"new-{i}", shared_cache, args.pythonpath))
            cold = run(existing, shared_cache, args.pythonpath)
            keep("cold", cold)
            keep("warm", cold, "second")
    print(f"nbdeploy at {args.pythonpath}, {args.repeat} processes per case, medians:")
    print(f"  {'case':<50} {'wall':>8} {'cpu':>8}")
    for case, label in names.items():
        print(
            f"  {label:<50} {statistics.median(wall[case]):7.2f}s "
            f"{statistics.median(cpu[case]):7.2f}s"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
