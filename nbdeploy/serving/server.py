"""``nbdeploy serve``: assemble one deployment and run it in the foreground.

Loads (and verifies) every model the deployment needs: the one that answers,
canary challengers, shadows and a fallback model; starts their alias followers;
binds the port; writes the state file ``nd.serve`` waits for; runs uvicorn.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from nbdeploy import config, registry
from nbdeploy.auditlog import AuditLog
from nbdeploy.exceptions import DeploymentError
from nbdeploy.serving.adapter import LoadedModel, load, load_folder, load_verified
from nbdeploy.serving.app import App
from nbdeploy.serving.batching import AliasFollower, LogWriter, Predictor
from nbdeploy.serving.process import clear_state, hold_name, write_state
from nbdeploy.serving.routing import ABSTAIN, Policy, Router, Shadow, ShadowRunner


def is_folder(ref: str) -> bool:
    """Is ``ref`` a model folder on disk (``nbdeploy serve PATH``) rather than a registry ref?"""
    return os.path.isdir(ref)


def _default_name(ref: str) -> str:
    """The model's name: from the ref, or from a model folder's metadata (checked)."""
    if not is_folder(ref):
        return registry.parse_ref(ref)[0]
    try:
        name = str(registry.read_json(Path(ref), registry.METADATA)["name"])
    except (OSError, ValueError, KeyError):
        raise DeploymentError(f"{ref} is not a model folder written by nbdeploy") from None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        raise DeploymentError(f"the model folder {ref} names no usable model; pass --name")
    return name


def parse_fallback(value: Any) -> Any:
    """A fallback as given on the command line: JSON scalars typed, else the text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class ServerSetup:
    """Everything one server runs, and the state file that describes it."""

    def __init__(
        self,
        ref: str,
        *,
        name: str | None,
        shadow: list[str],
        split: dict[str, float],
        threshold: float | None,
        fallback: Any,
        trust_unverified: bool,
        resolved: str | None = None,
        runtime: str = "native",
    ) -> None:
        s = config.settings()
        self.trust = trust_unverified
        self.runtime = runtime
        self.followers: list[AliasFollower] = []
        # a short busy timeout: a request waits that long for a locked log, then 503
        self.log = AuditLog(background_checkpoints=True, busy_timeout_s=s.audit_wait_s)
        self.wait_s = s.audit_wait_s
        #: the one thread that commits to the log when the event loop cannot at once
        self.writer = LogWriter()
        model = self._load(ref, resolved=resolved)
        # several models read one parsed request: they must keep taking the same columns
        several = bool(shadow or split or threshold is not None)
        self.columns: list[str] | None = model.schema.names if several else None
        self.name = name or model.name
        self.ref = ref
        self.policy = self._policy(model, threshold, fallback)
        shadows = [Shadow(r, self._load(r, like=model)) for r in shadow]
        self.runner = (
            ShadowRunner(self.name, shadows, model.schema.names, s.shadow_queue_bytes)
            if shadows
            else None
        )
        self.primary = self._predictor(ref, model)
        if sum(split.values()) > 1 or any(f <= 0 for f in split.values()):
            raise DeploymentError("split fractions must be positive and sum to at most 1")
        self.router = Router(
            self.primary,
            [(r, self._predictor(r, self._load(r, like=model)), f) for r, f in split.items()],
        )
        for slot in shadows:
            slot.follower = self._follow(slot, slot.ref)
        if self.runner is not None:
            self.runner.start()
        self.poll_s = s.alias_poll_s
        self.started = time.time()

    def _load(
        self, ref: str, like: LoadedModel | None = None, resolved: str | None = None
    ) -> LoadedModel:
        if is_folder(ref):  # an exported model folder: no registry at all
            model = load_folder(Path(ref), resolved, runtime=self.runtime)
        elif resolved:  # "VERSION:MANIFEST_SHA" from nd.serve, which fetched the files
            name, _, alias = registry.parse_ref(ref)
            version, _, expected = resolved.partition(":")
            model = load_verified(name, int(version), expected, alias=alias, runtime=self.runtime)
        else:
            model = load(ref, trust_unverified=self.trust, runtime=self.runtime)
        if like is not None and model.schema.names != like.schema.names:
            raise DeploymentError(
                f"{ref} takes columns {model.schema.names}, but the "
                f"deployment's model takes {like.schema.names}"
            )
        for warning in model.warnings:
            print(f"nbdeploy: {ref}: package mismatch: {warning}", flush=True)
        return model

    def _policy(self, model: LoadedModel, threshold: float | None, fallback: Any) -> Policy | None:
        if threshold is None:
            return None
        if not 0 < threshold <= 1:
            raise DeploymentError("threshold is a probability: give a number in (0, 1]")
        if not model.has_proba:
            raise DeploymentError(
                f"{model.name} gives no class probabilities, so a confidence "
                "threshold cannot apply; serve it without threshold"
            )
        fallback = parse_fallback(fallback if fallback is not None else ABSTAIN)
        if fallback != ABSTAIN and registry.is_ref(fallback):
            return Policy(threshold, fallback, self._load(fallback, like=model))
        return Policy(threshold, fallback)

    def _predictor(self, ref: str, model: LoadedModel) -> Predictor:
        predictor = Predictor(
            self.name,
            model,
            self.log,
            policy=self.policy,
            shadows=self.runner,
            writer=self.writer,
            wait_s=self.wait_s,
        )
        self._follow(predictor, ref)
        return predictor

    def _follow(self, target: Any, ref: str) -> AliasFollower | None:
        if is_folder(ref):
            return None
        _, _, alias = registry.parse_ref(ref)
        if not alias:
            return None
        follower = AliasFollower(
            target,
            target.current.name,
            alias,
            config.settings().alias_poll_s,
            self.trust,
            columns=self.columns,
        )
        follower.start()
        self.followers.append(follower)
        return follower

    def state(self, url: str, host: str, port: int) -> dict[str, Any]:
        s = config.settings()
        return {
            "name": self.name,
            "ref": self.ref,
            "url": url,
            "pid": os.getpid(),
            "host": host,
            "port": port,
            "version": self.primary.current.version.version,
            "started": self.started,
            "log": str(s.deployments_dir / f"{self.name}.log"),
            "shadow": [slot.ref for slot in (self.runner.shadows if self.runner else [])],
            "split": {r: f for r, _, f in self.router.splits},
            "policy": self.policy.describe() if self.policy else None,
        }


def steady_tail() -> None:
    """A short GIL switch interval: while the alias follower or the alert timer runs
    Python code, a request waits at most 0.5 ms for the event loop's turn instead of
    5 ms (one such wait is a whole p99; see benchmarks/tail_probe.py)."""
    sys.setswitchinterval(0.0005)


class _Redacted:
    """A stream that masks secrets (the token, the audit key, passwords in URLs) in
    everything the server prints, from nbdeploy or any library, before it reaches
    the deployment log."""

    def __init__(self, stream: IO[str], token: str | None) -> None:
        self.stream, self.token = stream, token

    def write(self, text: str) -> int:
        return self.stream.write(config.redact(text, self.token))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def allowed_hosts(host: str, extra: tuple[str, ...]) -> frozenset[str] | None:
    """Host header names a server bound to ``host`` answers to (None: any).

    Bound to loopback: loopback names only, so a DNS-rebinding page cannot reach it.
    Bound beyond: those in ``NBDEPLOY_ALLOWED_HOSTS`` (``*``: any), its own address
    and loopback names (probes inside the container).
    """
    loopback = {"localhost", "127.0.0.1", "[::1]"}
    bound = host.lower() if ":" not in host else f"[{host.lower()}]"
    try:
        is_loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if is_loopback:
        return frozenset(loopback | {bound})
    if "*" in extra:
        return None
    return frozenset(loopback | {bound} | set(extra))


def run(
    ref: str,
    *,
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    shadow: list[str] | tuple[str, ...] = (),
    split: dict[str, float] | None = None,
    threshold: float | None = None,
    fallback: Any = None,
    trust_unverified: bool = False,
    resolved: str | None = None,
    runtime: str = "native",
    workers: int = 1,
    worker: str | None = None,
    argv: list[str] | None = None,
) -> None:
    """Serve ``ref`` in the foreground until interrupted.

    ``resolved`` ("VERSION:MANIFEST_SHA") is how ``nd.serve`` hands over the version it
    already resolved and fetched, so that the first answer needs no registry call.
    With ``workers`` > 1 this process supervises that many copies of the command
    ``argv`` (see ``workers.py``); ``worker`` is how such a copy learns its socket.
    """
    import uvicorn

    s = config.settings()
    token = token if token is not None else s.token
    sys.stdout = _Redacted(sys.stdout, token)
    sys.stderr = _Redacted(sys.stderr, token)
    if workers > 1 and worker is None:
        from nbdeploy.serving.workers import supervise

        supervise(list(argv or []), name or _default_name(ref), host, port, workers)
        return
    # a worker's supervisor holds the name; a lone server holds it itself until exit
    name_lock = None if worker else hold_name(name or _default_name(ref))  # noqa: F841
    dep = ServerSetup(
        ref,
        name=name,
        shadow=list(shadow),
        split=dict(split or {}),
        threshold=threshold,
        fallback=fallback,
        trust_unverified=trust_unverified,
        resolved=resolved,
        runtime=runtime,
    )
    link = None
    if worker:
        from nbdeploy.serving.workers import WorkerLink

        link = WorkerLink(worker, dep.name)
        sock = link.sock
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DeploymentError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        sock.listen(2048)
    real_port = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{real_port}"
    config.ensure_home()

    def publish() -> None:
        state = dep.state(url, host, real_port)
        if link:  # the supervisor writes the one state file of the deployment
            link.report(state)
        else:
            write_state(dep.name, state)

    for follower in dep.followers:  # nd.deployments() shows the version that answers now
        follower.on_swap = publish

    primary_follower = next((f for f in dep.followers if f.predictor is dep.primary), None)
    hosts = allowed_hosts(host, s.allowed_hosts)
    if not token and hosts != allowed_hosts("127.0.0.1", ()):  # reachable beyond loopback
        print(
            f"nbdeploy: warning: listening on {host} without a token; anyone who can "
            "reach this address can predict (set NBDEPLOY_TOKEN or --token)",
            flush=True,
        )
    app = App(
        dep.primary,
        token=token,
        follower=primary_follower,
        max_body_bytes=s.max_body_bytes,
        max_rows=s.max_rows,
        ref=ref,
        router=dep.router,
        shadows=dep.runner,
        on_change=publish,
        allowed_hosts=hosts,
        max_concurrent=s.max_concurrent,
        rate_limit=s.rate_limit,
        body_timeout_s=s.body_timeout_s,
        writer=dep.writer,
        counters=link.totals if link else None,
    )
    if link:
        link.start_snapshots(lambda: (app.metrics, app._stats()))
        link.watch_supervisor()
    publish()
    print(
        f"nbdeploy: serving {ref} (version {dep.primary.current.version.version}) at {url}",
        flush=True,
    )
    try:  # alert rules on a timer (NBDEPLOY_ALERT_INTERVAL_S); never in the way of serving
        from nbdeploy.monitoring.alerting import start_timer

        if link is None or link.index == 0:  # one deployment, one timer
            start_timer(dep.name)
    except Exception as exc:
        print(f"nbdeploy: alert timer not started: {exc}", flush=True)
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    steady_tail()
    # uvicorn re-raises SIGTERM once it has drained: leave through Python instead, so
    # the finally below and exit handlers (the audit log's anchor) still run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.Server(
            uvicorn.Config(
                app,
                loop=loop,
                http="httptools",
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=5,
            )
        ).run(sockets=[sock])
    finally:
        for follower in dep.followers:
            follower.stopped.set()
        clear_state(dep.name, os.getpid())
