"""Several serving processes behind one port: ``nbdeploy serve REF --workers N``.

How it works. The process ``nd.serve`` starts becomes a small *supervisor*: it holds
the deployment's name lock, binds the port, and starts N ordinary ``nbdeploy serve``
workers that inherit the listening socket (pre-fork style: the kernel hands each new
connection to one of the processes blocked in ``accept``). Each worker loads and
verifies the model itself, micro-batches, follows the alias and appends to the one
audit log, whose chain serializes writers with the database's own lock.

Each worker also inherits one end of a socket pair. Over it the worker reports its
state (ready, and again whenever its alias moves) and the supervisor, the only writer
of the state file, publishes it with its own pid, so ``nd.deployments()`` shows one
deployment. When the supervisor dies, even by ``kill -9``, the kernel closes its ends:
every worker sees end-of-file and stops itself gracefully. A worker that dies is
started again. ``/metrics`` and ``/info`` add up every worker's counters: each worker
writes a snapshot of its own to ``deployments/<name>.workers/<index>.json`` a few
times a second and sums the others' when asked (a restarted worker continues from its
slot's last snapshot, so totals never go backwards).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy.exceptions import DeploymentError
from nbdeploy.serving.metrics import Metrics

#: Seconds between two snapshots of a worker's counters.
SNAPSHOT_S = 0.25


# -- the supervisor ---------------------------------------------------------------------


class _Worker:
    def __init__(self, index: int, process: subprocess.Popen[bytes], channel: socket.socket):
        self.index, self.process, self.channel = index, process, channel
        self.state: dict[str, Any] | None = None
        self.started = time.monotonic()


class Supervisor:
    """Starts, watches and restarts the workers of one deployment."""

    def __init__(self, argv: list[str], name: str, host: str, port: int, workers: int) -> None:
        from nbdeploy.serving.process import hold_name

        if workers < 1:
            raise DeploymentError("workers must be at least 1")
        self.argv, self.name, self.count = argv, name, workers
        self.lock = hold_name(name)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            raise DeploymentError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.sock.listen(2048)
        self.folder = counters_folder(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.json"):  # a previous run's totals do not carry over
            old.unlink()
        self.workers: list[_Worker] = []
        self.changed = threading.Condition()
        self.stopping = False
        self.published = False

    def _spawn(self, index: int) -> _Worker:
        mine, theirs = socket.socketpair()
        command = [sys.executable, "-m", "nbdeploy.cli", *self.argv,
                   "--worker", f"{self.sock.fileno()}:{theirs.fileno()}:{index}"]  # fmt: skip
        process = subprocess.Popen(
            command,
            pass_fds=(self.sock.fileno(), theirs.fileno()),
            stdin=subprocess.DEVNULL,
            env=config.child_env(),
        )
        theirs.close()
        worker = _Worker(index, process, mine)
        threading.Thread(target=self._listen, args=(worker,), daemon=True).start()
        return worker

    def _listen(self, worker: _Worker) -> None:
        """Read the worker's state reports (one JSON line each) until it goes away."""
        with worker.channel.makefile("rb") as lines:
            for line in lines:
                try:
                    state = json.loads(line)
                except ValueError:
                    continue
                with self.changed:
                    worker.state = state
                    self.changed.notify_all()

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; returns after every worker has stopped."""
        from nbdeploy.serving.process import clear_state

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.workers = [self._spawn(i) for i in range(self.count)]
        try:
            while not self.stopping:
                self._watch()
                with self.changed:
                    self.changed.wait(0.2)
        finally:
            self._end_workers()
            clear_state(self.name, os.getpid())

    def _watch(self) -> None:
        for i, worker in enumerate(self.workers):
            code = worker.process.poll()
            if code is None or self.stopping:
                continue
            worker.channel.close()
            if not self.published:  # it never served: the deployment cannot start
                raise DeploymentError(f"worker {i} exited with code {code} before it was ready")
            print(f"nbdeploy: worker {i} (pid {worker.process.pid}) exited with code "
                  f"{code}; starting it again", flush=True)  # fmt: skip
            if time.monotonic() - worker.started < 2:  # do not spin on a worker that crashes
                time.sleep(1)
            self.workers[i] = self._spawn(i)
        self._publish()

    def _publish(self) -> None:
        from nbdeploy.serving.process import write_state

        states = [w.state for w in self.workers]
        if any(s is None for s in states):
            return
        first = dict(states[0] or {})
        first.update(
            pid=os.getpid(),
            workers=self.count,
            worker_pids=[w.process.pid for w in self.workers],
            version=max(s["version"] for s in states if s),  # the newest any worker serves
        )
        if first != getattr(self, "_last", None):
            write_state(self.name, first)
            self._last = first
        self.published = True

    def _stop(self, *_: Any) -> None:
        self.stopping = True  # the loop notices within 0.2 s

    def _end_workers(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for worker in self.workers:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.channel.close()


def supervise(argv: list[str], name: str, host: str, port: int, workers: int) -> None:
    """Run ``workers`` copies of the ``nbdeploy serve`` command ``argv`` behind one port."""
    Supervisor(argv, name, host, port, workers).run()


# -- inside a worker -------------------------------------------------------------------


def counters_folder(name: str) -> Path:
    return config.settings().deployments_dir / f"{name}.workers"


class WorkerLink:
    """A worker's side: the inherited socket, the channel to the supervisor, counters."""

    def __init__(self, spec: str, name: str) -> None:
        try:
            fd, channel, index = (int(part) for part in spec.split(":"))
        except ValueError:
            raise DeploymentError(f"--worker takes FD:FD:INDEX, not {spec!r}") from None
        self.sock = socket.socket(fileno=fd)
        self.channel = socket.socket(fileno=channel)
        self.index = index
        self.folder = counters_folder(name)
        self.own = self.folder / f"{index}.json"
        self.base = _read(self.own)  # what this slot's earlier worker had counted

    def report(self, state: dict[str, Any]) -> None:
        self.channel.sendall(json.dumps(state).encode() + b"\n")

    def watch_supervisor(self) -> None:
        """Stop this worker gracefully when the supervisor goes away (end of file)."""

        def wait() -> None:
            try:
                while self.channel.recv(1024):
                    pass
            except OSError:
                pass
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(15)  # uvicorn drains in less; never outlive it by much
            os._exit(1)

        threading.Thread(target=wait, daemon=True).start()

    def own_snapshot(self, metrics: Metrics, stats: dict[str, int]) -> dict[str, Any]:
        merged = Metrics.total([self.base, metrics.snapshot()]).snapshot()
        return {**merged, "stats": _stats_sum([self.base.get("stats", {}), stats])}

    def start_snapshots(self, counters: Callable[[], tuple[Metrics, dict[str, int]]]) -> None:
        def loop() -> None:
            last = None
            while True:
                snapshot = self.own_snapshot(*counters())
                if snapshot != last:
                    tmp = self.own.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(snapshot))
                    os.replace(tmp, self.own)
                    last = snapshot
                time.sleep(SNAPSHOT_S)

        threading.Thread(target=loop, daemon=True).start()

    def totals(self, metrics: Metrics, stats: dict[str, int]) -> tuple[Metrics, dict[str, int]]:
        """Every worker's counters: this one's live, the others' last snapshots."""
        snapshots = [self.own_snapshot(metrics, stats)]
        snapshots += [_read(p) for p in self.folder.glob("*.json") if p != self.own]
        total = Metrics.total(snapshots)
        return total, _stats_sum([s.get("stats", {}) for s in snapshots])


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _stats_sum(items: list[dict[str, int]]) -> dict[str, int]:
    keys = ("batches", "predictions")
    return {k: sum(int(s.get(k, 0)) for s in items) for k in keys}
