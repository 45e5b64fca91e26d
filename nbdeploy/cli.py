"""The ``nbdeploy`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nbdeploy.exceptions import NbdeployError

#: ``nbdeploy export TARGET``: model formats take a ref, job targets a job name
MODEL_TARGETS = ("onnx", "docker", "kserve")
JOB_TARGETS = ("airflow", "cron", "cronjob", "kubernetes")


def add_parameter_option(parser: argparse.ArgumentParser) -> None:
    """``-p KEY VALUE`` (repeatable), as papermill's command line takes notebook parameters."""
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="a notebook parameter, typed as papermill types it",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbdeploy", description="Deploy and audit models from notebooks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve a model in the foreground",
        epilog="example: nbdeploy serve churn@champion --port 8080",
    )
    serve.add_argument(
        "ref", help="name@alias, name/version, models:/..., or an exported model folder"
    )
    serve.add_argument("--name", help="deployment name (default: the model's name)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    serve.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' "
        "(or set NBDEPLOY_TOKEN, which keeps it out of ps)",
    )
    serve.add_argument(
        "--shadow",
        action="append",
        default=[],
        metavar="REF",
        help="also score every request with REF, off the response path",
    )
    serve.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="REF=FRACTION",
        help="answer FRACTION of requests with REF (sticky per X-Routing-Key)",
    )
    serve.add_argument(
        "--threshold", type=float, help="below this top-class probability, answer with --fallback"
    )
    serve.add_argument("--fallback", help="a value, a model ref, or 'abstain' (default)")
    serve.add_argument(
        "--runtime",
        choices=["native", "onnx"],
        default="native",
        help="onnx: answer through onnxruntime on the model's ONNX conversion",
    )
    serve.add_argument(
        "--resolved",
        metavar="VERSION:SHA256",
        help="the version and manifest hash to verify (required with a model folder)",
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="serving processes behind the port (default 1)"
    )
    serve.add_argument("--worker", help=argparse.SUPPRESS)  # FD:FD:INDEX from the supervisor
    serve.add_argument(
        "--trust-unverified",
        action="store_true",
        help="load a version that was not registered through nbdeploy",
    )
    sub.add_parser("list", help="list deployments")
    stop = sub.add_parser("stop", help="stop a deployment")
    stop.add_argument("name", nargs="?")
    stop.add_argument("--all", action="store_true")
    job = sub.add_parser(
        "job",
        help="run a parameterized notebook (a bare name: a packaged one)",
        epilog="example: nbdeploy job retrain -p model_name churn -p data new.csv -p target churn",
    )
    job.add_argument("notebook")
    add_parameter_option(job)
    job.add_argument(
        "--parameters-json",
        metavar="JSON",
        help="all parameters as one JSON object, types kept (what exported jobs pass)",
    )
    job.add_argument("--timeout", type=float, help="seconds, for the whole job")
    job.add_argument("--kernel")
    job.add_argument("--output", help="executed notebook path")
    scheduler = sub.add_parser("scheduler", help="run the embedded job scheduler")
    scheduler.add_argument("--once", action="store_true", help="run what is due, then exit")
    scheduler.add_argument("--interval", type=float, default=5.0, help="seconds between checks")
    scheduler.add_argument("--trigger", metavar="JOB", help="run this scheduled job now, then exit")
    scheduler.add_argument(
        "--at", type=float, help="with --trigger: the moment to claim (runs once per moment)"
    )
    # with --trigger, for the scheduler's own run processes: the moment is claimed already
    # (--claimed), and the run was recorded under this id (--run-id) for the lab to show
    scheduler.add_argument("--claimed", action="store_true", help=argparse.SUPPRESS)
    scheduler.add_argument("--run-id", help=argparse.SUPPRESS)
    export = sub.add_parser(
        "export",
        help="a model as onnx/docker/kserve, or a scheduled job as airflow/cron/cronjob",
        epilog="examples: nbdeploy export docker churn@champion --output build/; "
        "nbdeploy export airflow retrain -o dags/retrain.py",
    )
    export.add_argument("target", choices=[*MODEL_TARGETS, *JOB_TARGETS])
    export.add_argument(
        "what", metavar="REF|JOB", help="a model ref, or the name given to nd.schedule"
    )
    export.add_argument("--image", default="nbdeploy:latest", help="image (cronjob)")
    export.add_argument("-o", "--output", help="write here instead of stdout / a default path")
    monitor = sub.add_parser(
        "monitor",
        help="monitoring report of a deployment (drift, quality, performance, alerts)",
        epilog="example: nbdeploy monitor churn --html report.html --window 24h",
    )
    monitor.add_argument("name")
    monitor.add_argument("--html", metavar="PATH", help="write a standalone HTML page")
    monitor.add_argument("--window", default="1h", help="15m, 1h, 24h, 7d or all (default 1h)")
    monitor.add_argument("--check", action="store_true", help="also evaluate the alert rules")
    monitor.add_argument("--by", help="a logged column to slice drift, quality, performance by")
    audit = sub.add_parser("audit", help="check the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check every record, feedback label and alert (exit 0 only when it holds)",
        epilog="example: NBDEPLOY_AUDIT_KEY_FILE=/run/secrets/audit nbdeploy audit verify",
    )
    verify.add_argument("--name", help="count only this model's or deployment's entries")
    migrate = audit_sub.add_parser(
        "migrate",
        help="copy this home's SQLite log into an empty PostgreSQL log, verified on both sides",
        epilog="example: nbdeploy audit migrate --to postgresql://nbdeploy@db:5432/audit",
    )
    migrate.add_argument("--to", required=True, metavar="URL", help="postgresql://... target")
    migrate.add_argument("--source", help="the SQLite file (default: NBDEPLOY_AUDIT_DB)")
    demo = sub.add_parser("demo", help="run the quickstart end to end, headless")
    demo.add_argument("--requests", type=int, default=500, help="requests to send")
    return parser


def parse_split(items: list[str]) -> dict[str, float]:
    """``["churn@challenger=0.1", ...]`` -> ``{"churn@challenger": 0.1, ...}``."""
    split = {}
    for item in items:
        ref, sep, fraction = item.rpartition("=")
        try:
            if not sep or not ref:
                raise ValueError(item)
            split[ref] = float(fraction)
        except ValueError:
            raise NbdeployError(
                f"--split takes REF=FRACTION, e.g. churn@challenger=0.1, not {item!r}"
            ) from None
    return split


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            from nbdeploy.serving.server import run

            run(
                args.ref,
                name=args.name,
                host=args.host,
                port=args.port,
                token=args.token,
                shadow=args.shadow,
                split=parse_split(args.split),
                threshold=args.threshold,
                fallback=args.fallback,
                trust_unverified=args.trust_unverified,
                resolved=args.resolved,
                runtime=args.runtime,
                workers=args.workers,
                worker=args.worker,
                argv=list(sys.argv[1:] if argv is None else argv),
            )
        elif args.command == "list":
            from nbdeploy.serving.process import deployments

            print(deployments().to_string(index=False))
        elif args.command == "stop":
            from nbdeploy.serving.process import stop

            if not args.all and not args.name:
                raise NbdeployError("name a deployment or pass --all")
            print("stopped:", ", ".join(stop(args.name, all=args.all)) or "nothing")
        elif args.command == "job":
            from nbdeploy.runner import run_job, typed

            params = json.loads(args.parameters_json) if args.parameters_json else {}
            if not isinstance(params, dict):
                raise NbdeployError("--parameters-json takes a JSON object")
            params.update({k: typed(v) for k, v in args.parameter})
            done = run_job(
                args.notebook, params, output=args.output, timeout=args.timeout, kernel=args.kernel
            )
            print(f"{done.status}: {done.output_path} (run {done.run_id})")
            print(done.error or json.dumps(done.results, default=str))
            return 0 if done.succeeded else 1
        elif args.command == "scheduler":
            from nbdeploy.scheduler import loop, trigger

            if args.trigger:
                ran = trigger(args.trigger, at=args.at, run_id=args.run_id, claimed=args.claimed)
                print(f"{args.trigger}: {ran.status if ran else 'already claimed'}")
            else:
                loop(interval=args.interval, once=args.once)
        elif args.command == "export":
            from nbdeploy.exports import export, export_job

            if args.target in MODEL_TARGETS:
                written = export(args.what, args.target, args.output)
                print(f"wrote {written}")
                parity = written.with_name(written.name + ".parity.json")
                if parity.is_file():
                    print(f"parity with the native model: {parity.read_text()}")
                return 0
            text = export_job(args.target, args.what, image=args.image)
            if args.output:
                Path(args.output).write_text(text if text.endswith("\n") else text + "\n")
            else:
                print(text)
        elif args.command == "monitor":
            from nbdeploy.monitoring import check_alerts, report

            rep = report(args.name, args.window, by=args.by)
            if args.check:
                checked = check_alerts(args.name, window=args.window, report=rep)
                print(checked.to_string(index=False))
            if args.html:
                Path(args.html).write_text(rep.to_html(), encoding="utf-8")
                print(f"wrote {args.html}")
            elif not args.check:
                print(rep)
        elif args.command == "audit" and args.audit_command == "migrate":
            from nbdeploy.auditlog.migrate import migrate as copy_log

            copied = copy_log(args.to, args.source)
            print("copied and verified:", ", ".join(f"{n} {t}" for t, n in copied.items()))
        elif args.command == "audit":
            from nbdeploy.auditlog import verify

            checked = verify(args.name)
            print(checked.summary(), file=sys.stdout if checked.ok else sys.stderr)
            return 0 if checked.ok else 1
        elif args.command == "demo":
            from nbdeploy.demo import main as demo

            demo(requests=args.requests)
    except NbdeployError as exc:
        print(f"nbdeploy: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
