"""The model registry on MLflow: register, resolve, promote, roll back, history.

This is the only module that talks to MLflow's client. It uses an ``MlflowClient``
bound to nbdeploy's tracking URI and never touches the user's global MLflow state
(no fluent API, no active run). A version's files are hashed at registration and
the manifest's hash is stored as a version tag: :func:`fetch_model` refuses to hand
out files that no longer match, before anything is deserialized.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbdeploy import config, lineage
from nbdeploy.exceptions import (
    ModelNotFoundError,
    PromotionError,
    RegistryError,
    SignatureError,
)
from nbdeploy.integrity import verify, write_manifest
from nbdeploy.models import ModelVersion

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

TAG = "nbdeploy."
METADATA = "nbdeploy.json"
PROFILE = "profile.json"
_REF = re.compile(r"^(?:models:/)?(?P<name>[^@]+?)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")


# -- client -------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _client_for(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def client() -> MlflowClient:
    config.ensure_home()
    uri = config.settings().tracking_uri
    _reachable(uri, config.tracking_identity())
    return _client_for(uri)


def _listening(uri: str, where: str) -> None:
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise RegistryError(f"{where} is not a usable tracking URI") from None
    if not host or host.startswith("/"):
        return  # a Unix socket or a driver default: let MLflow try
    default = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
    port = port or default.get(parts.scheme.split("+")[0], 0)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise RegistryError(
            f"cannot reach the MLflow tracking database at {where} "
            f"({exc.strerror or type(exc).__name__}); check that it runs and NBDEPLOY_TRACKING_URI"
        ) from None


@functools.lru_cache(maxsize=8)  # failures are not cached: the next call tries again
def _reachable(uri: str, identity: str) -> None:
    """Fail with one clear line when a tracking server or database cannot be used.

    MLflow would otherwise retry a refused connection for minutes and then raise a
    stack of HTTP or SQLAlchemy internals. Checked once per process and URI.
    """
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("", "file", "sqlite"):
        return
    where = config.redact(uri)
    if not config.is_remote_tracking(uri):  # a database URL: MLflow would retry for minutes
        _listening(uri, where)
    elif scheme != "databricks":
        import httpx

        try:
            httpx.get(f"{uri.rstrip('/')}/health", timeout=10)
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"cannot reach the MLflow tracking server at {where} ({type(exc).__name__}); "
                "start it, or fix NBDEPLOY_TRACKING_URI / MLFLOW_TRACKING_URI"
            ) from None
    try:
        _client_for(uri).search_experiments(max_results=1)
    except Exception as exc:
        text = str(exc)
        if " 401" in text or " 403" in text or "Unauthorized" in text:
            raise RegistryError(
                f"the MLflow tracking server at {where} refused the credentials; set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
            ) from None
        what = "tracking server" if config.is_remote_tracking(uri) else "tracking database"
        reason = type(getattr(exc, "orig", None) or exc.__cause__ or exc).__name__
        raise RegistryError(
            f"cannot use the MLflow {what} at {where} ({reason}); check that it runs "
            "and NBDEPLOY_TRACKING_URI"
        ) from None


def _experiment_id() -> str:
    s = config.settings()
    c = client()
    experiment = c.get_experiment_by_name(s.experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    # The embedded registry gets an explicit artifact root (MLflow would otherwise use
    # ./mlruns of this process); a tracking server chooses its own (mlflow-artifacts:),
    # so a model never lands on the disk of whoever registered it first.
    location = None if config.is_remote_tracking(s.tracking_uri) else s.artifact_root
    try:
        return str(c.create_experiment(s.experiment, artifact_location=location))
    except Exception:  # created concurrently by another process
        experiment = c.get_experiment_by_name(s.experiment)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


# -- refs -----------------------------------------------------------------------


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """``name@alias``, ``name/version``, ``models:/name@alias`` or ``models:/name/version``."""
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise ModelNotFoundError(
            f"{ref!r} is not a model ref; write name@alias (churn@champion), name/version "
            "(churn/3) or an MLflow URI (models:/churn@champion)",
            ref=str(ref),
        )
    version = match["version"]
    return match["name"], int(version) if version else None, match["alias"]


def is_ref(value: Any) -> bool:
    """Is ``value`` written like a model ref (it may still name nothing)?"""
    return isinstance(value, str) and _REF.match(value.strip()) is not None


def resolve(ref: str | ModelVersion) -> ModelVersion:
    """The registered version a ref points at now."""
    if isinstance(ref, ModelVersion):
        ref = ref.ref
    name, version, alias = parse_ref(ref)
    c = client()
    try:
        if alias is not None:
            mv = c.get_model_version_by_alias(name, alias)
        else:
            mv = c.get_model_version(name, str(version))
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
            raise RegistryError(f"the registry could not resolve {ref!r}: {exc}") from exc
        raise ModelNotFoundError(_not_found(name, version, alias), ref=ref) from None
    return _version(mv)


def _not_found(name: str, version: int | None, alias: str | None) -> str:
    c = client()
    try:
        model = c.get_registered_model(name)
    except Exception:
        return (
            f"no registered model named {name!r}; "
            f"register one with nd.register(model, {name!r}, X, y)"
        )
    if alias is not None:
        known = ", ".join(sorted(model.aliases)) or "none yet"
        return (
            f"{name!r} has no alias {alias!r} (aliases: {known}); "
            f"set it with nd.promote('{name}/<version>', to={alias!r})"
        )
    latest = max((int(v.version) for v in c.search_model_versions(f"name='{name}'")), default=0)
    return f"{name!r} has no version {version} (latest is {latest})"


def _version(mv: Any) -> ModelVersion:
    tags = dict(mv.tags or {})
    passed = tags.get(TAG + "test.passed")
    return ModelVersion(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id or "",
        aliases=tuple(sorted(getattr(mv, "aliases", None) or ())),
        description=mv.description or "",
        created=float(mv.creation_timestamp or 0) / 1000.0,
        flavor=tags.get(TAG + "flavor", ""),
        task=tags.get(TAG + "task", ""),
        fingerprint=tags.get(TAG + "fingerprint", ""),
        test_passed=None if passed is None else passed == "true",
        source=mv.source or "",
    )


def versions(name: str) -> list[ModelVersion]:
    """Every version of ``name``, oldest first, with the aliases each holds now."""
    import dataclasses

    c = client()
    held: dict[int, list[str]] = {}
    # MLflow's version search leaves aliases out; the registered model has them all
    for alias, version in (c.get_registered_model(name).aliases or {}).items():
        held.setdefault(int(version), []).append(alias)
    found = sorted(
        (_version(v) for v in c.search_model_versions(f"name='{name}'")), key=lambda v: v.version
    )
    return [dataclasses.replace(v, aliases=tuple(sorted(held.get(v.version, ())))) for v in found]


def model_names() -> list[str]:
    return sorted(m.name for m in client().search_registered_models())


# -- register -------------------------------------------------------------------


def register(
    model: Any,
    name: str,
    X: Any = None,
    y: Any = None,
    *,
    alias: str | None = None,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    pii: dict[str, str] | None = None,
) -> ModelVersion:
    """Log ``model`` to MLflow and register a new version of ``name``.

    nbdeploy builds the signature from ``X`` (serving enforces it, so there is no
    registering without one), stores an input example, the training-data profile
    and fingerprint, sha256 hashes of every artifact, and lineage. ``pii`` (column ->
    ``"hash"`` or ``"drop"``) decides what the audit log keeps of personal data.
    """
    from nbdeploy import flavors, profiling
    from nbdeploy.auditlog.privacy import check_policy
    from nbdeploy.schema import Schema, as_frame

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise RegistryError(
            f"{name!r} is not a usable model name; use letters, digits, "
            "'_', '-' and '.' (e.g. 'churn')"
        )
    if X is None:
        raise SignatureError(
            "nd.register needs the training features X to build the "
            "signature that serving enforces: nd.register(model, name, X, y)"
        )
    schema = Schema.infer(X)
    policy = check_policy(pii, schema.names)
    frame = as_frame(X, schema.names)
    flavor = flavors.detect(model)
    with tempfile.TemporaryDirectory(prefix="nbdeploy-") as tmp:
        path = Path(tmp) / "model"
        flavors.save(model, flavor, path, schema, frame.head(5))
        predictions, scores = flavors.training_outputs(model, flavor, frame, schema, path)
        metadata = {
            "format": 1,
            "name": name,
            "flavor": flavor,
            **flavors.describe(model, flavor, y, predictions),
            "schema": schema.to_dict(),
            "example": _example(frame),
            "fingerprint": profiling.fingerprint(X, y),
            "lineage": lineage.collect(),
            **({"pii": policy} if policy else {}),
        }
        _write_json(path / METADATA, metadata)
        profile = profiling.build_profile(frame, predictions, scores)
        (path / PROFILE).write_bytes(_dumps(profile))
        manifest_sha = write_manifest(path)
        mv = _log_and_register(name, path, metadata, manifest_sha, description, tags or {})
    if alias:
        _move_alias(mv, alias, action="register", reason="set at registration")
    return resolve(f"{name}/{mv.version}")


def _example(frame: pd.DataFrame) -> dict[str, list[Any]]:
    head = frame.head(5)
    return {
        str(c): [None if v is None or v != v else v for v in head[c].tolist()] for c in head.columns
    }


def _log_and_register(
    name: str,
    path: Path,
    metadata: dict[str, Any],
    manifest_sha: str,
    description: str | None,
    user_tags: dict[str, str],
) -> ModelVersion:
    c = client()
    lin = metadata["lineage"]
    run_tags = {
        "mlflow.user": lin["user"],
        "mlflow.runName": f"register-{name}",
        "mlflow.source.name": lin.get("notebook") or lin.get("script") or "",
        TAG + "kind": "register",
        TAG + "fingerprint": metadata["fingerprint"],
        TAG + "manifest_sha256": manifest_sha,
    }
    if lin.get("git_commit"):
        run_tags["mlflow.source.git.commit"] = lin["git_commit"]
    if lin.get("job_run_id"):
        run_tags[TAG + "job_run_id"] = lin["job_run_id"]
    run = c.create_run(_experiment_id(), tags=run_tags)
    run_id = run.info.run_id
    try:
        c.log_artifacts(run_id, str(path), "model")
        for key, value in list(metadata.get("params", {}).items())[:100]:
            c.log_param(run_id, key, str(value)[:500])
        c.set_terminated(run_id)
    except Exception as exc:
        c.set_terminated(run_id, status="FAILED")
        raise RegistryError(f"could not store the model artifacts: {exc}") from exc
    try:
        c.create_registered_model(name)
    except Exception as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise RegistryError(f"could not create registered model {name!r}: {exc}") from exc
    version_tags = {
        TAG + "manifest_sha256": manifest_sha,
        TAG + "flavor": metadata["flavor"],
        TAG + "task": metadata["task"],
        TAG + "fingerprint": metadata["fingerprint"],
        TAG + "notebook": lin.get("notebook") or "",
        TAG + "git_commit": lin.get("git_commit") or "",
        **{str(k): str(v) for k, v in user_tags.items()},
    }
    source = f"{run.info.artifact_uri.rstrip('/')}/model"
    mv = c.create_model_version(
        name, source=source, run_id=run_id, tags=version_tags, description=description
    )
    return _version(mv)


# -- artifacts and trust -----------------------------------------------------------


def cache_path(name: str, version: int) -> Path:
    """Where a version's files are kept locally once fetched (and verified on every use)."""
    return config.settings().cache_dir / "models" / name / str(version)


def manifest_sha(mv: ModelVersion) -> str | None:
    """The sha256 of the version's artifact manifest, as recorded at registration."""
    tags = client().get_model_version(mv.name, str(mv.version)).tags or {}
    return tags.get(TAG + "manifest_sha256")


def fetch_model(mv: ModelVersion, *, trust_unverified: bool = False) -> Path:
    """A verified local copy of the version's model folder."""
    what = f"{mv.name}/{mv.version}"
    expected = manifest_sha(mv)
    target = cache_path(mv.name, mv.version)
    if not target.is_dir():
        _download(mv.source, target, what)
    if expected or not (trust_unverified or config.settings().trust_unverified):
        verify(target, expected, what=what)
    return target


def _download(source: str, target: Path, what: str) -> None:
    """Copy a version's files into the cache; a local store is copied directly."""
    from urllib.parse import unquote, urlparse

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        parsed = urlparse(source)
        if parsed.scheme in ("", "file"):
            shutil.copytree(unquote(parsed.path), staging / "model")
        else:
            import mlflow.artifacts

            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source,
                dst_path=str(staging / "download"),
                tracking_uri=config.settings().tracking_uri,
            )
            Path(local).rename(staging / "model")
        try:
            (staging / "model").rename(target)
        except OSError:  # another process fetched it first; its copy is verified the same way
            pass
    except Exception as exc:
        raise RegistryError(f"could not download the artifacts of {what}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_json(path: Path, name: str) -> dict[str, Any]:
    return json.loads((path / name).read_text())


def load_profile(ref: str | ModelVersion) -> dict[str, Any]:
    """The reference profile stored when the version was registered."""
    mv = resolve(ref)
    return read_json(fetch_model(mv), PROFILE)


# -- aliases and history --------------------------------------------------------------


def record_test(mv: ModelVersion, passed: bool, summary: dict[str, Any]) -> None:
    c = client()
    c.set_model_version_tag(mv.name, str(mv.version), TAG + "test.passed", str(passed).lower())
    c.set_model_version_tag(
        mv.name, str(mv.version), TAG + "test.report", json.dumps(summary, default=str)[:4900]
    )


def test_summary(mv: ModelVersion) -> dict[str, Any] | None:
    tags = client().get_model_version(mv.name, str(mv.version)).tags or {}
    raw = tags.get(TAG + "test.report")
    return json.loads(raw) if raw else None


def alias_holder(name: str, alias: str) -> int | None:
    try:
        return int(client().get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def promote(
    ref: str | ModelVersion,
    to: str = "champion",
    *,
    force: bool = False,
    reason: str | None = None,
    defer: bool | None = None,
) -> ModelVersion:
    """Move alias ``to`` onto the version ``ref`` names, if its last ``nd.test`` passed.

    Inside a job (``nd.run_job``) the move is checked now but made when the job
    succeeds (``defer`` overrides): a job that fails later promotes nothing, and no
    server follows an alias onto its version in the meantime.
    """
    mv = resolve(ref)
    reserved = to.lower() == "latest" or re.fullmatch(r"[vV]\d+", to or "")
    if not re.fullmatch(r"[A-Za-z_][\w-]*", to or "") or reserved:
        raise PromotionError(
            f"{to!r} is not a usable alias ('latest' and v<number> are MLflow's own); "
            "use a word like 'champion'"
        )
    if not force and mv.test_passed is not True:
        state = "never tested" if mv.test_passed is None else "failed its last nd.test"
        raise PromotionError(
            f"{mv.name}/{mv.version} {state}; run nd.test on it first, or "
            "pass force=True to promote it anyway"
        )
    why = reason or ("forced" if force else "test passed")
    job = config.settings().job_run_id
    if job and defer is not False:
        pending = pending_promotions(job)
        pending.append({"ref": mv.ref, "alias": to, "force": force, "reason": why})
        path = _pending_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(pending))
        return mv
    _move_alias(mv, to, action="promote", reason=why)
    return resolve(f"{mv.name}/{mv.version}")


def _pending_path(job_run_id: str) -> Path:
    return config.settings().home / "jobs" / "pending" / f"{job_run_id}.json"


def pending_promotions(job_run_id: str) -> list[dict[str, Any]]:
    """Promotions a running job asked for, to be made when it succeeds."""
    path = _pending_path(job_run_id)
    return list(json.loads(path.read_text())) if path.is_file() else []


def settle_promotions(job_run_id: str, *, succeeded: bool) -> list[str]:
    """Make (or, for a failed job, drop) the promotions a job deferred."""
    pending = pending_promotions(job_run_id)
    _pending_path(job_run_id).unlink(missing_ok=True)
    if not succeeded:
        return []
    made = []
    for move in pending:
        promote(
            move["ref"], to=move["alias"], force=move["force"], reason=move["reason"], defer=False
        )
        made.append(f"{move['ref']}@{move['alias']}")
    return made


def rollback(name: str, alias: str = "champion") -> ModelVersion:
    """Move ``alias`` back to the version that held it before the current holder."""
    parse_ref(f"{name}@{alias}")
    events = [e for e in _history_events(name) if e["alias"] == alias]
    stack: list[int] = []
    for event in events:
        if event["action"] == "rollback":
            if stack:
                stack.pop()
        elif event["from_version"] is not None:
            stack.append(int(event["from_version"]))
    current = alias_holder(name, alias)
    while stack and stack[-1] == current:
        stack.pop()
    if not stack:
        raise PromotionError(
            f"{name}@{alias} has no earlier holder to roll back to (see nd.history({name!r}))"
        )
    mv = resolve(f"{name}/{stack[-1]}")
    _move_alias(mv, alias, action="rollback", reason=f"rollback from version {current}")
    return resolve(f"{name}/{mv.version}")


def _move_alias(mv: ModelVersion, alias: str, *, action: str, reason: str) -> None:
    c = client()
    previous = alias_holder(mv.name, alias)
    if previous == mv.version:
        return
    try:
        c.set_registered_model_alias(mv.name, alias, str(mv.version))
    except Exception as exc:
        raise PromotionError(f"the registry refused alias {alias!r}: {exc}") from None
    event = {
        "time": time.time(),
        "alias": alias,
        "from_version": previous,
        "to_version": mv.version,
        "user": config.settings().user,
        "reason": reason,
        "action": action,
    }
    key = f"{TAG}history.{time.time_ns():020d}.{uuid.uuid4().hex[:6]}"
    c.set_registered_model_tag(mv.name, key, json.dumps(event))


def _history_events(name: str) -> list[dict[str, Any]]:
    try:
        tags = client().get_registered_model(name).tags or {}
    except Exception:
        raise ModelNotFoundError(f"no registered model named {name!r}", ref=name) from None
    keys = sorted(k for k in tags if k.startswith(TAG + "history."))
    return [json.loads(tags[k]) for k in keys]


def history(name: str) -> pd.DataFrame:
    """Every alias move of ``name``, oldest first."""
    import pandas as pd

    events = _history_events(name)
    frame = pd.DataFrame(
        events, columns=["time", "alias", "from_version", "to_version", "user", "reason", "action"]
    )
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    for col in ("from_version", "to_version"):
        frame[col] = frame[col].astype("Int64")
    return frame


# -- helpers ---------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    import orjson

    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def _write_json(path: Path, obj: Any) -> None:
    path.write_bytes(_dumps(obj))
