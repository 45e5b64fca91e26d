"""``%deploy``: one line magic whose subcommands each call one public function.

Parsing is argparse; the object returned is the API's own, whose ``_repr_html_``
is the rich summary. User mistakes become a one-line ``UsageError``.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

import nbdeploy as nd
from nbdeploy import hints
from nbdeploy.cli import add_parameter_option, parse_split
from nbdeploy.exceptions import NbdeployError

EXAMPLES = """\
examples:
  %deploy register clf --name churn --data X_train y_train
  %deploy test churn/1 --data X_test y_test --min-score 0.8
  %deploy promote churn/1 --to champion
  dep = %deploy serve churn@champion
  %deploy logs churn --limit 20
  %deploy rollback churn
  %deploy score churn@champion big_batch_df --output scored.parquet
  %deploy stop churn
  %deploy job retrain -p model_name churn -p data new.csv -p target churn
  %deploy audit 3f2a9c0d1e2b4a5f6c7d-0
  %deploy monitor churn --window 24h
"""


class _Help(Exception):
    """Raised after argparse printed help: stop without an error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip())
        raise _Help


def _parser() -> _Parser:
    parser = _Parser(
        prog="%deploy",
        description="Register, test, deploy and audit models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="SUBCOMMAND")

    def add(name: str, help: str, *examples: str) -> _Parser:
        p: _Parser = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return p

    p = add(
        "register",
        "log a fitted model to MLflow and register a new version",
        "%deploy register clf --name churn --data X_train y_train",
        "v2 = %deploy register clf2 --name churn --data X_train y_train --alias challenger",
    )
    p.add_argument("model", metavar="MODEL_VAR", help="the notebook variable holding the model")
    p.add_argument("--name", required=True, help="the registered model's name, e.g. churn")
    p.add_argument(
        "--data",
        nargs="+",
        metavar="VAR",
        help="X_VAR [Y_VAR]: training features (for the signature and the drift profile) "
        "and, optionally, the target",
    )
    p.add_argument("--alias", help="an alias to put on the new version at once")
    p.add_argument("--description", help="a sentence stored with the version")
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also store the model's ONNX conversion (parity-checked): servers started with "
        "the ONNX runtime then skip importing scikit-learn",
    )

    p = add(
        "test",
        "run the pre-deploy gate on a version: schema, score, latency, bad inputs",
        "%deploy test churn/1 --data X_test y_test --min-score 0.8",
        "%deploy test churn/2 --data X_test y_test --vs champion --max-latency-ms 5",
    )
    p.add_argument("ref", help="the version to test: churn/2, churn@challenger")
    p.add_argument(
        "--data",
        nargs=2,
        required=True,
        metavar=("X_VAR", "Y_VAR"),
        help="held-out features and labels (notebook variables)",
    )
    p.add_argument(
        "--metric",
        help="what to score: accuracy, f1, roc_auc, log_loss, r2, mae, rmse, ... "
        "(default: accuracy for classifiers, r2 for regressors)",
    )
    p.add_argument("--min-score", type=float, help="the lowest acceptable metric value")
    p.add_argument(
        "--vs", metavar="ALIAS", help="also fail when worse than the version holding this alias"
    )
    p.add_argument(
        "--max-latency-ms", type=float, help="the highest acceptable median single-row latency"
    )

    p = add(
        "promote",
        "move an alias onto a tested version (a running server follows it)",
        "%deploy promote churn/2",
        "%deploy promote churn/3 --to challenger",
    )
    p.add_argument("ref", help="the version to promote: churn/2")
    p.add_argument(
        "--to", default="champion", metavar="ALIAS", help="the alias to move (default: champion)"
    )
    p.add_argument("--force", action="store_true", help="promote even if its last test failed")

    p = add(
        "rollback",
        "move an alias back to its previous holder",
        "%deploy rollback churn",
        "%deploy rollback churn --alias challenger",
    )
    p.add_argument("name", help="the registered model's name")
    p.add_argument("--alias", default="champion", help="the alias to move back (default: champion)")

    p = add("history", "alias moves of a model: promotions and rollbacks", "%deploy history churn")
    p.add_argument("name", help="the registered model's name")

    p = add(
        "serve",
        "start a model server in the background",
        "dep = %deploy serve churn@champion",
        "dep = %deploy serve churn@champion --shadow churn@challenger --split churn/3=0.1",
        "dep = %deploy serve churn@champion --threshold 0.7 --fallback abstain",
    )
    p.add_argument("ref", help="what to serve; an alias (churn@champion) is followed live")
    p.add_argument("--name", help="the deployment's name (default: the model's name)")
    p.add_argument("--port", type=int, default=0, help="the port to bind (default: any free one)")
    p.add_argument("--token", help="require this bearer token on every request but /health")
    p.add_argument(
        "--shadow",
        nargs="+",
        default=[],
        metavar="REF",
        help="models that score every request too, without answering it",
    )
    p.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="REF=FRACTION",
        help="send this share of requests to another model (a canary); repeatable",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="top-class probability below which the fallback answers instead",
    )
    p.add_argument(
        "--fallback",
        help="what answers below the threshold: a value, 'abstain', or a model ref",
    )

    add("list", "list deployments with their version, URL and status", "%deploy list")

    p = add("stop", "stop a deployment", "%deploy stop churn", "%deploy stop --all")
    p.add_argument("name", nargs="?", help="the deployment to stop")
    p.add_argument("--all", action="store_true", help="stop every deployment of this home")

    p = add(
        "logs",
        "logged predictions of a deployment or model",
        "%deploy logs churn --limit 100",
        "%deploy logs churn --role shadow",
    )
    p.add_argument("name", help="a deployment or model name")
    p.add_argument("--limit", type=int, help="only the newest N predictions")
    p.add_argument(
        "--role", choices=["served", "shadow", "batch"], help="only predictions of this role"
    )

    p = add(
        "feedback",
        "record ground-truth labels for logged predictions",
        "%deploy feedback churn ids labels",
    )
    p.add_argument("name", help="the deployment or model the predictions came from")
    p.add_argument("ids", metavar="IDS_VAR", help="a variable holding prediction ids")
    p.add_argument("labels", metavar="LABELS_VAR", help="a variable holding their true labels")

    p = add(
        "monitor",
        "live panel: traffic, drift, data quality, performance, alerts",
        "%deploy monitor churn",
        "%deploy monitor churn --window 24h",
        "%deploy monitor churn --by region",
    )
    p.add_argument("name", help="a deployment or model name")
    p.add_argument("--window", default="1h", help="15m, 1h, 6h, 24h, 7d or all (default: 1h)")
    p.add_argument("--by", help="a logged column to slice drift, quality and performance by")

    p = add(
        "compare",
        "champion and challengers side by side, with a verdict",
        "%deploy compare churn",
    )
    p.add_argument("name", help="a deployment or model name")

    p = add(
        "retire",
        "take a challenger out of running deployments",
        "%deploy retire churn/7",
        "%deploy retire churn@challenger",
    )
    p.add_argument("ref", help="the shadow or canary model to remove")

    p = add(
        "score",
        "batch-score a DataFrame or a CSV/Parquet file",
        "scored = %deploy score churn@champion big_df",
        "%deploy score churn@champion data/new.parquet --output scored.parquet",
    )
    p.add_argument("ref", help="the model to score with: churn@champion")
    p.add_argument(
        "data", metavar="DATA_VAR_OR_PATH", help="a DataFrame variable, or a .csv/.parquet path"
    )
    p.add_argument("--output", help="write the result to this .csv/.parquet path instead")

    p = add(
        "audit",
        "lineage, explanation and integrity of one prediction",
        "%deploy audit 3f2a9c0d1e2b4a5f6c7d-0",
    )
    p.add_argument(
        "prediction_id", metavar="PREDICTION_ID", help="from the prediction_id column of logs"
    )

    p = add(
        "job",
        "run a parameterized notebook with papermill (a bare name: packaged)",
        "%deploy job retrain -p model_name churn -p data new.csv -p target churn",
        "%deploy job my_report.ipynb --timeout 600",
    )
    p.add_argument(
        "notebook", metavar="NOTEBOOK", help="a notebook path, or retrain / audit (packaged)"
    )
    add_parameter_option(p)
    p.add_argument("--timeout", type=float, metavar="S", help="seconds the whole job may take")
    p.add_argument("--kernel", metavar="K", help="the kernel to run it on (default: this Python)")
    p.add_argument("--output", metavar="PATH", help="where to write the executed notebook")

    add("jobs", "recorded job runs, newest first", "%deploy jobs")

    p = add(
        "schedule",
        "run a notebook on a schedule (with `nbdeploy scheduler`)",
        "%deploy schedule retrain --every 1d -p model_name churn",
        "%deploy schedule audit --cron '0 6 * * 1' --name weekly-audit",
    )
    p.add_argument(
        "notebook", metavar="NOTEBOOK", help="a notebook path, or retrain / audit (packaged)"
    )
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", metavar="INTERVAL", help="how often: 30m, 6h, 1d")
    when.add_argument("--cron", metavar="EXPR", help="a cron expression: '*/5 * * * *'")
    add_parameter_option(p)
    p.add_argument("--name", help="the schedule's name (default: the notebook's)")
    p.add_argument("--catchup", action="store_true", help="run times missed while no scheduler ran")
    p.add_argument("--paused", action="store_true", help="store it paused (resume to start)")
    return parser


def _check_subcommand(parser: _Parser, words: list[str]) -> None:
    """A mistyped subcommand gets a "did you mean", not the list of all eighteen."""
    if not words or words[0].startswith("-"):
        return
    choices = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if words[0] not in choices:
        guess = hints.closest(words[0], choices)
        tip = f"did you mean %deploy {guess}?" if guess else "see %deploy --help"
        raise UsageError(f"%deploy has no subcommand {words[0]!r}; {tip}")


@magics_class
class DeployMagics(Magics):
    """The ``%deploy`` line magic."""

    @line_magic
    def deploy(self, line: str) -> Any:
        """Register, test, promote, serve and audit models from the notebook.

        Run ``%deploy --help`` for the subcommands and ``%deploy SUBCOMMAND --help``
        for each one's options. Examples::

            %deploy register clf --name churn --data X_train y_train
            %deploy test churn/1 --data X_test y_test --min-score 0.8
            %deploy promote churn/1 --to champion
            dep = %deploy serve churn@champion
            %deploy logs churn
        """
        parser = _parser()
        try:
            words = shlex.split(line)
        except ValueError as exc:  # shlex: unbalanced quotes
            raise UsageError(f"%deploy: {exc}") from None
        _check_subcommand(parser, words)
        try:
            args = parser.parse_args(words)
        except _Help:
            return None
        if args.command is None:
            parser.print_help()
            return None
        try:
            return getattr(self, "_" + args.command)(args)
        except NbdeployError as exc:  # its hints name Python calls: say them as magics
            raise UsageError(hints.as_magic(str(exc))) from None

    def _var(self, name: str) -> Any:
        try:
            return self.shell.user_ns[name]  # type: ignore[union-attr]
        except KeyError:
            names = [n for n in self.shell.user_ns if not n.startswith("_")]  # type: ignore[union-attr]
            guess = hints.closest(name, names)
            tip = f"; did you mean {guess!r}?" if guess else ""
            raise UsageError(f"no variable named {name!r} in the notebook{tip}") from None

    def _register(self, a: argparse.Namespace) -> Any:
        data = [self._var(v) for v in a.data or []]
        if len(data) > 2:
            raise UsageError("--data takes X_VAR and optionally Y_VAR")
        X, y = [*data, None, None][:2]
        return nd.register(
            self._var(a.model),
            a.name,
            X,
            y,
            alias=a.alias,
            description=a.description,
            onnx=a.onnx,
        )

    def _test(self, a: argparse.Namespace) -> Any:
        X, y = (self._var(v) for v in a.data)
        return nd.test(
            a.ref,
            X,
            y,
            metric=a.metric,
            min_score=a.min_score,
            vs=a.vs,
            max_latency_ms=a.max_latency_ms,
        )

    def _promote(self, a: argparse.Namespace) -> Any:
        return nd.promote(a.ref, to=a.to, force=a.force)

    def _rollback(self, a: argparse.Namespace) -> Any:
        return nd.rollback(a.name, alias=a.alias)

    def _history(self, a: argparse.Namespace) -> Any:
        return nd.history(a.name)

    def _serve(self, a: argparse.Namespace) -> Any:
        from nbdeploy.runner import typed

        return nd.serve(
            a.ref,
            name=a.name,
            port=a.port,
            token=a.token,
            shadow=tuple(a.shadow),
            split=parse_split(a.split) or None,
            threshold=a.threshold,
            fallback=None if a.fallback is None else typed(a.fallback),  # "0" is the number 0
        )

    def _list(self, a: argparse.Namespace) -> Any:
        return nd.deployments()

    def _stop(self, a: argparse.Namespace) -> Any:
        if not a.all and not a.name:
            raise UsageError("name a deployment, or pass --all")
        return nd.stop(a.name, all=a.all)

    def _logs(self, a: argparse.Namespace) -> Any:
        from nbdeploy.logview import readable  # shown features first; the data stays exact

        return readable(nd.logs(a.name, limit=a.limit, role=a.role))

    def _feedback(self, a: argparse.Namespace) -> Any:
        return nd.feedback(a.name, self._var(a.ids), self._var(a.labels))

    def _monitor(self, a: argparse.Namespace) -> Any:
        return nd.monitor(a.name, a.window, by=a.by)

    def _compare(self, a: argparse.Namespace) -> Any:
        return nd.compare(a.name)

    def _retire(self, a: argparse.Namespace) -> Any:
        return nd.retire(a.ref)

    def _score(self, a: argparse.Namespace) -> Any:
        data = self.shell.user_ns.get(a.data, a.data)  # type: ignore[union-attr]
        return nd.score(a.ref, data, output=a.output)

    def _audit(self, a: argparse.Namespace) -> Any:
        return nd.audit(a.prediction_id)

    def _job(self, a: argparse.Namespace) -> Any:
        from nbdeploy.runner import typed

        params = {k: typed(v) for k, v in a.parameter}
        return nd.run_job(a.notebook, params, output=a.output, timeout=a.timeout, kernel=a.kernel)

    def _jobs(self, a: argparse.Namespace) -> Any:
        return nd.jobs()

    def _schedule(self, a: argparse.Namespace) -> Any:
        from nbdeploy.runner import typed

        params = {k: typed(v) for k, v in a.parameter}
        return nd.schedule(a.notebook, every=a.every, cron=a.cron, parameters=params, name=a.name,
                           catchup=a.catchup, paused=a.paused)  # fmt: skip
