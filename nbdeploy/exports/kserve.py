"""``nd.export(ref, "kserve")``: the container build context plus a KServe InferenceService.

The InferenceService (``serving.kserve.io/v1beta1``) runs the image built from the same
context as a custom predictor. nbdeploy's server already speaks the V2 (Open
Inference) protocol KServe expects of one: ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/NAME``, ``/v2/models/NAME/ready`` and ``/v2/models/NAME/infer``, where
NAME is the InferenceService's name (the container is started with ``--name`` set to
it). KServe routes by Host header, which the server checks: ``NBDEPLOY_ALLOWED_HOSTS``
lists the predictor's and the InferenceService's cluster names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbdeploy.exports import docker
from nbdeploy.exports.jobs import k8s_name

FILE = "inferenceservice.yaml"


def inference_service(
    origin: dict[str, Any], name: str, isvc: str, namespace: str
) -> dict[str, Any]:
    hosts = docker.allowed_hosts(
        f"{isvc}-predictor",
        namespace,
        (isvc, f"{isvc}.{namespace}", f"{isvc}.{namespace}.svc.cluster.local"),
    )
    entry = docker.serve_command(origin, isvc)
    probe = {"path": "/v2/health/ready", "port": docker.PORT}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": isvc,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "nbdeploy"},
            "annotations": {
                "nbdeploy.io/model": origin["model"],
                "nbdeploy.io/version": str(origin["version"]),
                "nbdeploy.io/manifest-sha256": origin["manifest_sha256"],
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "securityContext": {"runAsNonRoot": True, "runAsUser": docker.UID},
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": origin["image"],
                        "command": entry,
                        "ports": [
                            {"name": "http1", "containerPort": docker.PORT, "protocol": "TCP"}
                        ],
                        "env": [
                            {"name": "NBDEPLOY_ALLOWED_HOSTS", "value": hosts},
                            {"name": "NBDEPLOY_TOKEN_FILE", "value": f"{docker.SECRETS}/token"},
                            {"name": "PROTOCOL", "value": "v2"},
                        ],
                        "readinessProbe": {"httpGet": probe, "periodSeconds": 5},
                        "resources": {
                            "requests": {"cpu": "500m", "memory": "512Mi"},
                            "limits": {"memory": "2Gi"},
                        },
                        "volumeMounts": [
                            {"name": "token", "mountPath": docker.SECRETS, "readOnly": True}
                        ],
                    }
                ],
                "volumes": [
                    {"name": "token", "secret": {"secretName": f"{isvc}-token"}},
                ],
            }
        },
    }


def write(ref: str, path: Path | None, *, namespace: str = "default") -> Path:
    import yaml

    from nbdeploy import registry

    mv = registry.resolve(ref)
    folder = path or Path(f"{mv.name}-v{mv.version}-kserve")
    context, origin, name = docker.build_context(ref, folder, namespace=namespace)
    isvc = k8s_name(name, limit=45)  # KServe appends "-predictor-..." to build its names
    manifest = inference_service(origin, name, isvc, namespace)
    (context / FILE).write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return context
