"""Throwaway engines for the team tests: one PostgreSQL and one MLflow tracking server.

Both are real servers on 127.0.0.1, started once per test run by the session fixtures
in ``conftest.py`` and stopped at its end. PostgreSQL is Debian's (``make postgres``
installs it); ``initdb`` refuses to run as root, so as root the cluster belongs to the
``postgres`` user (or ``nobody``) in a folder under /tmp that user can reach (pytest's
temporary folders are private to root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path | None:
    """Debian's server binaries (newest major version), or None when not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _major(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


@dataclass
class Postgres:
    """One PostgreSQL cluster on 127.0.0.1 with trust authentication for ``postgres``."""

    bin: Path
    folder: Path
    port: int
    owner: str | None  # the unprivileged user that runs it when we are root

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.owner, "--"] if self.owner else []
        return subprocess.run(
            [*prefix, *args], check=check, capture_output=True, text=True, timeout=120
        )

    @classmethod
    def start(cls) -> Postgres:
        binary = postgres_bin()
        if binary is None:
            raise RuntimeError("PostgreSQL is not installed (run `make postgres`)")
        owner = _unprivileged_user() if os.geteuid() == 0 else None
        folder = Path(tempfile.mkdtemp(prefix="nbdeploy-pg-", dir="/tmp"))
        if owner:
            entry = pwd.getpwnam(owner)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        pg = cls(binary, folder, free_port(), owner)
        pg._run(str(binary / "initdb"), "-D", str(folder / "data"), "-U", "postgres",
                "--auth=trust", "-E", "UTF8", "--no-sync")  # fmt: skip
        pg.resume()
        return pg

    def resume(self) -> None:
        """Start the server (again, after :meth:`halt`) on the same port and data."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-w", "-l",
                  str(self.folder / "log"), "-o", options, "start")  # fmt: skip

    def halt(self) -> None:
        """Stop the server abruptly (as a crash would), keeping its data."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
                  "-w", "stop", check=False)  # fmt: skip

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.folder, ignore_errors=True)


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user (postgres or nobody) to run initdb as")


@dataclass
class TrackingServer:
    """``mlflow server`` on PostgreSQL with artifacts served by the server itself.

    With ``users`` it runs MLflow's basic-auth app: every call needs a user name and
    password (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``); the first
    user is the admin, the others are created through the admin API.
    """

    process: subprocess.Popen[bytes]
    url: str
    artifacts: Path
    log: Path
    users: dict[str, str]

    @classmethod
    def start(cls, backend_uri: str, folder: Path, *, users: dict[str, str] | None = None,
              timeout: float = 180.0) -> TrackingServer:  # fmt: skip
        port = free_port()
        artifacts = folder / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        log = folder / "mlflow-server.log"
        mlflow = Path(sys.executable).with_name("mlflow")
        command = [str(mlflow), "server", "--backend-store-uri", backend_uri,
                   "--serve-artifacts", "--artifacts-destination", str(artifacts),
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        users = dict(users or {})
        if users:
            admin, password = next(iter(users.items()))
            ini = folder / "basic_auth.ini"
            ini.write_text(
                "[mlflow]\ndefault_permission = MANAGE\n"
                f"database_uri = sqlite:///{folder / 'auth.db'}\n"
                f"admin_username = {admin}\nadmin_password = {password}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                "auth_cache_ttl_seconds = 600\n"  # else every call pays a PBKDF2 hash
            )
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini),
                       MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex())  # fmt: skip
            command += ["--app-name", "basic-auth"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=folder, start_new_session=True,
            )  # fmt: skip
        server = cls(process, f"http://127.0.0.1:{port}", artifacts, log, users)
        server._wait(timeout)
        server._create_users()
        return server

    def _create_users(self) -> None:
        if not self.users:
            return
        admin = next(iter(self.users.items()))
        for user, password in list(self.users.items())[1:]:
            body = {"username": user, "password": password}
            url = f"{self.url}/api/2.0/mlflow/users/create"
            response = httpx.post(url, auth=admin, json=body, timeout=60)
            response.raise_for_status()

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables for a block, then restore them.

    Servers started inside the block inherit them (``nd.serve`` passes its environment).
    """
    saved = {key: os.environ.get(key) for key in values}
    try:
        _set_environ(values)
        yield
    finally:
        _set_environ(saved)


def _set_environ(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
