"""Start-up budgets of DESIGN §7: ``%load_ext nbdeploy``, ``nd.register``, serve to first answer.

Each measurement runs in fresh processes (imports are what costs), repeated, medians
reported. Run: ``.venv/bin/python benchmarks/bench_startup.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

LOAD_EXT = """
import time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
start = time.perf_counter()
shell.run_line_magic("load_ext", "nbdeploy")
print(time.perf_counter() - start)
"""

REGISTER_AND_SERVE = """
import time
import nbdeploy as nd
from nbdeploy.datasets import churn, churn_pipeline
X, y = churn(2000)
clf = churn_pipeline().fit(X, y)
nd.register(clf, "warm", X, y)  # the first registration creates the MLflow store
start = time.perf_counter()
mv = nd.register(clf, "bench", X, y)
registered = time.perf_counter() - start
nd.promote(mv, force=True)
start = time.perf_counter()
dep = nd.serve("bench@champion")
dep.predict(X.head(1))
served = time.perf_counter() - start
nd.stop("bench")
print(registered, served)
"""


def run(code: str, env: dict[str, str]) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    return [float(v) for v in out[-2:]] if len(out) >= 2 else [float(out[-1])]


def main(repeats: int = 5) -> None:
    env = dict(os.environ)
    load = [run(LOAD_EXT, env)[0] for _ in range(repeats)]
    registered, served = [], []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as home:
            env["NBDEPLOY_HOME"] = home
            r, s = run(REGISTER_AND_SERVE, env)
            registered.append(r)
            served.append(s)
    rows = [
        ("%load_ext nbdeploy", statistics.median(load) * 1000, "ms", "< 300 ms"),
        ("nd.register (sklearn pipeline)", statistics.median(registered) * 1000, "ms", "quick"),
        ("nd.serve to first answer", statistics.median(served), "s", "< 3 s"),
    ]
    print("| measurement | median | budget (DESIGN §7) |\n|---|---:|---|")
    for name, value, unit, budget in rows:
        print(f"| {name} | {value:.2f} {unit} | {budget} |")
    print(
        f"\n{repeats} fresh processes for %load_ext, 3 fresh homes for register/serve; "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
