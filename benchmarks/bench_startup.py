"""Start-up budgets of DESIGN §7: ``%load_ext nbdeploy``, ``nd.register``, serve to first answer.

Each measurement runs in fresh processes (imports are what costs), repeated, medians
reported. Run: ``.venv/bin/python benchmarks/bench_startup.py``.

``--peers`` instead measures, side by side in one run, the time from spawning a server
process to its first answered single-row request (what a scale-to-zero container pays)
for ``nbdeploy serve`` (as ``nd.serve`` starts it: version resolved and fetched by the
caller), natively and with ``--runtime onnx`` on the conversion stored at registration
(``nd.register(..., onnx=True)``, what a container export of such a version runs),
``mlflow models serve`` and Seldon MLServer 1.7.1 (in-process inference), all
serving the benchmark model of ``bench_serving.py``; ``--repeats`` runs each, medians.
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


def peers_side_by_side(repeats: int) -> None:
    import shutil
    import socket
    import time
    from pathlib import Path

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_serving as bs
    import peers

    home = Path(tempfile.mkdtemp(prefix="nbdeploy-startup-"))
    os.environ["NBDEPLOY_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "NBDEPLOY_TRACKING_URI", "NBDEPLOY_AUDIT_DB"):
        os.environ.pop(key, None)
    from nbdeploy import config, registry

    config.reset()
    load = os.getloadavg()[0]
    try:
        X, _ = bs.train_and_register(onnx=True)
        one = bs.split_body([X.iloc[0].tolist()])
        v2 = peers.v2_body(X.iloc[0].tolist())
        mv = registry.resolve("bench/1")
        resolved = f"{mv.version}:{registry.manifest_sha(mv)}"
        registry.fetch_model(mv)
        model_file = peers.pickle_of("bench/1")
        peers.ensure_mlserver()
        runtimes = {"nbdeploy serve": "native", "nbdeploy serve --runtime onnx": "onnx"}
        times: dict[str, list[float]] = {label: [] for label in runtimes}
        times["mlflow models serve"], times["MLServer 1.7.1"] = [], []
        for i in range(repeats):
            for label, runtime in runtimes.items():
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                command = [sys.executable, "-m", "nbdeploy.cli", "serve", "bench/1"]
                command += ["--name", f"cold{i}", "--port", str(port), "--resolved", resolved]
                t0 = time.perf_counter()
                child = subprocess.Popen(
                    [*command, "--runtime", runtime],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=config.child_env(),
                    start_new_session=True,
                )
                bs._groups.add(child.pid)
                url = f"http://127.0.0.1:{port}"
                times[label].append(
                    bs.wait_first_answer(url, one, t0, lambda c=child: c.poll() is None)
                )
                bs._kill_group(child.pid)
            ml = bs.MlflowServer(one, config.settings().tracking_uri, home / "mlflow.log")
            times["mlflow models serve"].append(ml.first_answer_s)
            ml.stop()
            mls = peers.MLServer(model_file, home / f"mlserver{i}")
            times["MLServer 1.7.1"].append(mls.wait(v2))
            mls.stop()
            print(
                f"run {i + 1}/{repeats}: "
                + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                flush=True,
            )
        print(f"\n| server | start to first answer (median of {repeats}) | runs |\n|---|---:|---|")
        for name, values in times.items():
            runs = ", ".join(f"{v:.2f}" for v in values)
            print(f"| {name} | {statistics.median(values):.2f} s | {runs} |")
        print(
            f"\n1-min load average at start {load:.2f}, at end {os.getloadavg()[0]:.2f} "
            f"(a shared machine); python {sys.version.split()[0]}, {os.cpu_count()} cores"
        )
    finally:
        bs._cleanup()
        shutil.rmtree(home, ignore_errors=True)


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
    if "--peers" in sys.argv:
        at = sys.argv.index("--repeats") + 1 if "--repeats" in sys.argv else 0
        peers_side_by_side(int(sys.argv[at]) if at else 5)
    else:
        main()
