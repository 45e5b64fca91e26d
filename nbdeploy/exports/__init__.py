"""Exports: a model or a scheduled job as files another platform runs.

``nd.export(ref, format)`` writes a registered, verified model version in another
form; ``nbdeploy.exports.jobs`` turns a scheduled job into a crontab line, a
Kubernetes CronJob or an Airflow DAG. Every generated file is built from escaped
values (see ``jobs``), and every model export records the version and manifest hash
it came from and refuses a version whose hashes do not verify.
"""

from __future__ import annotations

import os
from pathlib import Path

from nbdeploy.exceptions import NbdeployError

#: format -> module of ``nbdeploy.exports`` with a ``write(ref, path) -> Path``
_MODEL_FORMATS: dict[str, str] = {"onnx": "to_onnx", "docker": "docker", "kserve": "kserve"}
#: job export target -> function of ``nbdeploy.exports.jobs``; kubernetes is the old name
JOB_TARGETS = {"airflow": "airflow", "cron": "cron", "cronjob": "cronjob", "kubernetes": "cronjob"}


def export(ref: str, format: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Write model ``ref`` as ``format`` (``"onnx"``, ``"docker"``, ``"kserve"``); the path back."""
    import importlib

    module = _MODEL_FORMATS.get(format)
    if module is None:
        known = ", ".join(sorted(_MODEL_FORMATS)) or "none"
        raise NbdeployError(f"cannot export to {format!r}; formats: {known}")
    writer = importlib.import_module(f"nbdeploy.exports.{module}")
    return Path(writer.write(ref, None if path is None else Path(path)))


def export_job(target: str, name: str, *, image: str = "nbdeploy:latest") -> str:
    """The text of job ``name`` as ``target`` (``airflow``, ``cron``, ``cronjob``)."""
    from nbdeploy.exports import jobs

    function = JOB_TARGETS.get(target)
    if function is None:
        raise NbdeployError(f"cannot export a job to {target!r}; targets: airflow, cron, cronjob")
    if function == "cronjob":
        return jobs.cronjob(name, image=image)
    text: str = getattr(jobs, function)(name)
    return text
