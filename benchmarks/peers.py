"""Shared by the long-run benchmarks: wrk with any route and body, and Seldon MLServer.

MLServer 1.7.1 (``mlserver`` + ``mlserver-sklearn``) clashes with the project's
dependencies, so it lives in its own venv under ``~/.cache/nbdeploy/mlserver-venv``,
created here on first use. It serves the very pickle nbdeploy serves (the registered
version's ``model.pkl``), in-process (``parallel_workers: 0``), one worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))  # the repository, for tests.engines
import bench_serving as bs

from tests.engines import environ

MLSERVER_VENV = Path.home() / ".cache" / "nbdeploy" / "mlserver-venv"
# uvloop 0.22 breaks MLServer 1.7.1's parallel inference workers (no event loop in the
# worker process at start); 0.21 is what it was released with
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]


def v2_body(row: list[float]) -> bytes:
    """One row as one FP64 tensor, the way a KServe client sends it."""
    tensor = {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}
    return json.dumps({"inputs": [tensor]}).encode()


def lua_script(path: Path, body: bytes) -> Path:
    path.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    return path


def wrk(url: str, lua: Path, connections: int, seconds: float) -> dict[str, float]:
    """wrk on the client core: requests/s, p50 and p99 in ms (fails on any error)."""
    command = ["taskset", "-c", str(bs.CORE_CLIENT), "wrk", f"-t{min(connections, 2)}"]
    command += [f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s", "--latency"]
    command += ["-s", str(lua), url]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if re.search(r"Non-2xx or 3xx responses|Socket errors: connect [1-9]|read [1-9]", out):
        raise RuntimeError(f"wrk saw failures against {url}:\n{out}")
    timeouts = re.search(r"timeout (\d+)", out)  # over 30 s: a starved server
    if timeouts and int(timeouts.group(1)):
        print(f"  note: {timeouts.group(1)} requests to {url} took over 30 s", flush=True)

    def find(pattern: str) -> str:
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return found.group(1)

    return {
        "rps": float(find(r"Requests/sec:\s+([\d.]+)")),
        "requests": int(find(r"(\d+) requests in")),
        "p50_ms": bs._ms(find(r"\s50%\s+(\S+)")),
        "p99_ms": bs._ms(find(r"\s99%\s+(\S+)")),
    }


def post(url: str, body: bytes, timeout: float = 10.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def ensure_mlserver() -> Path:
    """The MLServer venv's ``bin``: created and installed once, then reused."""
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        print(f"creating {MLSERVER_VENV} (once; a minute or two)", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(MLSERVER_VENV)], check=True)
        import sklearn

        pip = [str(MLSERVER_VENV / "bin" / "pip"), "install", "--quiet", *MLSERVER_PINS]
        subprocess.run([*pip, f"scikit-learn=={sklearn.__version__}", "cloudpickle"], check=True)
    return binary.parent


def pickle_of(ref: str) -> Path:
    """The registered version's pickled estimator (the file nbdeploy itself unpickles)."""
    import yaml

    from nbdeploy import registry

    path = registry.fetch_model(registry.resolve(ref))
    flavor = yaml.safe_load((path / "MLmodel").read_text())["flavors"]["sklearn"]
    return path / flavor["pickled_model"]


class MLServer(bs.Server):
    """``mlserver start`` on a folder holding the model's settings; V2 on ``url``."""

    label = "MLServer 1.7.1"

    def __init__(
        self, model_file: Path, folder: Path, name: str = "bench", *, parallel_workers: int = 0
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        port, grpc, metrics = bs._free_port(), bs._free_port(), bs._free_port()
        (folder / "settings.json").write_text(
            json.dumps(
                {
                    "debug": False,
                    # 0: inference in the server process, as one nbdeploy worker; N: N
                    # inference processes behind the one HTTP process (MLServer's scale-out)
                    "parallel_workers": parallel_workers,
                    "host": "127.0.0.1",
                    "http_port": port,
                    "grpc_port": grpc,
                    "metrics_port": metrics,
                }
            )
        )
        (folder / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": str(model_file), "version": "1"},
                }
            )
        )
        binary = ensure_mlserver()
        env = dict(os.environ, PATH=f"{binary}{os.pathsep}{os.environ.get('PATH', '')}")
        for key in ("PYTHONPATH", "NBDEPLOY_HOME", "VIRTUAL_ENV"):
            env.pop(key, None)
        self.infer_url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
        self.url = f"http://127.0.0.1:{port}"
        self.t0 = time.perf_counter()
        log = (folder / "mlserver.log").open("ab")
        self.proc = subprocess.Popen(
            [str(binary / "mlserver"), "start", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        bs._groups.add(self.pgid)

    def wait(self, body: bytes, timeout: float = 120.0) -> float:
        """Seconds from the spawn to the first answered V2 request."""
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError("MLServer exited before answering; see mlserver.log")
            try:
                post(self.infer_url, body, timeout=5)
                return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"MLServer did not answer within {timeout:.0f} s")


class Nbdeploy(bs.Server):
    """``nd.serve(ref, name=name)``; ``source`` serves another checkout (an A/B baseline)."""

    def __init__(self, ref: str, name: str, body: bytes, source: Path | None = None) -> None:
        import nbdeploy as nd

        self.label = f"nbdeploy ({source})" if source else "nbdeploy"
        with contextlib.ExitStack() as stack:
            if source is not None:
                # the child imports that nbdeploy: `python -m` puts its working directory
                # first on sys.path (run from the repository root, PYTHONPATH alone lost
                # to it), and its own children start there too
                stack.enter_context(environ(PYTHONPATH=str(source)))
                stack.enter_context(contextlib.chdir(source))
            self.t0 = time.perf_counter()
            self.dep = nd.serve(ref, name=name)
        self.pgid = self.dep.pid
        bs._groups.add(self.pgid)
        self.url = self.dep.url
        self.first_answer_s = bs.wait_first_answer(
            self.url, body, self.t0, lambda: bool(bs._group_pids(self.pgid))
        )


def cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the live processes of group ``pgid``."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in bs._group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


#: A do-nothing ASGI app under the server's own HTTP stack (uvicorn, httptools, uvloop,
#: the same GIL switch interval): the latency floor of this machine, this stack and wrk
FLOOR_APP = """
import sys, uvicorn
from nbdeploy.serving.server import steady_tail

ANSWER = b'{"predictions": [0]}'


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": ANSWER})

steady_tail()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            lifespan="off", access_log=False, log_level="warning")
"""


class Floor(bs.Server):
    """:data:`FLOOR_APP` in a process of its own; answers any POST with one prediction."""

    label = "bare uvicorn (floor)"

    def __init__(self, body: bytes) -> None:
        port = bs._free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FLOOR_APP, str(port)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        bs._groups.add(self.pgid)
        bs.wait_first_answer(self.url, body, self.t0, lambda: self.proc.poll() is None)
