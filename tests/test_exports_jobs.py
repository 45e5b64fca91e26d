"""Job exports: what cron, Kubernetes and Airflow are handed is exactly the job, even when
its directory, notebook and parameters are hostile."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import nbdeploy as nd
from nbdeploy.exceptions import JobError
from nbdeploy.exports import export_job, jobs
from nbdeploy.runner import TEMPLATES

#: A directory name that would be code if pasted into a comment, a docstring or a string.
HOSTILE_DIR = 'x\n__import__("os").system("touch PWNED")\n"""\'#'
#: Parameter values that shells, cron and Python would each like to interpret.
HOSTILE_VALUE = "a'b\"c %d $(touch PWNED) `touch PWNED`; \\ \"\"\" '''"
PARAMS = {"model_name": "churn", "data": HOSTILE_VALUE, "target": "-50%", "seed": 3}
#: The calls a DAG file may make; anything else is code that came from a value.
ALLOWED_CALLS = {"setdefault", "DAG", "datetime", "timedelta", "PapermillOperator", "float"}


def _schedule_hostile(tmp_path: Path, dirname: str, **extra) -> Path:
    folder = tmp_path / dirname
    folder.mkdir()
    os.chdir(folder)
    nd.schedule("retrain", cron="*/5 * * * *", parameters=PARAMS, **extra)
    return folder


def _literal_kwargs(call: ast.Call) -> dict:
    """The keyword arguments that are literals (``datetime(...)``/``timedelta(...)`` are not)."""
    return {
        k.arg: ast.literal_eval(k.value) for k in call.keywords if not isinstance(k.value, ast.Call)
    }


def test_airflow_dag_of_a_hostile_directory_parses_to_nothing_but_the_dag(home, tmp_path):
    folder = _schedule_hostile(tmp_path, HOSTILE_DIR, timeout=600)
    source = export_job("airflow", "retrain")
    tree = ast.parse(source)
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds == [
        "Expr",
        "Import",
        "ImportFrom",
        "ImportFrom",
        "ImportFrom",
        "Expr",
        "Expr",
        "With",
    ]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    names = {getattr(c.func, "id", getattr(c.func, "attr", None)) for c in calls}
    assert names <= ALLOWED_CALLS, names - ALLOWED_CALLS
    (dag,) = [c for c in calls if getattr(c.func, "id", "") == "DAG"]
    assert _literal_kwargs(dag)["schedule"] == "*/5 * * * *"
    (op,) = [c for c in calls if getattr(c.func, "id", "") == "PapermillOperator"]
    kwargs = _literal_kwargs(op)
    assert str(folder) in _literal_kwargs(dag)["doc_md"]
    assert kwargs["input_nb"] == str(TEMPLATES / "retrain.ipynb")
    assert kwargs["parameters"] == PARAMS
    assert not list(tmp_path.rglob("PWNED"))


def test_airflow_refuses_values_jinja_would_render(home, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    os.chdir(folder)
    nd.schedule("retrain", every="1h", parameters={"data": "{{ macros.os.system('id') }}"})
    with pytest.raises(JobError, match="Jinja"):
        export_job("airflow", "retrain")


def test_cron_line_quotes_every_word_and_escapes_percent(home, tmp_path):
    folder = _schedule_hostile(tmp_path, "d $(touch PWNED) % 'q\"", kernel="python3")
    line = export_job("cron", "retrain")
    assert "\n" not in line
    assert not re.search(r"(?<!\\)%", line), "a bare % is a newline to cron"
    fields = line.split(" ", 5)
    assert fields[:5] == ["*/5", "*", "*", "*", "*"]
    words = shlex.split(fields[5].replace("\\%", "%"))
    assert words[:3] == ["cd", str(folder), "&&"]
    job = words[words.index("job") : words.index(">>")]
    assert job[: job.index("--")] == [
        "job",
        "--parameters-json",
        json.dumps(PARAMS, separators=(",", ":")),
        "--kernel",
        "python3",
    ]
    assert job[job.index("--") + 1] == "retrain"
    # the shell agrees: run the command with `nbdeploy` replaced by an argv printer
    shell = fields[5].replace("\\%", "%")  # what cron hands to sh
    script = tmp_path / "fake-bin"
    script.mkdir()
    exe = Path(shlex.split(shell)[4])
    printer = script / "argv"
    printer.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done\n')
    printer.chmod(0o755)
    run = shell.replace(shlex.quote(str(exe)), str(printer), 1).split(" >> ")[0]
    out = subprocess.run(["sh", "-c", run], capture_output=True, check=True).stdout
    assert out.decode().split("\0")[:-1] == job
    assert not list(tmp_path.rglob("PWNED"))


def test_cron_refuses_a_line_break(home, tmp_path):
    _schedule_hostile(tmp_path, "two\nlines")
    with pytest.raises(JobError, match="one line"):
        export_job("cron", "retrain")


@pytest.mark.parametrize("target", ["cronjob", "kubernetes"])
def test_cronjob_is_a_valid_kubernetes_object_holding_the_exact_command(home, tmp_path, target):
    _schedule_hostile(tmp_path, HOSTILE_DIR, timeout=60)
    text = export_job(target, "retrain", image="registry.local/nb:1")
    manifest = yaml.safe_load(text)
    kubernetes_validate.validate(manifest, "1.30.0", strict=True)
    pod = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.local/nb:1"
    assert container["command"][-2:] == ["--", "retrain"]
    i = container["command"].index("--parameters-json")
    assert json.loads(container["command"][i + 1]) == PARAMS
    assert manifest["spec"]["schedule"] == "*/5 * * * *"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])


def test_job_command_takes_the_exported_parameters_exactly():
    from nbdeploy.cli import _parser

    args = _parser().parse_args(
        ["job", "--parameters-json", json.dumps(PARAMS), "--", "--odd.ipynb"]
    )
    assert json.loads(args.parameters_json) == PARAMS and args.notebook == "--odd.ipynb"


def test_cli_exports_write_files(home, tmp_path):
    from nbdeploy.cli import main

    _schedule_hostile(tmp_path, "plain")
    out = tmp_path / "dag.py"
    assert main(["export", "airflow", "retrain", "-o", str(out)]) == 0
    ast.parse(out.read_text())
    assert main(["export", "cron", "nope"]) == 1


def test_py_literal_round_trips_and_refuses_objects():
    value = {"a": [1, 2.5, None, True, "x\n'\""], "b": {"c": float("nan")}, "d": float("inf")}
    back = eval(jobs.py_literal(value), {"__builtins__": {"float": float}})
    assert (
        back["a"] == value["a"] and back["d"] == float("inf") and back["b"]["c"] != back["b"]["c"]
    )
    with pytest.raises(JobError):
        jobs.py_literal(object())
