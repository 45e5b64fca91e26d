"""Team-scale benchmark: workers, the log on SQLite and on PostgreSQL, a tracking server.

One run measures, on the same registered 20-feature scaler + logistic pipeline:

- single-row throughput at concurrency 16 (wrk -t2 -c16) and its p50, for nbdeploy with
  the audit log on SQLite and on PostgreSQL, with 1 and 2 workers, beside
  ``mlflow models serve`` with 1 and 2 workers and Seldon's MLServer 1.7.1
  (``mlserver-sklearn``, its own venv, V2 requests of one FP64 tensor) in-process and
  with 1 and 2 parallel inference workers;
- how registry calls slow down over an MLflow tracking server (on PostgreSQL, artifacts
  served by it) against the embedded SQLite registry: ``nd.register``, ``nd.promote``
  and the alias-follow delay (promote returns -> the running server answers with the
  new version; the server polls every ``NBDEPLOY_ALIAS_POLL_S``, 1 s by default).

It starts its own throwaway PostgreSQL and ``mlflow server`` (``tests/engines.py``;
Debian's ``postgresql`` package and ``wrk`` must be installed). Nothing is pinned to a
core: with 2 workers the server needs both cores, which wrk shares, so on a 2-core
machine the numbers show what the design does under contention, not its ceiling.

    .venv/bin/python benchmarks/bench_team.py [--seconds 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_serving as bs  # noqa: E402
import peers  # noqa: E402

from tests.engines import Postgres, TrackingServer, environ  # noqa: E402


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """``tests.engines.environ`` with nbdeploy's settings re-read inside and after."""
    from nbdeploy import config

    try:
        with environ(**values):
            config.reset()
            yield
    finally:
        config.reset()  # the restored environment


def throughput(
    url: str, lua: Path, seconds: float, repeat: int, path: str = "/invocations"
) -> dict[str, float]:
    peers.wrk(url + path, lua, 16, 2)  # warm-up
    runs = [peers.wrk(url + path, lua, 16, seconds) for _ in range(repeat)]
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
    }


def serve_nbdeploy(workers: int, body: bytes) -> Any:
    import nbdeploy as nd

    dep = nd.serve("bench/1", name=f"bench-{workers}", workers=workers)
    bs._groups.add(dep.pid)
    bs.wait_first_answer(dep.url, body, time.perf_counter(), lambda: True)
    return dep


def serving_rows(args: argparse.Namespace, lua: Path, body: bytes, pg: Postgres,
                 folder: Path) -> list[tuple[str, dict[str, float]]]:  # fmt: skip
    import nbdeploy as nd

    rows = []
    logs = {"SQLite": str(folder / "audit.db"), "PostgreSQL": pg.create_database("audit")}
    for label, audit_db in logs.items():
        with environment(NBDEPLOY_AUDIT_DB=audit_db):
            for workers in (1, 2):
                try:
                    dep = serve_nbdeploy(workers, body)
                except Exception as exc:  # e.g. the PostgreSQL log is not in this build
                    print(f"nbdeploy, log on {label}, {workers} worker(s): {exc}")
                    continue
                try:
                    result = throughput(dep.url, lua, args.seconds, args.repeat)
                finally:
                    nd.stop(dep.name)
                logged = _logged(dep.name, audit_db)
                if logged < result["requests"]:  # every answered request must be in the log
                    raise RuntimeError(f"{label}: {logged} logged < {result['requests']}")
                rows.append((f"nbdeploy, log on {label}, {workers} worker(s)", result))
                print(rows[-1] if rows else "", flush=True)
    tracking = nd.registry.config.settings().tracking_uri
    for workers in (1, 2):
        server = _mlflow_serve(body, tracking, folder, workers)
        try:
            rows.append((f"mlflow models serve, {workers} worker(s)",
                         throughput(server.url, lua, args.seconds, args.repeat)))  # fmt: skip
        finally:
            server.stop()
        print(rows[-1], flush=True)
    rows += mlserver_rows(args, folder)
    return rows


def mlserver_rows(args: argparse.Namespace, folder: Path) -> list[tuple[str, dict[str, float]]]:
    """MLServer on the same pickle: in-process, then 1 and 2 parallel inference workers."""
    body = peers.v2_body([float(i) for i in range(bs.N_FEATURES)])
    lua = peers.lua_script(folder / "v2.lua", body)
    model_file = peers.pickle_of("bench/1")
    rows = []
    for workers in (0, 1, 2):
        server = peers.MLServer(model_file, folder / f"mlserver-{workers}",
                                parallel_workers=workers)  # fmt: skip
        try:
            server.wait(body)
            result = throughput(server.url, lua, args.seconds, args.repeat,
                                path="/v2/models/bench/infer")  # fmt: skip
        finally:
            server.stop()
        kind = "in-process" if workers == 0 else f"{workers} parallel worker(s)"
        rows.append((f"{peers.MLServer.label}, {kind}", result))
        print(rows[-1], flush=True)
    return rows


def _logged(deployment: str, audit_db: str) -> int:
    """Predictions of ``deployment`` in the log at ``audit_db``, read back directly."""
    from nbdeploy.auditlog import AuditLog

    log = AuditLog(audit_db if "://" in audit_db else Path(audit_db))
    try:
        return log.counts(deployment)["predictions"]
    finally:
        log.close()


def _mlflow_serve(body: bytes, tracking: str, folder: Path, workers: int) -> Any:
    import subprocess

    port = bs._free_port()
    command = [str(bs.VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/bench/1",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
               "--workers", str(workers)]  # fmt: skip
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking,
               PATH=f"{bs.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # fmt: skip
    log = folder / f"mlflow-serve-{workers}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    server = bs.Server()
    server.pgid, server.url = proc.pid, f"http://127.0.0.1:{port}"
    bs._groups.add(proc.pid)
    try:
        bs.wait_first_answer(server.url, body, time.perf_counter(), lambda: proc.poll() is None)
    except RuntimeError:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()[-2000:]}") from None
    return server


def registry_rows(X: Any, model: Any, repeat: int) -> dict[str, float]:
    """Median seconds of register, promote and the alias-follow delay in this registry."""
    import nbdeploy as nd

    if not _has_champion():
        nd.promote("bench/1", to="champion", force=True)
    dep = nd.serve("bench@champion", name="bench-follow")
    registered, promoted, followed = [], [], []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            mv = nd.register(model, "bench", X)
            registered.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            nd.promote(mv, to="champion", force=True)
            promoted.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            while httpx.get(dep.url + "/info").json()["model_version"] != mv.version:
                time.sleep(0.01)
            followed.append(time.perf_counter() - t0)
    finally:
        nd.stop(dep.name)
    return {
        "register_s": statistics.median(registered),
        "promote_s": statistics.median(promoted),
        "follow_s": statistics.median(followed),
    }


def _has_champion() -> bool:
    from nbdeploy import registry

    return registry.alias_holder("bench", "champion") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--registry-only", action="store_true", help="skip the serving rows")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="nbdeploy-bench-team-"))
    lua = folder / "single.lua"
    X_rows = [[float(i) for i in range(bs.N_FEATURES)]]
    body = bs.split_body(X_rows)
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    pg = Postgres.start()
    tracking = None
    try:
        with environment(NBDEPLOY_HOME=str(folder / "home"), MLFLOW_TRACKING_URI=None,
                         NBDEPLOY_TRACKING_URI=None, NBDEPLOY_AUDIT_DB=None):  # fmt: skip
            X, model = bs.train_and_register()
            serving = [] if args.registry_only else serving_rows(args, lua, body, pg, folder)
            embedded = registry_rows(X, model, args.repeat)
        tracking = TrackingServer.start(pg.create_database("mlflow"), folder / "tracking")
        with environment(NBDEPLOY_HOME=str(folder / "home-remote"), MLFLOW_TRACKING_URI=None,
                         NBDEPLOY_TRACKING_URI=tracking.url, NBDEPLOY_AUDIT_DB=None):  # fmt: skip
            nd_register_first(X, model)
            remote = registry_rows(X, model, args.repeat)
    finally:
        if tracking is not None:
            tracking.stop()
        pg.stop()
        bs._cleanup()
    print(f"\nmachine: {bs.machine()}, load average {os.getloadavg()}")
    print("\n| server | single-row req/s at c=16 | p50 ms |\n|---|---:|---:|")
    for label, r in serving:
        print(f"| {label} | {r['rps']:,.0f} | {r['p50_ms']:.2f} |")
    print("\n| registry | nd.register | nd.promote | alias-follow delay |\n|---|---:|---:|---:|")
    for label, r in (("embedded SQLite", embedded), ("MLflow tracking server", remote)):
        print(f"| {label} | {r['register_s'] * 1000:.0f} ms | {r['promote_s'] * 1000:.0f} ms | "
              f"{r['follow_s']:.2f} s |")  # fmt: skip
    return 0


def nd_register_first(X: Any, model: Any) -> None:
    """Version 1 in the remote registry, as in the embedded one."""
    import nbdeploy as nd

    nd.register(model, "bench", X)


if __name__ == "__main__":
    sys.exit(main())
