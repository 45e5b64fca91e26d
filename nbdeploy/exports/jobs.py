"""Scheduled jobs as files other schedulers run: a crontab line, a Kubernetes CronJob, an
Airflow DAG.

Every value that comes from the job (its name, notebook path, working directory,
parameters, kernel) is user-controlled and lands in a file that another program
parses and, for the DAG, executes. So nothing is pasted into a template as text:

- the DAG is Python in which every value is a literal made by :func:`py_literal`
  (``repr`` of str/int/bool/None, finite floats, lists and dicts of those), never a
  comment or a docstring holding raw text, so a newline or quote in a path stays
  inside its string;
- the crontab line quotes each argument for ``sh`` and escapes ``%`` (cron turns a
  bare ``%`` into a newline); a value with a newline cannot be written on one crontab
  line and is refused;
- the CronJob is a mapping dumped by PyYAML.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy.exceptions import JobError
from nbdeploy.models import ScheduledJob

#: What a Kubernetes object or Airflow dag_id may be made of after cleaning a job name.
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_DAG_ID = re.compile(r"[^A-Za-z0-9_.-]+")


def py_literal(value: Any) -> str:
    """Python source for ``value`` that evaluates to it and can hold nothing else."""
    if value is None or isinstance(value, bool | int | str):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{py_literal(str(k))}: {py_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise JobError(f"a job parameter of type {type(value).__name__} cannot be exported")


def _job(name: str) -> ScheduledJob:
    from nbdeploy import scheduler

    return scheduler.get(name)


def _schedule_of(job: ScheduledJob) -> str:
    from nbdeploy.cron import every_as_cron

    return job.cron or every_as_cron(job.every_s or 0)


def _job_args(job: ScheduledJob, program: str) -> list[str]:
    """``nbdeploy job`` with the job's options; ``--`` keeps the notebook a notebook.

    Parameters go as one JSON object: types survive, and a value starting with ``-``
    is not taken for an option.
    """
    args = [program, "job"]
    if job.parameters:
        args += ["--parameters-json", json.dumps(job.parameters, separators=(",", ":"))]
    if job.timeout:
        args += ["--timeout", f"{job.timeout:g}"]
    if job.kernel:
        args += ["--kernel", job.kernel]
    return [*args, "--", job.notebook]


def cron(name: str) -> str:
    """A crontab line that runs the job with ``nbdeploy job`` from its directory."""
    job = _job(name)
    home = config.settings().home
    exe = str(Path(sys.executable).with_name("nbdeploy"))
    log = str(home / "jobs" / f"{job.name}.cron.log")
    words = [*_job_args(job, exe), job.cwd, str(home), log]
    if any("\n" in w or "\r" in w for w in words):
        raise JobError(
            f"job {job.name!r} has a line break in its notebook, directory or parameters; "
            "a crontab entry is one line, so it cannot be exported to cron"
        )
    command = " ".join(shlex.quote(a) for a in _job_args(job, exe))
    line = (
        f"cd {shlex.quote(job.cwd)} && NBDEPLOY_HOME={shlex.quote(str(home))} "
        f"{command} >> {shlex.quote(log)} 2>&1"
    )
    return f"{_schedule_of(job)} {line.replace('%', chr(92) + '%')}"


def cronjob(name: str, *, image: str = "nbdeploy:latest") -> str:
    """A Kubernetes ``batch/v1`` CronJob running the job with ``nbdeploy job`` in ``image``."""
    import yaml

    job = _job(name)
    args = _job_args(job, "nbdeploy")
    if job.kernel:  # the image has its own kernels; a local kernel name means nothing there
        i = args.index("--kernel")
        del args[i : i + 2]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "job",
                "image": image,
                "command": args,
                "env": [
                    {"name": "NBDEPLOY_HOME", "value": "/data/nbdeploy"},
                    # point this at the shared registry when a team outgrows one machine
                    {"name": "MLFLOW_TRACKING_URI", "value": ""},
                ],
            }
        ],
    }
    if job.timeout:
        pod["activeDeadlineSeconds"] = int(job.timeout) + 60
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": k8s_name(f"nbdeploy-{job.name}", limit=52),
            "labels": {"app.kubernetes.io/managed-by": "nbdeploy"},
            "annotations": {"nbdeploy.io/job": job.name, "nbdeploy.io/notebook": job.notebook},
        },
        "spec": {
            "schedule": _schedule_of(job),
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": pod}}},
        },
    }
    return yaml.safe_dump(manifest, sort_keys=False)


def _strings(value: Any) -> list[str]:
    """Every string inside a parameter value (keys too)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def k8s_name(text: str, *, limit: int = 63) -> str:
    """A DNS-1123 label made from ``text`` (lower case, ``-``, at most ``limit`` long)."""
    label = _DNS_LABEL.sub("-", text.lower()).strip("-")[:limit].strip("-")
    return label or "nbdeploy"


_DAG = """\
{docstring}

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.papermill.operators.papermill import PapermillOperator

# the job kernel must see the same registry and audit log as the notebook that scheduled it,
# and papermill must find the kernelspec that runs the Python nbdeploy is installed in
os.environ.setdefault("NBDEPLOY_HOME", {home})
os.environ.setdefault("JUPYTER_PATH", {home})

with DAG(
    dag_id={dag_id},
    schedule={schedule},
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["nbdeploy"],
    doc_md={doc},
) as dag:
    PapermillOperator(
        task_id="run_notebook",
        input_nb={notebook},
        output_nb={output},
        parameters={parameters},
        kernel_name={kernel},
        execution_timeout={timeout},
    )
"""


def project_kernel() -> str:
    """A kernelspec in ``NBDEPLOY_HOME/kernels`` running this Python (absolute path).

    Airflow's papermill runs in Airflow's own environment, where ``python3`` is a
    Python without nbdeploy; the DAG points ``JUPYTER_PATH`` at the home so that this
    kernel is found there. Named like the runner's own fallback kernel.
    """
    import hashlib

    exe = os.path.abspath(sys.executable)
    name = "nbdeploy-" + hashlib.sha256(exe.encode()).hexdigest()[:10]
    folder = config.settings().home / "kernels" / name
    spec = {
        "argv": [exe, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({exe})",
        "language": "python",
    }
    text = json.dumps(spec, indent=1)
    if not (folder / "kernel.json").is_file() or (folder / "kernel.json").read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "kernel.json").write_text(text)
    return name


def airflow(name: str) -> str:
    """An Airflow DAG file running the job's notebook with ``PapermillOperator``.

    PapermillOperator runs the notebook in the Airflow worker's directory, not the one
    it was scheduled from (recorded in the DAG's ``doc_md``): relative paths in its
    parameters resolve there.
    """
    from nbdeploy import runner

    job = _job(name)
    notebook = str(runner.resolve_notebook(job.notebook, Path(job.cwd)))
    home = str(config.settings().home)
    (config.settings().home / "jobs" / "runs").mkdir(parents=True, exist_ok=True)  # papermill
    output = f"{home}/jobs/runs/{job.name}-{{{{ ts_nodash }}}}.ipynb"
    schedule = (
        py_literal(job.cron) if job.cron else f"timedelta(seconds={float(job.every_s or 0)!r})"
    )
    timeout = f"timedelta(seconds={float(job.timeout)!r})" if job.timeout else "None"
    dag_id = "nbdeploy_" + _DAG_ID.sub("_", job.name)
    # Airflow renders these fields with Jinja: text that looks like a template would run
    templated = [notebook, home, *_strings(job.parameters)]
    if any(marker in text for text in templated for marker in ("{{", "{%", "{#")):
        raise JobError(
            f"job {job.name!r} has '{{{{', '{{%' or '{{#' in its notebook path, home or "
            "parameters, which Airflow would render as a Jinja template; rename it to export"
        )
    return _DAG.format(
        docstring=py_literal(f"Airflow DAG generated by nbdeploy from the scheduled job {name}."),
        home=py_literal(home),
        dag_id=py_literal(dag_id[:250]),
        schedule=schedule,
        doc=py_literal(
            f"nbdeploy job `{job.name}`, scheduled from `{job.cwd}` "
            "(relative paths in its parameters meant that directory)"
        ),
        notebook=py_literal(notebook),
        output=py_literal(output),
        parameters=py_literal(job.parameters),
        kernel=py_literal(job.kernel or project_kernel()),
        timeout=timeout,
    )
