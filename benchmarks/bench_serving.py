"""Side-by-side serving benchmark: nbdeploy vs ``mlflow models serve`` (DESIGN section 7).

Both servers serve the SAME registered model version (``models:/bench/1``, a 20-feature
StandardScaler + LogisticRegression pipeline) with 1 worker each; nbdeploy's audit log
is on (it always is). Measured, medians of repeated runs:

- single-row throughput at concurrency 16 (wrk -t2 -c16, server on core 0, wrk on core 1)
- single-row p50 latency at concurrency 1 (wrk -t1 -c1 --latency; a Python keep-alive
  client's p50 is printed too)
- one 10,000-row ``dataframe_split`` request: median wall time
- time from start (``nd.serve`` / spawning ``mlflow models serve``) to first answer

It also checks that both servers return identical predictions for the same 1,000 rows
and that nbdeploy's audit log holds exactly the rows it answered.

Run from the repository root with the venv's python::

    .venv/bin/python benchmarks/bench_serving.py [--quick]

Needs ``wrk`` (``apt-get install -y wrk``) and ``taskset``. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
N_FEATURES = 20
COLUMNS = [f"x{i}" for i in range(N_FEATURES)]
CORE_SERVER, CORE_CLIENT = 0, 1

# process-group leaders this script started; killed on any exit
_groups: set[int] = set()


# -- process handling -------------------------------------------------------------------


@contextlib.contextmanager
def scratch_home(prefix: str) -> Iterator[Path]:
    """A new, empty nbdeploy home for one benchmark run (the embedded defaults: no
    tracking server, no other audit log), removed afterwards."""
    from nbdeploy import config

    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["NBDEPLOY_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "NBDEPLOY_TRACKING_URI", "NBDEPLOY_AUDIT_DB"):
        os.environ.pop(key, None)
    config.reset()
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _kill_group(pgid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        _groups.discard(pgid)
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_pids(pgid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-pgid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-pgid, os.WNOHANG)[0]:
            pass
    _groups.discard(pgid)


def _cleanup() -> None:
    for pgid in list(_groups):
        _kill_group(pgid, grace=5.0)


def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _pin_group(pgid: int, core: int) -> list[int]:
    pids = _group_pids(pgid)
    for pid in pids:  # -a: every thread of the process
        subprocess.run(
            ["taskset", "-a", "-cp", str(core), str(pid)], check=True, stdout=subprocess.DEVNULL
        )
    return pids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- HTTP client --------------------------------------------------------------------------


def split_body(rows: list[list[float]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}}).encode()


def post(url: str, body: bytes, timeout: float = 60.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url + "/invocations", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class KeepAlive:
    """A persistent HTTP/1.1 connection; ``call`` returns (seconds, parsed body)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.headers = {"Content-Type": "application/json"}

    def call(self, body: bytes, parse: bool = False) -> tuple[float, Any]:
        t0 = time.perf_counter()
        self.conn.request("POST", "/invocations", body, self.headers)
        response = self.conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - t0
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        return elapsed, (json.loads(data) if parse else None)

    def close(self) -> None:
        self.conn.close()


def wait_first_answer(
    url: str, body: bytes, t0: float, alive: Any, timeout: float = 120.0
) -> float:
    """Seconds from ``t0`` until ``url`` answers a prediction with 200."""
    while time.perf_counter() - t0 < timeout:
        if not alive():
            raise RuntimeError(f"the server for {url} exited before answering")
        try:
            post(url, body, timeout=5)
            return time.perf_counter() - t0
        except (OSError, http.client.HTTPException):
            time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


# -- servers ------------------------------------------------------------------------------


class Server:
    label: str
    url: str
    pgid: int

    def stop(self) -> None:
        _kill_group(self.pgid)


class NbdeployServer(Server):
    label = "nbdeploy"

    def __init__(self, body: bytes, runtime: str = "native") -> None:
        import nbdeploy as nd

        if runtime != "native":  # a deployment of its own: the log counts stay apart
            self.label = f"nbdeploy --runtime {runtime}"
        t0 = time.perf_counter()
        name = "bench" if runtime == "native" else f"bench-{runtime}"
        self.dep = nd.serve("bench/1", name=name, runtime=runtime)
        self.pgid = self.dep.pid  # started with start_new_session=True: it leads its group
        _groups.add(self.pgid)
        self.url = self.dep.url
        self.first_answer_s = wait_first_answer(
            self.url, body, t0, lambda: bool(_group_pids(self.pgid))
        )

    def stop(self) -> None:
        import nbdeploy as nd

        super().stop()
        with contextlib.suppress(Exception):
            nd.stop(self.dep.name)


class MlflowServer(Server):
    label = "mlflow models serve"

    def __init__(self, body: bytes, tracking_uri: str, log_path: Path) -> None:
        port = _free_port()
        env = dict(
            os.environ,
            MLFLOW_TRACKING_URI=tracking_uri,
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.command = [
            str(VENV_BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/bench/1",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--workers",
            "1",
        ]
        t0 = time.perf_counter()
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.pgid = self.proc.pid
        _groups.add(self.pgid)
        self.url = f"http://127.0.0.1:{port}"
        self.first_answer_s = wait_first_answer(
            self.url, body, t0, lambda: self.proc.poll() is None
        )


# -- measurements -------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(
    url: str, lua: Path, threads: int, connections: int, seconds: float
) -> dict[str, float]:
    command = [
        "taskset",
        "-c",
        str(CORE_CLIENT),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(lua),
        url + "/invocations",
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failures against {url}:\n{out}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
    }  # type: ignore[union-attr]


def python_p50_ms(url: str, body: bytes, n: int) -> float:
    client = KeepAlive(url)
    try:
        for _ in range(50):  # warm the connection and the server
            client.call(body)
        times = [client.call(body)[0] for _ in range(n)]
    finally:
        client.close()
    return statistics.median(times) * 1000.0


def big_request_ms(url: str, body: bytes, n: int) -> float:
    client = KeepAlive(url)
    try:
        client.call(body)  # warm-up
        times = [client.call(body)[0] for _ in range(n)]
    finally:
        client.close()
    return statistics.median(times) * 1000.0


# -- model --------------------------------------------------------------------------------


def train_and_register(seed: int = 0, *, onnx: bool = False) -> tuple[Any, Any]:
    """The benchmark model registered as bench/1 (``onnx``: with its ONNX conversion stored)."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import nbdeploy as nd

    rng = np.random.default_rng(seed)
    n = 5_000
    X = pd.DataFrame(
        rng.normal(size=(n, N_FEATURES)) * rng.uniform(0.5, 20, N_FEATURES)
        + rng.uniform(-50, 50, N_FEATURES),
        columns=COLUMNS,
    )
    weights = rng.normal(size=N_FEATURES)
    logits = ((X - X.mean()) / X.std()).to_numpy() @ weights
    y = (logits + rng.logistic(size=n) > 0).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    mv = nd.register(model, "bench", X, y, onnx=onnx)
    if mv.version != 1:
        raise RuntimeError(f"expected version 1 in a fresh home, got {mv.version}")
    return X, model


def audit_counts(db: Path) -> tuple[int, int]:
    """(records, predicted rows) in nbdeploy's audit log, read independently via sqlite."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        records, rows = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_rows), 0) FROM records WHERE deployment = 'bench'"
        ).fetchone()
    return int(records), int(rows)


def machine() -> dict[str, str]:
    import mlflow
    import sklearn

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "mlflow": mlflow.__version__,
        "scikit-learn": sklearn.__version__,
        "os": platform.platform(),
        "wrk": (wrk.stdout + wrk.stderr).split("\n")[0].split(" [")[0],
    }


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 short run of each measurement")
    parser.add_argument("--runs", type=int, help="repetitions of each measurement (default 3)")
    parser.add_argument("--seconds", type=float, help="wrk duration per run (default 10)")
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary home")
    parser.add_argument(
        "--audit-sync",
        action="store_true",
        help="only nbdeploy: NBDEPLOY_AUDIT_SYNC=normal against full (the cost of surviving "
        "power loss)",
    )
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    n_latency = 500 if args.quick else 2000
    n_big = 3 if args.quick else 10
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not on PATH (apt-get install -y {tool})", file=sys.stderr)
            return 2
    if (os.cpu_count() or 1) < 2:
        print("error: needs 2 cores (server on core 0, load generator on core 1)", file=sys.stderr)
        return 2

    atexit.register(_cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    home = Path(tempfile.mkdtemp(prefix="nbdeploy-bench-"))
    os.environ["NBDEPLOY_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("NBDEPLOY_TRACKING_URI", None)
    os.environ.pop("NBDEPLOY_AUDIT_DB", None)
    from nbdeploy import config

    config.reset()
    settings = config.settings()
    all_cores = os.sched_getaffinity(0)
    servers: list[Server] = []
    try:
        if args.audit_sync:
            return audit_sync_cost(runs, seconds, n_big, home, all_cores, servers)
        return _bench(args, runs, seconds, n_latency, n_big, home, settings, all_cores, servers)
    finally:
        os.sched_setaffinity(0, all_cores)
        for server in servers:
            server.stop()
        _cleanup()
        if args.keep_home:
            print(f"\nhome kept at {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def _bench(
    args: argparse.Namespace,
    runs: int,
    seconds: float,
    n_latency: int,
    n_big: int,
    home: Path,
    settings: Any,
    all_cores: set[int],
    servers: list[Server],
) -> int:
    import numpy as np

    load_start = os.getloadavg()[0]
    print(
        f"home: {home}\ntracking: {settings.tracking_uri}\nload average: {load_start:.2f}",
        flush=True,
    )
    if load_start > 1.0:
        print(
            "warning: the machine is busy (1-min load average > 1); with 2 cores, other work "
            "skews every number here",
            flush=True,
        )
    t = time.perf_counter()
    X, model = train_and_register()
    print(f"registered bench/1 in {time.perf_counter() - t:.2f} s (incl. training)", flush=True)

    rng = np.random.default_rng(1)
    check_rows = X.sample(1000, random_state=1).to_numpy().tolist()
    big_rows = (
        X.sample(10_000, replace=True, random_state=2).to_numpy()
        + rng.normal(scale=0.01, size=(10_000, N_FEATURES))
    ).tolist()
    one = split_body([X.iloc[0].tolist()])
    big = split_body(big_rows)
    lua = home / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(one.decode())}\n"
    )
    mlflow_log = home / "mlflow-serve.log"
    answered = 0  # prediction rows nbdeploy answered to this script (wrk: lower bound)
    slack = 0  # requests wrk may have left in flight (answered and logged, never counted)

    # 1. start -> first answer; the last pair of servers stays up for the rest
    starts: dict[str, list[float]] = {"mlflow models serve": [], "nbdeploy": []}
    for i in range(runs):
        os.sched_setaffinity(0, all_cores)  # servers start with both cores, as a user's would
        nb = NbdeployServer(one)
        servers.append(nb)
        answered += 1
        ml = MlflowServer(one, settings.tracking_uri, mlflow_log)
        servers.append(ml)
        starts["nbdeploy"].append(nb.first_answer_s)
        starts["mlflow models serve"].append(ml.first_answer_s)
        print(
            f"start run {i + 1}/{runs}: nbdeploy {nb.first_answer_s:.2f} s, "
            f"mlflow {ml.first_answer_s:.2f} s",
            flush=True,
        )
        if i < runs - 1:
            for server in (nb, ml):
                server.stop()
                servers.remove(server)
    # the same version answered through onnxruntime, measured beside the native one
    onnx_server = NbdeployServer(one, runtime="onnx")
    servers.append(onnx_server)
    print(f"nbdeploy --runtime onnx: first answer in {onnx_server.first_answer_s:.2f} s")
    nb_server, ml_server = servers[:2]
    for server in servers:
        pids = _pin_group(server.pgid, CORE_SERVER)
        print(f"{server.label}: {server.url}, pids {pids} pinned to core {CORE_SERVER}")
    os.sched_setaffinity(0, {CORE_CLIENT})

    # 2. identical predictions on the same 1,000 rows
    body = split_body(check_rows)
    nb_pred = post(nb_server.url, body)["predictions"]
    ml_pred = post(ml_server.url, body)["predictions"]
    answered += len(check_rows)
    local = model.predict(X.__class__(check_rows, columns=COLUMNS)).tolist()
    identical = nb_pred == ml_pred and len(nb_pred) == 1000
    print(
        f"identical predictions on 1,000 rows: {identical} "
        f"(both equal in-process predict: {nb_pred == local and ml_pred == local})",
        flush=True,
    )
    onnx_pred = post(onnx_server.url, body)["predictions"]
    print(f"  onnxruntime gives the same labels: {onnx_pred == nb_pred}", flush=True)

    # 3. p50 at concurrency 1 (wrk and a Python keep-alive client), 4. one 10,000-row request
    p50: dict[str, list[float]] = {s.label: [] for s in servers}
    p50_py: dict[str, list[float]] = {s.label: [] for s in servers}
    big_ms: dict[str, list[float]] = {s.label: [] for s in servers}
    before_exact = audit_counts(settings.audit_db)[1]
    exact_rows = 0
    for i in range(runs):
        for server in servers:
            p50_py[server.label].append(python_p50_ms(server.url, one, n_latency))
            big_ms[server.label].append(big_request_ms(server.url, big, n_big))
            if server is nb_server:
                exact_rows += 50 + n_latency + (n_big + 1) * 10_000
        print(
            f"client run {i + 1}/{runs}: "
            + ", ".join(
                f"{k}: py p50 {p50_py[k][-1]:.3f} ms, 10k rows {big_ms[k][-1]:.1f} ms"
                for k in p50_py
            ),
            flush=True,
        )
    after_exact = audit_counts(settings.audit_db)[1]
    answered += exact_rows
    for i in range(runs):
        for server in servers:
            result = run_wrk(server.url, lua, 1, 1, min(seconds, 5.0))
            p50[server.label].append(result["p50_ms"])
            if server is nb_server:
                answered += result["requests"]
                slack += 1
        print(
            f"wrk -c1 run {i + 1}/{runs}: "
            + ", ".join(f"{k}: p50 {v[-1]:.3f} ms" for k, v in p50.items()),
            flush=True,
        )

    # 5. throughput at concurrency 16
    rps: dict[str, list[float]] = {s.label: [] for s in servers}
    p99: dict[str, list[float]] = {s.label: [] for s in servers}
    for i in range(runs):
        for server in servers:
            result = run_wrk(server.url, lua, 2, 16, seconds)
            rps[server.label].append(result["rps"])
            p99[server.label].append(result["p99_ms"])
            if server is nb_server:
                answered += result["requests"]
                slack += 16
        print(
            f"wrk -c16 run {i + 1}/{runs}: "
            + ", ".join(
                f"{k}: {v[-1]:,.0f} req/s (p99 {p99[k][-1]:.2f} ms)" for k, v in rps.items()
            ),
            flush=True,
        )
    os.sched_setaffinity(0, all_cores)

    # 6. the audit log: sqlite rows vs what was answered
    time.sleep(0.5)
    records, logged = audit_counts(settings.audit_db)
    info = json.loads(urllib.request.urlopen(nb_server.url + "/info", timeout=10).read())
    import nbdeploy as nd

    nd_rows = len(nd.logs("bench", limit=5))
    exact_ok = after_exact - before_exact == exact_rows
    bound_ok = answered <= logged <= answered + slack
    print(
        f"\naudit log (sqlite {settings.audit_db.name}): {records:,} records, {logged:,} "
        f"prediction rows; server /info predictions: {info['predictions']:,} "
        f"(this server instance; earlier start-up runs logged {runs - 1} more)"
    )
    print(
        f"  exact phase (Python client): sent {exact_rows:,} rows, log grew by "
        f"{after_exact - before_exact:,} -> {'MATCH' if exact_ok else 'MISMATCH'}"
    )
    print(
        f"  whole run: answered to this script {answered:,} rows (+ up to {slack} requests "
        f"wrk left in flight) -> logged {logged:,}: {'MATCH' if bound_ok else 'MISMATCH'}; "
        f"nd.logs('bench', limit=5) returned {nd_rows} rows"
    )

    # 7. the table
    med = statistics.median
    ml, nb = "mlflow models serve", "nbdeploy"
    rows = [
        (
            "single-row throughput, c=16 (req/s)",
            med(rps[ml]),
            med(rps[nb]),
            med(rps[nb]) / med(rps[ml]),
            ">= 10x (aim 25x)",
            med(rps[nb]) / med(rps[ml]) >= 10,
            "{:,.0f}",
        ),
        (
            "single-row p50 latency, c=1 (ms, wrk)",
            med(p50[ml]),
            med(p50[nb]),
            med(p50[ml]) / med(p50[nb]),
            ">= 5x lower, well under 1 ms",
            med(p50[ml]) / med(p50[nb]) >= 5 and med(p50[nb]) < 1,
            "{:.3f}",
        ),
        (
            "single-row p50, c=1, Python client (ms)",
            med(p50_py[ml]),
            med(p50_py[nb]),
            med(p50_py[ml]) / med(p50_py[nb]),
            "(client overhead included)",
            None,
            "{:.3f}",
        ),
        (
            "p99 latency at c=16 (ms, wrk)",
            med(p99[ml]),
            med(p99[nb]),
            med(p99[ml]) / med(p99[nb]),
            "(info)",
            None,
            "{:.2f}",
        ),
        (
            "one 10,000-row dataframe_split request (ms)",
            med(big_ms[ml]),
            med(big_ms[nb]),
            med(big_ms[ml]) / med(big_ms[nb]),
            ">= 2.5x faster",
            med(big_ms[ml]) / med(big_ms[nb]) >= 2.5,
            "{:.1f}",
        ),
        (
            "start to first answered request (s)",
            med(starts[ml]),
            med(starts[nb]),
            med(starts[ml]) / med(starts[nb]),
            "nbdeploy < 3 s",
            med(starts[nb]) < 3,
            "{:.2f}",
        ),
    ]
    info_m = machine()
    lines = [
        f"Machine: {info_m['nproc']} cores ({info_m['cpu']}), {info_m['os']}, Python "
        f"{info_m['python']}, MLflow {info_m['mlflow']}, scikit-learn {info_m['scikit-learn']}"
        f", {info_m['wrk']}.",
        f"Runs: {runs} per measurement (medians); wrk {seconds:g} s per throughput run, "
        f"{min(seconds, 5.0):g} s per c=1 run; Python client {n_latency} requests per run; "
        f"10k-row: {n_big} requests per run. Server pinned to core {CORE_SERVER}, client to "
        f"core {CORE_CLIENT}. 1-min load average at start {load_start:.2f}, at end "
        f"{os.getloadavg()[0]:.2f} (this benchmark alone adds about 1).",
        "",
        "| metric | mlflow models serve | nbdeploy | ratio | DESIGN §7 target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, m, n, ratio, target, ok, fmt in rows:
        verdict = "" if ok is None else ("yes" if ok else "**no**")
        lines.append(
            f"| {name} | {fmt.format(m)} | {fmt.format(n)} | {ratio:.1f}x | {target} | {verdict} |"
        )
    lines += [
        f"| identical predictions (1,000 rows) | | | | identical | "
        f"{'yes' if identical else '**no**'} |",
        f"| audit log rows = rows answered | | | | on, exact | "
        f"{'yes' if exact_ok and bound_ok else '**no**'} |",
        "",
        "Ratios: throughput nbdeploy/mlflow; latency and times mlflow/nbdeploy (higher is "
        "better for nbdeploy).",
        "",
        "| metric | nbdeploy (native) | nbdeploy --runtime onnx | onnx / native |",
        "|---|---:|---:|---:|",
    ]
    onnx = onnx_server.label
    for name, values, fmt in (
        ("single-row throughput, c=16 (req/s)", rps, "{:,.0f}"),
        ("single-row p50, c=1, wrk (ms)", p50, "{:.3f}"),
        ("single-row p50, c=1, Python client (ms)", p50_py, "{:.3f}"),
        ("one 10,000-row request (ms)", big_ms, "{:.1f}"),
    ):
        native_value, onnx_value = med(values[nb]), med(values[onnx])
        lines.append(f"| {name} | {fmt.format(native_value)} | {fmt.format(onnx_value)} | "
                     f"{onnx_value / native_value:.2f}x |")  # fmt: skip
    lines += [
        f"| start to first answer (s) | {med(starts[nb]):.2f} | "
        f"{onnx_server.first_answer_s:.2f} | "
        f"{onnx_server.first_answer_s / med(starts[nb]):.2f}x |",
        "",
        "Reproduce (from the repository root): `.venv/bin/python benchmarks/bench_serving.py"
        + (" --quick" if args.quick else "")
        + "`",
    ]
    print("\n" + "\n".join(lines))
    return 0 if identical and exact_ok and bound_ok else 1


def audit_sync_cost(
    runs: int, seconds: float, n_big: int, home: Path, all_cores: set[int], servers: list[Server]
) -> int:
    """nbdeploy alone, with the log's commits fsynced (``full``) or not (``normal``)."""
    import numpy as np

    from nbdeploy import config

    print(f"1-min load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    X, _ = train_and_register()
    one = split_body([X.iloc[0].tolist()])
    big = split_body(X.sample(10_000, replace=True, random_state=2).to_numpy().tolist())
    lua = home / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(one.decode())}\n"
    )
    found: dict[str, dict[str, list[float]]] = {}
    for sync in ("normal", "full"):
        os.environ["NBDEPLOY_AUDIT_SYNC"] = sync
        config.reset()
        os.sched_setaffinity(0, all_cores)
        server = NbdeployServer(one)
        servers.append(server)
        _pin_group(server.pgid, CORE_SERVER)
        os.sched_setaffinity(0, {CORE_CLIENT})
        got = found[sync] = {"p50": [], "rps": [], "p99": [], "big": []}
        for _ in range(runs):
            got["p50"].append(run_wrk(server.url, lua, 1, 1, min(seconds, 5.0))["p50_ms"])
            c16 = run_wrk(server.url, lua, 2, 16, seconds)
            got["rps"].append(c16["rps"])
            got["p99"].append(c16["p99_ms"])
            got["big"].append(big_request_ms(server.url, big, n_big))
        summary = ", ".join(f"{k} {np.median(v):.3f}" for k, v in got.items())
        print(f"{sync}: {summary}", flush=True)
        server.stop()
        servers.remove(server)
    os.environ.pop("NBDEPLOY_AUDIT_SYNC", None)
    med = statistics.median
    lines = [
        "| NBDEPLOY_AUDIT_SYNC | normal | full | full/normal |",
        "|---|---:|---:|---:|",
    ]
    for key, label, fmt in (
        ("p50", "single-row p50, c=1 (ms)", "{:.3f}"),
        ("rps", "single-row throughput, c=16 (req/s)", "{:,.0f}"),
        ("p99", "p99 at c=16 (ms)", "{:.2f}"),
        ("big", "one 10,000-row request (ms)", "{:.1f}"),
    ):
        n, f = med(found["normal"][key]), med(found["full"][key])
        lines.append(f"| {label} | {fmt.format(n)} | {fmt.format(f)} | {f / n:.2f}x |")
    print("\n" + "\n".join(lines))
    print("\nReproduce: .venv/bin/python benchmarks/bench_serving.py --audit-sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())
