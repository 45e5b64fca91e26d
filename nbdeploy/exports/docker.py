"""``nd.export(ref, "docker")``: a container build context that serves one verified version.

The folder holds:

- ``model/``: the version's files exactly as registered, copied only after their hashes
  verify; the server checks them again at every start (``nbdeploy serve /app/model
  --resolved VERSION:SHA256``), so an image whose model was altered does not serve;
- ``wheels/``: nbdeploy's own wheel (it is on no package index);
- ``requirements.txt``: the packages the model was registered with, pinned to the
  versions recorded then (Python itself picks the base image, ``python:X.Y.Z-slim``);
- ``Dockerfile``: a non-root user, the server on 0.0.0.0:8080, its token read from a
  mounted secret (``NBDEPLOY_TOKEN_FILE``), ``NBDEPLOY_ALLOWED_HOSTS`` set, and a
  ``HEALTHCHECK``;
- ``kubernetes.yaml``: a Deployment (readiness on ``/v2/health/ready``, liveness on
  ``/v2/health/live``, resource requests, the token from a Secret) and a Service;
- ``nbdeploy-export.json``: where it all came from (model, version, manifest hash, run).

Every value is written through ``json.dumps`` (Dockerfile exec form, labels, ENV) or
PyYAML, so a name or path cannot break out of its field.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from nbdeploy.exports.jobs import k8s_name

#: Where things live inside the image
APP, MODEL, DATA, SECRETS, PORT, UID = (
    "/app",
    "/app/model",
    "/data",
    "/run/secrets/nbdeploy",
    8080,
    10001,
)
#: What ``nbdeploy serve`` needs beyond the model's own requirements, pinned when recorded
_CORE = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "cloudpickle")


def runtime(meta: dict[str, Any]) -> str:
    """``onnx`` when the version stores its ONNX conversion (``nd.register(..., onnx=True)``):
    the container then starts without importing scikit-learn, well under a second here."""
    return "onnx" if meta.get("onnx", {}).get("file") else "native"


def serve_command(origin: dict[str, Any], name: str) -> list[str]:
    """The container's command: serve the baked-in version, its hashes checked at start."""
    entry = ["nbdeploy", "serve", MODEL, "--name", name, "--host", "0.0.0.0", "--port", str(PORT)]
    entry += ["--resolved", f"{origin['version']}:{origin['manifest_sha256']}"]
    if origin.get("runtime", "native") != "native":
        entry += ["--runtime", origin["runtime"]]
    return entry


def requirements(meta: dict[str, Any], model_dir: Path) -> list[str]:
    """``pkg==version`` for the model's requirements and nbdeploy's core, as registered."""
    recorded = dict(meta.get("lineage", {}).get("packages", {}))
    pins: dict[str, str] = {}
    listed = model_dir / "requirements.txt"
    if listed.is_file():
        for line in listed.read_text().splitlines():
            name, sep, version = line.strip().partition("==")
            if sep and name and not name.startswith("#"):
                pins[name.lower()] = version
    onnx = runtime(meta) == "onnx"
    for name in (*_CORE, "onnxruntime") if onnx else _CORE:
        if name in recorded:
            pins[name] = recorded[name]
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    if onnx and "onnxruntime" not in pins:
        lines.append("onnxruntime")  # registered with another build of it: any will serve
    return lines


def allowed_hosts(service: str, namespace: str, extra: tuple[str, ...] = ()) -> str:
    """The Host names the server accepts in a cluster: probes, the Service, its DNS names."""
    names = ["localhost", "127.0.0.1", service, f"{service}.{namespace}"]
    names += [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local", *extra]
    return ",".join(names)


def provenance(mv: Any, sha: str, image: str) -> dict[str, Any]:
    import nbdeploy

    return {
        "model": mv.name,
        "version": mv.version,
        "manifest_sha256": sha,
        "run_id": mv.run_id,
        "source": mv.source,
        "image": image,
        "nbdeploy": nbdeploy.__version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def dockerfile(origin: dict[str, Any], python: str, wheel: str, name: str, hosts: str) -> str:
    q = json.dumps
    entry = serve_command(origin, name)
    probe = (
        "import urllib.request as u; u.urlopen(u.Request("
        f"'http://127.0.0.1:{PORT}/v2/health/ready', headers={{'Host': 'localhost'}}), timeout=3)"
    )
    labels = {
        "org.opencontainers.image.title": f"nbdeploy {origin['model']} v{origin['version']}",
        "io.nbdeploy.model": origin["model"],
        "io.nbdeploy.version": str(origin["version"]),
        "io.nbdeploy.manifest-sha256": origin["manifest_sha256"],
        "io.nbdeploy.run-id": origin["run_id"],
    }
    env = {
        "NBDEPLOY_HOME": f"{DATA}/nbdeploy",
        "NBDEPLOY_TOKEN_FILE": f"{SECRETS}/token",
        "NBDEPLOY_ALLOWED_HOSTS": hosts,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    lines = [
        f"# Generated by nbdeploy {origin['nbdeploy']} from {q(origin['model'])} version "
        f"{origin['version']} (manifest sha256 {origin['manifest_sha256']}).",
        "# Build: docker build -t IMAGE .  Run: mount the token file at "
        f"{SECRETS}/token and publish port {PORT}.",
        f"FROM python:{python}-slim",
        *(f"LABEL {key}={q(value)}" for key, value in labels.items()),
        f"RUN useradd --create-home --uid {UID} nbdeploy && mkdir -p {DATA} && chown {UID} {DATA}",
        f"WORKDIR {APP}",
        f"COPY requirements.txt {APP}/requirements.txt",
        f"COPY wheels/ {APP}/wheels/",
        "RUN pip install --no-cache-dir --disable-pip-version-check "
        f"-r {APP}/requirements.txt {APP}/wheels/{wheel}",
        f"COPY model/ {MODEL}/",
        *(f"ENV {key}={q(value)}" for key, value in env.items()),
        f"USER {UID}",
        f"EXPOSE {PORT}",
        "HEALTHCHECK --interval=15s --timeout=5s --start-period=30s "
        f"CMD {q(['python', '-c', probe])}",
        f"ENTRYPOINT {q(entry)}",
    ]
    return "\n".join(lines) + "\n"


def kubernetes(
    origin: dict[str, Any], image: str, name: str, namespace: str, hosts: str
) -> list[dict[str, Any]]:
    """A Deployment and a Service for the image (the token comes from a Secret)."""
    app = k8s_name(f"nbdeploy-{name}")
    labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/managed-by": "nbdeploy"}
    annotations = {
        "nbdeploy.io/model": origin["model"],
        "nbdeploy.io/version": str(origin["version"]),
        "nbdeploy.io/manifest-sha256": origin["manifest_sha256"],
    }
    host = [{"name": "Host", "value": "localhost"}]  # a name NBDEPLOY_ALLOWED_HOSTS lists
    container = {
        "name": "server",
        "image": image,
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": [
            {"name": "NBDEPLOY_ALLOWED_HOSTS", "value": hosts},
            {"name": "NBDEPLOY_TOKEN_FILE", "value": f"{SECRETS}/token"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http", "httpHeaders": host},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http", "httpHeaders": host},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
        },
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "token", "mountPath": SECRETS, "readOnly": True},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": app,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "fsGroup": UID},
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "token", "secret": {"secretName": f"{app}-token"}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"app.kubernetes.io/name": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    return [deployment, service]


def build_context(
    ref: str, path: Path | None, *, image: str | None = None, namespace: str = "default"
) -> tuple[Path, dict[str, Any], str]:
    """Write the build context; ``(folder, provenance, server name)`` back."""
    import yaml

    from nbdeploy import registry
    from nbdeploy.exports import wheel

    mv = registry.resolve(ref)
    source = registry.fetch_model(mv)  # verified against the registered manifest hash
    sha = registry.manifest_sha(mv) or ""
    meta = registry.read_json(source, registry.METADATA)
    name = mv.name
    image = image or f"nbdeploy-{k8s_name(name)}:{mv.version}"
    origin = {**provenance(mv, sha, image), "runtime": runtime(meta)}
    target = path or Path(f"{name}-v{mv.version}-docker")
    if target.exists() and any(target.iterdir()):
        from nbdeploy.exceptions import NbdeployError

        raise NbdeployError(f"{target} exists and is not empty; give another --output")
    staging = Path(tempfile.mkdtemp(prefix=".nbdeploy-export-", dir=target.parent.resolve()))
    try:
        shutil.copytree(source, staging / "model")
        from nbdeploy import integrity

        integrity.verify(staging / "model", sha, what=f"{name}/{mv.version}")  # the copy too
        whl = wheel.build(staging / "wheels")
        (staging / "requirements.txt").write_text(
            "\n".join(requirements(meta, source)) + "\n", encoding="utf-8"
        )
        python = str(meta.get("lineage", {}).get("packages", {}).get("python", "3.11"))
        hosts = allowed_hosts(k8s_name(f"nbdeploy-{name}"), namespace)
        (staging / "Dockerfile").write_text(
            dockerfile(origin, python, whl.name, name, hosts), encoding="utf-8"
        )
        (staging / "kubernetes.yaml").write_text(
            yaml.safe_dump_all(kubernetes(origin, image, name, namespace, hosts), sort_keys=False),
            encoding="utf-8",
        )
        (staging / "nbdeploy-export.json").write_text(json.dumps(origin, indent=2) + "\n")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, origin, name


def write(ref: str, path: Path | None) -> Path:
    return build_context(ref, path)[0]
