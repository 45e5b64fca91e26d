"""Start, find and stop model servers.

``nd.serve`` starts ``nbdeploy serve`` as a child in its own session, so a kernel
interrupt or restart does not kill it. The server loads and warms up its model,
binds its port itself (port 0 picks a free one), then writes
``$NBDEPLOY_HOME/deployments/<name>.json``: that file is how ``nd.serve`` learns
the real port, and how ``nd.deployments()`` finds servers again after a restart.
Output goes to ``<name>.log`` next to it; a failed start shows its last lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbdeploy import config, names
from nbdeploy.exceptions import DeploymentError
from nbdeploy.models import Stopped
from nbdeploy.serving.client import Deployment

if TYPE_CHECKING:
    import pandas as pd

_children: dict[str, subprocess.Popen[bytes]] = {}
#: tokens of the servers this process started (never written to disk)
_tokens: dict[str, str] = {}


def token_for(name: str) -> str | None:
    """The bearer token of deployment ``name``: as started here, else NBDEPLOY_TOKEN."""
    return _tokens.get(name) or config.settings().token


def _state_path(name: str) -> Path:
    # the name becomes a path: "../x" or "a/b" must never get this far
    return config.settings().deployments_dir / f"{names.check(name, 'deployment')}.json"


def _read_state(name: str) -> dict[str, Any] | None:
    try:
        info = json.loads(_state_path(name).read_text())
    except (OSError, ValueError):
        return None
    # a file someone else wrote must name itself (a valid name) to be believed
    return info if isinstance(info, dict) and info.get("name") == name else None


def _known_names() -> list[str]:
    """Deployments with a state file; files not named by the naming rule are ignored."""
    stems = (p.stem for p in config.settings().deployments_dir.glob("*.json"))
    return sorted(stem for stem in stems if names.is_valid(stem))


def write_state(name: str, state: dict[str, Any]) -> None:
    """Atomically (re)write a deployment's state file."""
    tmp = _state_path(name).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, _state_path(name))


def hold_name(name: str) -> Any:
    """Lock ``name`` for this server's lifetime, or raise if another server holds it.

    The kernel drops the lock when the process dies, even by ``kill -9``, so a dead
    deployment never blocks its name.
    """
    import fcntl

    names.check(name, "deployment")
    config.ensure_home()
    lock = (config.settings().deployments_dir / f"{name}.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        info = _read_state(name) or {}
        raise DeploymentError(
            f"deployment {name!r} is already running at {info.get('url', '?')}; stop it "
            f"with nd.stop({name!r}) or choose another name"
        ) from None
    return lock


def running(name: str) -> bool:
    """Whether a live server holds ``name``'s lock (see :func:`hold_name`).

    This, not the PID, says a deployment is alive: the kernel drops the lock when the
    server dies, while its PID may be reused by any other process, even one whose
    command line mentions nbdeploy.
    """
    import fcntl

    lock = config.settings().deployments_dir / f"{names.check(name, 'deployment')}.lock"
    try:
        with lock.open("rb") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            return False  # closing the probe releases it at once
    except FileNotFoundError:
        return False


def clear_state(name: str, pid: int) -> None:
    info = _read_state(name)
    if info and info.get("pid") == pid:
        _state_path(name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own exited children
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    if stat.split(") ")[-1][:1] in ("Z", "X"):
        return False  # exited (a zombie not reaped by its parent)
    # The command line tells our server from another program that reused the PID; it is
    # empty while a process is exiting (its memory is gone, its files, so the name lock,
    # not yet): that process is still there.
    return not cmdline or b"nbdeploy" in cmdline


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no server output)"
    return "\n".join(text[-lines:])


def serve(
    ref: str,
    *,
    name: str | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    token: str | None = None,
    shadow: Any = (),
    split: Any = None,
    threshold: float | None = None,
    fallback: Any = None,
    trust_unverified: bool = False,
    runtime: str = "native",
    workers: int = 1,
) -> Deployment:
    """Start a model server in the background and wait until it answers.

    ``runtime="onnx"`` answers through onnxruntime on the model's ONNX conversion.
    ``workers`` > 1 runs that many serving processes behind the one port; the
    deployment's ``pid`` is then their supervisor's, and stopping it stops them all.
    """
    from nbdeploy import registry

    shadow = (shadow,) if isinstance(shadow, str) else tuple(shadow)
    split = dict(split or {})
    if threshold is None and fallback is not None:
        raise DeploymentError("a fallback applies below a confidence threshold: pass threshold=")
    fallback = "abstain" if fallback is None else fallback
    mv = registry.resolve(ref)  # a wrong ref fails here, in the notebook, not in a child
    for other in (*shadow, *split, *([fallback] if registry.is_ref(fallback) else [])):
        registry.resolve(other)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DeploymentError(f"workers must be a whole number >= 1, not {workers!r}")
    if threshold is not None and not 0 < threshold <= 1:
        raise DeploymentError("threshold is a probability: give a number in (0, 1]")
    name = names.check(mv.name if name is None else name, "deployment")
    existing = _read_state(name)
    if existing and running(name):
        raise DeploymentError(
            f"deployment {name!r} is already running at {existing['url']}; "
            f"stop it with nd.stop({name!r}) or pass another name="
        )
    config.ensure_home()
    state, log_path = _state_path(name), config.settings().deployments_dir / f"{name}.log"
    state.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "nbdeploy.cli",
        "serve",
        ref,
        "--name",
        name,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if trust_unverified:
        command.append("--trust-unverified")
    if runtime != "native":
        command += ["--runtime", runtime]
    if workers > 1:
        command += ["--workers", str(workers)]
    expected = registry.manifest_sha(mv)
    if expected:  # fetched and verified here, so the server starts without the registry
        registry.fetch_model(mv)
        command += ["--resolved", f"{mv.version}:{expected}"]
    for other in shadow:
        command += ["--shadow", other]
    for other, fraction in split.items():
        command += ["--split", f"{other}={float(fraction)}"]
    if threshold is not None:
        command += ["--threshold", str(float(threshold)), "--fallback", json.dumps(fallback)]
    # the token travels in the environment (never argv, which ps shows); one from this
    # process's NBDEPLOY_TOKEN / NBDEPLOY_TOKEN_FILE protects the server just the same
    token = token or config.settings().token
    env = config.child_env(NBDEPLOY_TOKEN=token or "")
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    _children[name] = child
    if token:
        _tokens[name] = token
    deadline = time.monotonic() + config.settings().start_timeout_s
    while time.monotonic() < deadline:
        info = _read_state(name)
        if info and info.get("pid") == child.pid:
            return Deployment(
                name=name,
                ref=ref,
                url=info["url"],
                pid=child.pid,
                version=info.get("version"),
                token=token,
            )
        if child.poll() is not None:
            raise DeploymentError(f"the server for {ref} did not start:\n{_tail(log_path)}")
        time.sleep(0.02)
    _kill(child.pid)
    raise DeploymentError(
        f"the server for {ref} did not answer within "
        f"{config.settings().start_timeout_s:.0f} s:\n{_tail(log_path)}"
    )


def stop(name: str | None = None, *, all: bool = False) -> Stopped:
    """Stop one deployment (or every one with ``all=True``); returns the names stopped."""
    if not all and name is None:
        raise DeploymentError("name a deployment to stop, or pass all=True")
    if not all and _read_state(names.check(name, "deployment")) is None:
        raise _no_deployment(name)
    stopped = Stopped()
    for each in _known_names() if all else [name]:
        info = _read_state(str(each))
        if info is None:
            continue
        if running(str(each)) and not _kill(info["pid"]):
            raise DeploymentError(
                f"deployment {each!r} (pid {info['pid']}) did not stop; it may belong to "
                "another user: stop it there"
            )
        _state_path(str(each)).unlink(missing_ok=True)
        stopped.append(str(each))
    return stopped


def _signal(pid: int, sig: int) -> None:
    """Signal the server's process group (its own session), or the process alone when
    it was started some other way (``nbdeploy serve`` in a shell or a container)."""
    try:
        os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int) -> bool:
    """SIGTERM (a graceful drain), then SIGKILL after 10 s; True once it is gone."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        _signal(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if not _alive(pid):
            return True
    return False


def deployments() -> pd.DataFrame:
    """Every deployment this home knows: name, ref, version, url, pid, status."""
    import pandas as pd

    from nbdeploy.serving import client

    rows = []
    for each in _known_names():
        info = _read_state(each)
        if info is None:
            continue
        status, version = "dead", info.get("version")
        if running(each):
            probe = client.health(info["url"])
            status = "running" if probe else "unresponsive"
        rows.append(
            {
                "name": info["name"],
                "ref": info["ref"],
                "version": version,
                "url": info["url"],
                "pid": info["pid"],
                "status": status,
            }
        )
    return pd.DataFrame(rows, columns=["name", "ref", "version", "url", "pid", "status"])


def _no_deployment(name: str | None) -> DeploymentError:
    from nbdeploy.hints import closest

    guess = closest(str(name), _known_names())
    if guess is not None:
        return DeploymentError(f"no deployment named {name!r}; did you mean {guess!r}?")
    return DeploymentError(f"no deployment named {name!r}; see nd.deployments()")


def deployment(name: str) -> Deployment:
    info = _read_state(name)
    if info is None:
        raise _no_deployment(name)
    return Deployment(
        name=name,
        ref=info["ref"],
        url=info["url"],
        pid=info["pid"],
        version=info.get("version"),
        token=token_for(name),
    )
