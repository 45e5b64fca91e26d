"""The model registry on MLflow: register, resolve, promote, roll back, history.

This is the only module that talks to MLflow's client. It uses an ``MlflowClient``
bound to nbdeploy's tracking URI and never touches the user's global MLflow state
(no fluent API, no active run). A version's files are hashed at registration and
the manifest's hash is stored as a version tag: :func:`fetch_model` refuses to hand
out files that no longer match, before anything is deserialized.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbdeploy import config, lineage, names
from nbdeploy.exceptions import (
    IntegrityError,
    ModelNotFoundError,
    PromotionError,
    RegistryError,
    SignatureError,
)
from nbdeploy.integrity import Verified, read_verified, write_manifest
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
    import logging

    from mlflow import MlflowClient

    # A fresh store logs its table creation and migrations at INFO: routine, yet a
    # notebook shows it in a red stderr box as if the first register had failed.
    for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if uri.startswith("sqlite:///"):
        _seed_store(Path(uri[len("sqlite:///") :]))

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _seed_store(db: Path) -> None:
    """Give a new home a copy of an empty, fully migrated MLflow database.

    MLflow creates its tables by replaying every migration since its first release
    (seconds, most of a new home's first register). The result depends only on the
    MLflow version, so it is built once per version in the user's cache and copied.
    """
    if db.exists():
        return
    import sqlite3

    import mlflow

    template = config.settings().user_cache_dir / f"mlflow-{mlflow.__version__}.db"
    if not template.is_file():
        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=template.parent) as tmp:
            built = Path(tmp) / "mlflow.db"
            SqlAlchemyStore(f"sqlite:///{built}").engine.dispose()  # creates every table
            with contextlib.closing(sqlite3.connect(built)) as con, con:
                con.execute("DELETE FROM experiments")  # no Default pointing at this folder
            os.replace(built, template)  # whole or absent; a concurrent build is as good
    db.parent.mkdir(parents=True, exist_ok=True)
    partial = db.with_name(f".{db.name}.{uuid.uuid4().hex[:8]}")
    shutil.copyfile(template, partial)
    try:
        os.link(partial, db)  # only if no other process created the store meanwhile
    except FileExistsError:
        pass
    finally:
        partial.unlink()


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
    where = config.redact_url(uri)
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


def store_stamp() -> tuple[int, ...] | None:
    """Changes whenever the registry may have: modification times and sizes of a SQLite
    registry's files; None for other stores (a server or a database: ask them)."""
    uri = config.settings().tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    stamp: list[int] = []
    for suffix in ("", "-wal", "-journal"):
        try:
            stat = os.stat(uri.removeprefix("sqlite:///") + suffix)
        except OSError:
            stat = None
        stamp += (stat.st_mtime_ns, stat.st_size) if stat else (0, 0)
    return tuple(stamp)


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
    names.check(match["name"], "model")
    if match["alias"] is not None:
        names.check(match["alias"], "alias")
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
        from nbdeploy.hints import closest

        guess = closest(name, model_names())
        if guess is not None:
            return f"no registered model named {name!r}; did you mean {guess!r}?"
        return (
            f"no registered model named {name!r}; "
            f"register one with nd.register(model, {name!r}, X, y)"
        )
    latest = max((int(v.version) for v in c.search_model_versions(f"name='{name}'")), default=0)
    if alias is not None:
        known = ", ".join(sorted(model.aliases)) or "none yet"
        # promotion refuses an untested version: name the step that will work
        ref = f"{name}/{latest}"
        step = f"nd.promote('{ref}', to={alias!r})"
        if latest and resolve(ref).test_passed is not True:
            step = f"nd.test('{ref}', X_test, y_test), then {step}"
        return f"{name!r} has no alias {alias!r} (aliases: {known}); {step}"
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
        job_run_id=tags.get(TAG + "job_run_id"),
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
    passthrough: list[str] | tuple[str, ...] | None = None,
    anomaly_fpr: float | None = 0.01,
    onnx: bool = False,
) -> ModelVersion:
    """Log ``model`` to MLflow and register a new version of ``name``.

    nbdeploy builds the signature from ``X`` (serving enforces it, so there is no
    registering without one), stores an input example, the training-data profile
    and fingerprint, sha256 hashes of every artifact, and lineage. ``pii`` (column ->
    ``"hash"`` or ``"drop"``) decides what the audit log keeps of personal data.

    ``passthrough``: columns requests may carry that the log keeps but the model never
    sees (segments, sensitive attributes, business keys), e.g. ``["region"]``; they
    need not be in ``X`` (and are left out of the model's input if they are).

    ``anomaly_fpr``: the share of held-out training rows the stored anomaly detector
    flags (``nd.anomalies``); None skips fitting it.

    ``onnx=True`` (``pip install nbdeploy[onnx]``) also stores the model's ONNX
    conversion, checked for parity and hashed with the other files: a server started
    with ``runtime="onnx"`` (and a container or KServe export) then answers through
    onnxruntime without importing scikit-learn, which starts in a fraction of the time.
    """
    from nbdeploy import flavors, profiling
    from nbdeploy.auditlog.privacy import check_policy
    from nbdeploy.schema import Schema, as_frame

    names.check(name, "model")
    if alias is not None:
        check_alias(alias)
    reserved = sorted(str(k) for k in tags or {} if str(k).lower().startswith(TAG))
    if reserved:  # else tags={"nbdeploy.test.passed": "true"} would pass the gate
        raise RegistryError(
            f"tag {reserved[0]!r}: the {TAG!r} prefix is reserved for what nbdeploy records "
            "(test results, artifact hashes); name your tag otherwise"
        )
    if X is None:
        raise SignatureError(
            "nd.register needs the training features X to build the "
            "signature that serving enforces: nd.register(model, name, X, y)"
        )
    keep = _passthrough_names(passthrough)
    if keep and hasattr(X, "columns"):
        X = X.drop(columns=[c for c in X.columns if str(c) in keep])
    schema = dataclasses.replace(Schema.infer(X), passthrough=keep)
    policy = check_policy(pii, schema.names)
    frame = as_frame(X, schema.names)
    flavor = flavors.detect(model)
    with tempfile.TemporaryDirectory(prefix="nbdeploy-") as tmp:
        path = Path(tmp) / "model"
        flavors.save(model, flavor, path, schema, frame.head(5))
        predictions, scores = flavors.training_outputs(model, flavor, frame, schema, path, y)
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
        if anomaly_fpr is not None:
            metadata["anomaly"] = _fit_detector(frame, path, anomaly_fpr, metadata.get("pii"))
        _write_json(path / METADATA, metadata)
        profile = profiling.build_profile(frame, predictions, scores)
        (path / PROFILE).write_bytes(_dumps(profile))
        if onnx:
            from nbdeploy.exports import to_onnx

            metadata["onnx"] = to_onnx.store(path, name)
            _write_json(path / METADATA, metadata)
        manifest_sha = write_manifest(path)
        mv = _log_and_register(name, path, metadata, manifest_sha, description, tags or {})
    if alias:
        _move_alias(mv, alias, action="register", reason="set at registration")
    return resolve(f"{name}/{mv.version}")


def _fit_detector(frame: pd.DataFrame, path: Path, fpr: float, pii: Any) -> dict[str, Any]:
    from nbdeploy.exceptions import NbdeployError
    from nbdeploy.monitoring import anomalies

    try:
        return anomalies.fit_and_store(frame, path, fpr=fpr, exclude=pii or None)
    except NbdeployError as exc:  # e.g. too few rows: registering still works
        if "between 0 and 1" in str(exc):
            raise
        return {"skipped": str(exc)}


def _passthrough_names(columns: Any) -> tuple[str, ...]:
    if columns is None:
        return ()
    if isinstance(columns, str) or not all(isinstance(c, str) and c for c in columns):
        raise RegistryError(
            "passthrough must be a list of column names, e.g. passthrough=['region']"
        )
    return tuple(dict.fromkeys(columns))


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


def cache_path(name: str, version: int, manifest_sha: str | None) -> Path:
    """Where a version's files are kept locally once fetched (and verified on every use).

    Keyed by the registry (two tracking URIs may both have a churn/1) and the manifest
    hash (what the files are), not by name and version alone.
    """
    registry = hashlib.sha256(config.settings().tracking_uri.encode()).hexdigest()[:16]
    return (
        config.settings().cache_dir / "models" / registry / name
        / f"{version}-{manifest_sha or 'unverified'}"
    )  # fmt: skip


def manifest_sha(mv: ModelVersion) -> str | None:
    """The sha256 of the version's artifact manifest, as recorded at registration."""
    tags = client().get_model_version(mv.name, str(mv.version)).tags or {}
    return tags.get(TAG + "manifest_sha256")


def fetch_model(mv: ModelVersion, *, trust_unverified: bool = False) -> Path:
    """A verified local copy of the version's model folder (to copy; to load from,
    use :func:`fetch_verified`: the folder can change after this check)."""
    return fetch_verified(mv, trust_unverified=trust_unverified).path


def fetch_verified(mv: ModelVersion, *, trust_unverified: bool = False) -> Verified:
    """The version's files, fetched to the cache, read once and checked against the
    registered hashes: load from these bytes, never from the folder again."""
    what = f"{mv.name}/{mv.version}"
    expected = manifest_sha(mv)
    target = cache_path(mv.name, mv.version, expected)
    if not target.is_dir():
        _download(mv.source, target, what)
    trusted = trust_unverified or config.settings().trust_unverified
    return read_verified(target, expected, what=what, trust_unverified=trusted)


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
    return fetch_verified(mv).json(PROFILE)


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


def store_holdout(mv: ModelVersion, frame: pd.DataFrame) -> str:
    """Keep the labelled held-out data of ``nd.test`` with the version (for label-free
    estimates): a Parquet artifact of the version's run, its sha256 a version tag."""
    c = client()
    with tempfile.TemporaryDirectory(prefix="nbdeploy-") as tmp:
        file = Path(tmp) / f"holdout-{time.time_ns()}.parquet"
        frame.to_parquet(file, index=False)
        sha = hashlib.sha256(file.read_bytes()).hexdigest()
        c.log_artifact(mv.run_id, str(file), "holdout")
    version = str(mv.version)
    c.set_model_version_tag(mv.name, version, TAG + "holdout.path", f"holdout/{file.name}")
    c.set_model_version_tag(mv.name, version, TAG + "holdout.sha256", sha)
    return sha


def load_holdout(mv: ModelVersion) -> pd.DataFrame | None:
    """The held-out data last given to ``nd.test`` for this version, hash-verified."""
    import pandas as pd

    c = client()
    tags = c.get_model_version(mv.name, str(mv.version)).tags or {}
    where, sha = tags.get(TAG + "holdout.path"), tags.get(TAG + "holdout.sha256")
    if not where or not sha:
        return None
    local = config.settings().cache_dir / "holdout" / mv.name / f"{mv.version}-{sha[:16]}.parquet"
    if not local.is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="nbdeploy-", dir=local.parent) as tmp:
            from urllib.parse import unquote, urlparse

            source = urlparse(f"{c.get_run(mv.run_id).info.artifact_uri}/{where}")
            if source.scheme in ("", "file"):  # a local store: no MLflow progress widget
                got = Path(tmp) / "holdout"
                shutil.copyfile(unquote(source.path), got)
            else:
                got = Path(c.download_artifacts(mv.run_id, where, tmp))
            got.replace(local)
    if hashlib.sha256(local.read_bytes()).hexdigest() != sha:
        raise IntegrityError(
            f"the held-out data of {mv.name}/{mv.version} does not match its registered "
            "sha256; run nd.test on the version again to store it anew"
        )
    return pd.read_parquet(local)


def check_alias(alias: object) -> str:
    """The naming rule, and MLflow's own: no '.', and 'latest' and v<number> are taken."""
    names.check(alias, "alias")
    assert isinstance(alias, str)
    if "." in alias or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise PromotionError(
            f"{alias!r} is not a usable alias ('.' is not allowed, and 'latest' and "
            "v<number> are MLflow's own); use a word like 'champion'"
        )
    return alias


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
    check_alias(to)
    mv = resolve(ref)
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
    names.check(name, "model")
    check_alias(alias)
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
        raise ModelNotFoundError(_not_found(name, None, None), ref=name) from None
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
