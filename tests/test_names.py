"""Names carry no code: every name is checked where it enters, through every face.

The lab REST face is tested in ``test_server_ext.py`` (it needs a Jupyter server), the
quoting of what the lab panel inserts in ``labextension/src/__tests__/format.spec.ts``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import nbdeploy as nd
from nbdeploy import names, registry
from nbdeploy.exceptions import InvalidNameError, NbdeployError, PromotionError

HOSTILE = [
    '{__import__("os").system("id")}',
    "$HOME",
    "churn\nimport os",
    "../x",
    "x" * 200,
    "modèle",
    "",
    "-flag",
    "a b",
    "a/b",
]
#: names a magic's line hands over unchanged (IPython expands {expr}; newlines end it)
MAGIC_HOSTILE = ["$HOME", "../x", "x" * 200, "modèle", "a/b"]


def test_the_rule_accepts_plain_names_and_says_which_rule_it_applies():
    for good in ("churn", "Churn-2", "a", "v1.2_rc-3", "9lives", "x" * 128):
        assert names.check(good, "model") == good
    for bad in [*HOSTILE, "x" * 129, "churn\n", None, 3]:
        with pytest.raises(InvalidNameError) as caught:
            names.check(bad, "deployment")
        message = str(caught.value)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, NbdeployError)
        assert "\n" not in message and "not a valid deployment name" in message
        assert names.RULE in message and len(message) < 260


def test_the_api_refuses_hostile_names_before_writing_anything(
    champion, churn_data, churn_models, tmp_path
):
    X, y, _, _ = churn_data
    notebook = tmp_path / "job.ipynb"
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("n = 1", metadata={"tags": ["parameters"]})])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    nbformat.write(nb, notebook)
    for name in HOSTILE:
        with pytest.raises(InvalidNameError):
            nd.register(churn_models[0], name, X, y)
        with pytest.raises(InvalidNameError):
            nd.register(churn_models[0], "other", X, y, alias=name)
        with pytest.raises(InvalidNameError):
            nd.serve("churn@champion", name=name)
        with pytest.raises(InvalidNameError):
            nd.promote("churn/1", to=name)
        with pytest.raises(InvalidNameError):
            nd.rollback("churn", alias=name)
        with pytest.raises(InvalidNameError):
            nd.schedule(notebook, every="1h", name=name)
        with pytest.raises(InvalidNameError):
            nd.stop(name)
        with pytest.raises(NbdeployError):  # not a ref at all, or a ref naming no valid name
            registry.resolve(f"{name}/1")
    with pytest.raises(PromotionError, match="not a usable alias"):
        nd.promote("churn/1", to="cham.pion")  # the rule allows '.', MLflow's aliases do not
    # nothing was written: one model, one alias move, no deployment, no job
    assert registry.model_names() == ["churn"]
    assert len(nd.history("churn")) == 1
    assert nd.deployments().empty
    assert not list((champion_home() / "deployments").glob("*.json"))
    from nbdeploy.scheduler import scheduled

    assert scheduled().empty


def champion_home() -> Path:
    from nbdeploy import config

    return config.settings().home


@pytest.fixture
def shell(champion, churn_data, churn_models):
    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance(history_length=0, history_load_length=0)
    sh.run_line_magic("load_ext", "nbdeploy")
    X, y, _, _ = churn_data
    sh.user_ns.update(clf=churn_models[0], X=X, y=y)
    yield sh
    InteractiveShell.clear_instance()


@pytest.mark.parametrize("name", MAGIC_HOSTILE)
def test_magics_answer_a_hostile_name_with_one_line(shell, name):
    for line in (
        f"%deploy register clf --name {name} --data X y",
        f"%deploy serve churn@champion --name {name}",
        f"%deploy promote churn/1 --to {name}",
        f"%deploy stop {name}",
    ):
        error = shell.run_cell(line).error_in_exec
        assert type(error) is UsageError, line
        assert "not a valid" in str(error) and "\n" not in str(error)
    assert registry.model_names() == ["churn"] and nd.deployments().empty


@pytest.mark.parametrize("name", ["../x", "x" * 200, "modèle", "a\nb", "$HOME"])
def test_the_cli_answers_a_hostile_name_with_one_line(champion, name):
    for args in (["serve", "churn@champion", "--name", name], ["stop", name]):
        done = subprocess.run(
            [sys.executable, "-m", "nbdeploy.cli", *args],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=120,
        )
        assert done.returncode == 1, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("nbdeploy: error: ") and "not a valid deployment name" in line
    assert nd.deployments().empty


def test_names_read_back_from_deployment_files_are_checked(champion):
    """A state file someone else wrote (a hostile file name, or a hostile name inside
    a well-named file) is neither listed nor acted upon by ``stop --all``."""
    folder = champion_home() / "deployments"
    folder.mkdir(parents=True, exist_ok=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = {"ref": "churn@champion", "url": "http://127.0.0.1:9", "pid": bystander.pid}
        hostile = '{__import__("os").system("id")}'
        (folder / f"{hostile}.json").write_text(json.dumps({**state, "name": hostile}))
        (folder / "good.json").write_text(json.dumps({**state, "name": hostile}))
        assert nd.deployments().empty
        assert nd.stop(all=True) == []
        with pytest.raises(NbdeployError, match="no deployment named 'good'"):
            nd.stop("good")
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()
