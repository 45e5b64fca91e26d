"""Common mistakes give one line that says what to do, in the magic and in Python.

Each mistake is made twice in a real InteractiveShell: as a ``%deploy`` line (an
IPython ``UsageError`` whose hint is a magic) and as a Python call (an nbdeploy
error that IPython prints as one line, whose hint is a Python call).
"""

from __future__ import annotations

import re

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbdeploy.exceptions import NbdeployError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def shell(home, churn_data, churn_models):
    from nbdeploy.datasets import churn_pipeline

    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance(history_length=0, history_load_length=0)
    sh.run_line_magic("load_ext", "nbdeploy")
    sh.run_cell("import nbdeploy as nd")
    X, y, X_test, y_test = churn_data
    sh.user_ns.update(clf=churn_models[0], unfit=churn_pipeline(), X=X, y=y, Xt=X_test, yt=y_test)
    yield sh
    InteractiveShell.clear_instance()


@pytest.fixture
def registered(shell):
    assert shell.run_cell("%deploy register clf --name churn --data X y").error_in_exec is None
    return shell


@pytest.fixture
def served(registered):
    sh = registered
    for line in ("%deploy test churn/1 --data Xt yt", "%deploy promote churn/1",
                 "dep = %deploy serve churn@champion"):  # fmt: skip
        assert sh.run_cell(line).error_in_exec is None, line
    return sh


def magic(sh, line: str) -> str:
    error = sh.run_cell(line).error_in_exec
    assert isinstance(error, UsageError), f"{line!r} gave {error!r}"
    message = str(error)
    assert "\n" not in message and "nd." not in message, message  # the magic's own words
    return message


def python(sh, capsys, code: str) -> str:
    """Run ``code``; the error it raises must print as one line (no frames)."""
    capsys.readouterr()
    error = sh.run_cell(code).error_in_exec
    assert isinstance(error, NbdeployError), f"{code!r} gave {error!r}"
    printed = [line for line in _ANSI.sub("", capsys.readouterr().out).splitlines() if line]
    assert printed == [f"{type(error).__name__}: {error}"], printed
    assert "%deploy" not in str(error)
    return str(error)


def test_registering_an_unfitted_model_says_to_fit_it(shell, capsys):
    assert "fit it first" in magic(shell, "%deploy register unfit --name churn --data X y")
    assert "fit it first" in python(shell, capsys, "nd.register(unfit, 'churn', X, y)")


def test_serving_an_alias_nobody_holds_says_test_then_promote(registered, capsys):
    told = magic(registered, "%deploy serve churn@champion")
    assert "%deploy test churn/1 --data X_test y_test, then %deploy promote churn/1" in told
    told = python(registered, capsys, "nd.serve('churn@champion')")
    assert "nd.test('churn/1', X_test, y_test), then nd.promote('churn/1', to='champion')" in told
    # the advice works: after the test, promotion is accepted
    assert registered.run_cell("%deploy test churn/1 --data Xt yt").error_in_exec is None
    assert registered.run_cell("%deploy promote churn/1").error_in_exec is None


def test_promoting_an_untested_version_names_the_test_in_the_face_used(registered, capsys):
    told = magic(registered, "%deploy promote churn/1")
    assert "run %deploy test on it first, or pass --force" in told
    told = python(registered, capsys, "nd.promote('churn/1')")
    assert "run nd.test on it first, or pass force=True" in told


def test_a_mistyped_name_gets_the_closest_one(served, capsys):
    for line in ("%deploy logs chrun", "%deploy monitor chrun", "%deploy compare chrun"):
        assert "no deployment or model is named 'chrun'; did you mean 'churn'?" in magic(
            served, line
        )
    assert "did you mean 'churn'?" in magic(served, "%deploy history chrun")
    assert "did you mean 'churn'?" in magic(served, "%deploy stop chrun")
    assert "did you mean 'churn'?" in python(served, capsys, "nd.logs('chrun')")
    assert "did you mean 'churn'?" in python(served, capsys, "nd.promote('chrun/1')")
    # a known name with nothing logged is an empty table, not an error
    assert served.run_cell("nd.logs('churn', role='shadow')").result.empty


def test_a_mistyped_subcommand_gets_did_you_mean(shell):
    assert magic(shell, "%deploy lgos churn") == (
        "%deploy has no subcommand 'lgos'; did you mean %deploy logs?"
    )
    assert "see %deploy --help" in magic(shell, "%deploy xyzzy")


def test_a_wrong_dtype_is_told_in_pandas_terms(served, capsys):
    code = "dep.predict(Xt.head().assign(tenure_months='x'))"
    told = python(served, capsys, code)
    assert told.startswith("column 'tenure_months' is str in your data")
    assert "trained on int64" in told and "long" not in told
    served.user_ns["bad"] = served.user_ns["Xt"].head().assign(tenure_months="x")
    told = magic(served, "%deploy score churn@champion bad")
    assert "is str in your data but the model was trained on int64" in told


def test_drift_with_mismatched_columns_is_one_line(registered, capsys):
    code = "nd.drift('churn/1', Xt.rename(columns={'tenure_months': 'tenure'}))"
    told = python(registered, capsys, code)
    assert "lacks the reference's column 'tenure_months'; it has 'tenure' instead" in told
    told = python(registered, capsys, "nd.drift(X, Xt.drop(columns='contract'))")
    assert "lacks the reference's column 'contract'" in told


def test_stop_confirms_in_a_sentence(served):
    stopped = served.run_cell("%deploy stop churn").result
    assert stopped == ["churn"] and repr(stopped) == "stopped deployment churn"
    assert "stopped deployment churn" in stopped._repr_html_()


def test_verbose_mode_still_shows_every_frame(registered, capsys):
    registered.run_line_magic("xmode", "verbose")
    registered.run_cell("nd.logs('chrun')")
    out = _ANSI.sub("", capsys.readouterr().out)
    assert "queries.py" in out and "did you mean 'churn'?" in out


def test_a_mistyped_variable_gets_the_closest_one(shell):
    told = magic(shell, "%deploy register unfti --name churn --data X y")
    assert told == "no variable named 'unfti' in the notebook; did you mean 'unfit'?"


def test_in_a_script_the_traceback_stops_at_the_api_boundary():
    import subprocess
    import sys

    code = (
        "import nbdeploy as nd, pandas as pd\n"
        "nd.drift(pd.DataFrame({'a': [1, 2, 3]}), pd.DataFrame({'b': [1, 2]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    frames = [line for line in done.stderr.splitlines() if line.lstrip().startswith("File ")]
    assert len(frames) == 2 and "monitoring/data.py" in frames[1], done.stderr  # no engine
    assert "During handling" not in done.stderr and "driftstats" not in done.stderr
    assert done.stderr.rstrip().endswith("it has 'b', which the reference lacks")
