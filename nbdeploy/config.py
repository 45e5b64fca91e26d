"""Every nbdeploy setting, read in one place.

Order of precedence: explicit arguments (handled by callers), then ``NBDEPLOY_*``
environment variables, then the embedded defaults below. No other module reads
``os.environ``; they call :func:`settings`.

``NBDEPLOY_HOME`` is resolved once to an absolute path: the variable if set, else
the nearest ``.nbdeploy/`` folder found upward from the working directory (as git
finds ``.git``), else ``./.nbdeploy``. Child processes (servers, job kernels, the
scheduler) receive it through :func:`child_env`, so every process sees one registry
and one audit log.
"""

from __future__ import annotations

import functools
import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nbdeploy.exceptions import ConfigError

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    home: Path
    #: MLflow tracking and registry URI (``MLFLOW_TRACKING_URI`` wins when set).
    tracking_uri: str
    #: Where MLflow stores artifacts of the experiments nbdeploy creates.
    artifact_root: str
    #: The prediction log: a SQLite file path (embedded default) or a PostgreSQL URL
    #: (``postgresql://user@host:port/db``; kept out of repr: it may hold a password).
    audit_db: Path | str = field(repr=False)
    #: MLflow experiment that holds nbdeploy's registration and job runs.
    experiment: str
    #: Largest accepted HTTP body, bytes.
    max_body_bytes: int
    #: Largest accepted batch on HTTP, rows (bulk scoring belongs to ``nd.score``).
    max_rows: int
    #: How often a running server checks whether its alias moved, seconds.
    alias_poll_s: float
    #: How long ``nd.serve`` waits for a server to answer, seconds.
    start_timeout_s: float
    #: Rows per chunk in ``nd.score``.
    score_chunk_rows: int
    #: ``NBDEPLOY_DASK_SCHEDULER``: address of a Dask scheduler for ``engine="dask"``
    #: (``tcp://host:8786``); empty: a local cluster started for the call.
    dask_scheduler: str | None
    #: The interactive user, recorded in lineage and history.
    user: str
    #: Notebook path as Jupyter tells the kernel (``JPY_SESSION_NAME``), if any.
    session_notebook: str | None
    #: The job run this process belongs to (set by ``nd.run_job`` for its kernel).
    job_run_id: str | None
    #: Bearer token a server started from this process requires (``--token`` wins).
    token: str | None = field(repr=False)
    #: Accept artifacts that did not come through ``nd.register`` (no recorded hashes).
    trust_unverified: bool
    #: How often a running server evaluates its alert rules, seconds (0 turns it off).
    alert_interval_s: float = 60.0
    #: The traffic window alert rules look at, seconds.
    alert_window_s: float = 3600.0
    #: URL that fired alerts are POSTed to as JSON (none: only recorded in audit.db).
    alert_webhook: str | None = None
    #: How many scheduled jobs the embedded scheduler runs at once, each in its own process.
    max_concurrent_jobs: int = 2
    #: Key of the keyed hash chain (``NBDEPLOY_AUDIT_KEY`` or ``NBDEPLOY_AUDIT_KEY_FILE``).
    audit_key: str | None = field(default=None, repr=False)
    #: File keeping the audit chain's newest hashes outside the database
    #: (``NBDEPLOY_AUDIT_ANCHOR``; default ``$NBDEPLOY_HOME/audit.anchor``).
    audit_anchor: Path = Path("audit.anchor")
    #: How often a process that wrote the log refreshes the anchor, seconds.
    audit_anchor_s: float = 2.0
    #: ``normal``: a commit survives ``kill -9``; ``full``: also power loss (fsync each).
    audit_sync: str = "normal"
    #: Inputs of predictions older than this many days are erased (None: kept).
    retention_days: float | None = None
    #: A server checkpoints the audit WAL to stay under this size, MiB.
    audit_wal_max_mb: float = 64.0
    #: Host headers a server accepts besides loopback names and its own address
    #: (``NBDEPLOY_ALLOWED_HOSTS``, comma-separated; ``*`` accepts any).
    allowed_hosts: tuple[str, ...] = ()
    #: How long a request waits for the audit log's write lock before a 503, seconds.
    audit_wait_s: float = 2.0
    #: Time a client gets to send its whole body, seconds (slow bodies get 408).
    body_timeout_s: float = 30.0
    #: Requests a server handles at once; more get 503 at once (health excepted).
    max_concurrent: int = 256
    #: Requests per second per bearer token (0: no limit); over it, 429.
    rate_limit: float = 0.0
    #: Bytes of answered inputs waiting for shadow models; beyond it, shadows drop work.
    shadow_queue_bytes: int = 64 * 1024 * 1024

    @property
    def deployments_dir(self) -> Path:
        return self.home / "deployments"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def user_cache_dir(self) -> Path:
        """Shared by every home of this user: what is the same for all of them."""
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base).expanduser() / "nbdeploy"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"NBDEPLOY_{name}", default)


def _number(name: str, default: float, kind: type = float) -> float:
    raw = _env(name, "")
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(
            f"NBDEPLOY_{name}={raw!r} is not a number; unset it or give a number"
        ) from None


def _webhook(url: str) -> str | None:
    from nbdeploy.webhooks import check_url

    return check_url(url, what="NBDEPLOY_ALERT_WEBHOOK") if url else None


def _secret(name: str) -> str | None:
    """``NBDEPLOY_<name>``, else the stripped contents of ``NBDEPLOY_<name>_FILE`` (as
    Kubernetes mounts secrets). Errors name the variable, never the value."""
    value = _env(name, "")
    if value:
        return value
    path = _env(f"{name}_FILE", "")
    if not path:
        return None
    try:
        value = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"NBDEPLOY_{name}_FILE cannot be read ({reason}); fix the path or unset it"
        ) from None
    if not value:
        raise ConfigError(f"NBDEPLOY_{name}_FILE names an empty file; put the secret in it")
    return value


def _audit_sync() -> str:
    sync = _env("AUDIT_SYNC", "normal").strip().lower()
    if sync not in ("normal", "full"):
        raise ConfigError(f"NBDEPLOY_AUDIT_SYNC must be 'normal' or 'full', not {sync[:20]!r}")
    return sync


def resolve_home(start: Path | None = None) -> Path:
    explicit = os.environ.get("NBDEPLOY_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".nbdeploy"
        if candidate.is_dir():
            return candidate
    return here / ".nbdeploy"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process, read once (``reset()`` re-reads them)."""
    home = resolve_home()
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or _env("TRACKING_URI", "")
    return Settings(
        home=home,
        tracking_uri=tracking or f"sqlite:///{home / 'mlflow.db'}",
        artifact_root=_env("ARTIFACT_ROOT", (home / "artifacts").as_uri()),
        audit_db=_audit_db(home),
        experiment=_env("EXPERIMENT", "nbdeploy"),
        max_body_bytes=int(_number("MAX_BODY_BYTES", 64 * 1024 * 1024, int)),
        max_rows=int(_number("MAX_ROWS", 1_000_000, int)),
        alias_poll_s=_number("ALIAS_POLL_S", 1.0),
        start_timeout_s=_number("START_TIMEOUT_S", 60.0),
        score_chunk_rows=int(_number("SCORE_CHUNK_ROWS", 50_000, int)),
        dask_scheduler=_env("DASK_SCHEDULER", "") or None,
        user=_env("USER", "") or _user(),
        session_notebook=os.environ.get("JPY_SESSION_NAME") or None,
        job_run_id=_env("JOB_RUN_ID", "") or None,
        token=_secret("TOKEN"),
        trust_unverified=_env("TRUST_UNVERIFIED", "").lower() in _TRUE,
        alert_interval_s=_number("ALERT_INTERVAL_S", 60.0),
        alert_window_s=_number("ALERT_WINDOW_S", 3600.0),
        alert_webhook=_webhook(_env("ALERT_WEBHOOK", "")),
        max_concurrent_jobs=max(1, int(_number("MAX_CONCURRENT_JOBS", 2, int))),
        audit_key=_secret("AUDIT_KEY"),
        audit_anchor=Path(_env("AUDIT_ANCHOR", str(home / "audit.anchor"))).expanduser().resolve(),
        audit_anchor_s=_number("AUDIT_ANCHOR_S", 2.0),
        audit_sync=_audit_sync(),
        retention_days=_number("RETENTION_DAYS", 0.0) or None,
        # 256: rewinding a quarter as often as at 64 lowered p99 at c=1 in 6 of 6
        # paired runs (benchmarks/README_longrun.md); still a fixed bound on disk
        audit_wal_max_mb=_number("AUDIT_WAL_MAX_MB", 256.0),
        allowed_hosts=tuple(
            h.strip().lower() for h in _env("ALLOWED_HOSTS", "").split(",") if h.strip()
        ),
        audit_wait_s=_number("AUDIT_WAIT_S", 2.0),
        body_timeout_s=_number("BODY_TIMEOUT_S", 30.0),
        max_concurrent=int(_number("MAX_CONCURRENT", 256, int)),
        rate_limit=_number("RATE_LIMIT", 0.0),
        shadow_queue_bytes=int(_number("SHADOW_QUEUE_BYTES", 64 * 1024 * 1024, int)),
    )


def _audit_db(home: Path) -> Path | str:
    raw = _env("AUDIT_DB", "") or str(home / "audit.db")
    if raw.split(":", 1)[0].lower() in ("postgresql", "postgres"):
        return raw
    if "://" in raw:
        raise ConfigError(
            f"NBDEPLOY_AUDIT_DB={redact_url(raw)!r}: give a SQLite file path or a "
            "postgresql://user@host:port/db URL"
        )
    return Path(raw).expanduser().resolve()


def is_remote_tracking(uri: str) -> bool:
    """Is ``uri`` a tracking server (not the embedded SQLite/file store)?"""
    return uri.split(":", 1)[0].lower() in ("http", "https", "databricks")


def tracking_identity() -> str:
    """A digest of the MLflow credentials in the environment (never the credentials)."""
    import hashlib

    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
    joined = "\x1f".join(os.environ.get(n, "") for n in names)
    return hashlib.sha256(joined.encode()).hexdigest()


def redact_url(uri: str) -> str:
    """``uri`` without a password (``scheme://user:***@host``), for errors and displays."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s:]*:[^/@\s]*@")


def redact(text: str, *extra: str | None) -> str:
    """``text`` without this process's token and audit key, nor passwords in URLs
    (``scheme://user:password@host``): what servers print goes through it."""
    s = settings()
    for secret in (s.token, s.audit_key, *extra):
        if secret:
            text = text.replace(secret, "***")
    return _CREDENTIALS.sub(r"\1***@", text)


def reset() -> None:
    """Forget the cached settings (tests, or after changing the environment)."""
    settings.cache_clear()


def ensure_home() -> Path:
    home = settings().home
    home.mkdir(parents=True, exist_ok=True)
    settings().deployments_dir.mkdir(exist_ok=True)
    return home


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this one, with the home pinned."""
    env = dict(os.environ)
    env["NBDEPLOY_HOME"] = str(settings().home)
    env["NBDEPLOY_TRACKING_URI"] = settings().tracking_uri
    env.update(extra)
    return env
