"""%deploy in a real InteractiveShell: one API call per subcommand, one-line errors."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import nbdeploy as nd


@pytest.fixture
def shell(home, churn_data, churn_models):
    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance(history_length=0, history_load_length=0)
    sh.run_line_magic("load_ext", "nbdeploy")
    X, y, X_test, y_test = churn_data
    sh.user_ns.update(clf=churn_models[0], weak=churn_models[1], X=X, y=y, Xt=X_test, yt=y_test)
    yield sh
    InteractiveShell.clear_instance()


def run(sh, line):
    result = sh.run_cell(line)
    return result


def test_the_spine_through_magics(shell):
    r = run(shell, "%deploy register clf --name churn --data X y")
    assert isinstance(r.result, nd.ModelVersion) and r.result.version == 1
    assert run(shell, "%deploy test churn/1 --data Xt yt --min-score 0.8").result.passed
    assert run(shell, "%deploy promote churn/1 --to champion").result.aliases == ("champion",)
    dep = run(shell, "dep = %deploy serve churn@champion\ndep").result
    assert isinstance(dep, nd.Deployment)
    predictions = run(shell, "dep.predict(Xt.head(3))").result
    assert len(predictions) == 3
    logs = run(shell, "%deploy logs churn --limit 2").result
    assert len(logs) == 2 and set(logs["prediction_id"]) <= set(predictions["prediction_id"])
    assert len(run(shell, "%deploy list").result) == 1
    assert len(run(shell, "%deploy history churn").result) == 1
    scored = run(shell, "%deploy score churn@champion Xt").result
    assert len(scored) == len(shell.user_ns["Xt"])
    shell.user_ns["ids"] = list(predictions["prediction_id"])
    shell.user_ns["labels"] = ["no", "yes", "no"]
    assert run(shell, "%deploy feedback churn ids labels").result == 3
    stopped = run(shell, "%deploy stop churn").result
    assert stopped == ["churn"] and repr(stopped) == "stopped deployment churn"


@pytest.mark.parametrize(
    "line, message",
    [
        ("%deploy promote churn/1", "no registered model"),
        ("%deploy register nothing --name churn --data X y", "no variable named 'nothing'"),
        ("%deploy bogus", "no subcommand 'bogus'"),
        ("%deploy test churn/1 --data X", "expected 2 arguments"),
        ("%deploy serve churn/1 --split churn@b", "REF=FRACTION"),
        ("%deploy stop", "name a deployment"),
    ],
)
def test_user_errors_are_one_line_usage_errors(shell, line, message):
    result = run(shell, line)
    assert isinstance(result.error_in_exec, UsageError)
    assert message in str(result.error_in_exec)


def test_help_prints_usage_with_examples(shell, capsys):
    assert run(shell, "%deploy --help").error_in_exec is None
    out = capsys.readouterr().out
    assert "register" in out and "%deploy serve churn@champion" in out
    assert run(shell, "%deploy test --help").error_in_exec is None
    assert "--min-score" in capsys.readouterr().out


def test_serve_magic_types_a_numeric_fallback(shell):
    run(shell, "%deploy register clf --name churn --data X y")
    dep = run(shell, "%deploy serve churn/1 --threshold 0.95 --fallback 0").result
    answer = dep.predict(shell.user_ns["Xt"].head(50))
    assert 0 in set(answer["prediction"]) and "0" not in set(answer["prediction"])
    assert answer.loc[answer["fallback"], "prediction"].eq(0).all()


def test_every_option_of_every_subcommand_is_described_with_examples(shell, capsys):
    import argparse

    from nbdeploy.magics import _parser

    subparsers = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert len(subparsers.choices) >= 18
    for name, sub in subparsers.choices.items():
        undocumented = [
            a.dest
            for a in sub._actions
            if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()
        ]
        assert not undocumented, f"%deploy {name}: no description for {undocumented}"
        assert run(shell, f"%deploy {name} --help").error_in_exec is None
        shown = capsys.readouterr().out
        assert "examples:" in shown and f"%deploy {name}" in shown.split("examples:")[1], name
        for action in sub._actions:  # each description reaches the printed help
            if action.help and not isinstance(action, argparse._HelpAction):
                assert " ".join(action.help.split()[:3]) in " ".join(shown.split()), (name, action)
