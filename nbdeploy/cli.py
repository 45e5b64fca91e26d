"""The ``nbdeploy`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys

from nbdeploy.exceptions import NbdeployError


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
    serve.add_argument("ref", help="name@alias, name/version or models:/...")
    serve.add_argument("--name", help="deployment name (default: the model's name)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    serve.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' "
        "(or set NBDEPLOY_TOKEN, which keeps it out of ps)",
    )
    serve.add_argument(
        "--trust-unverified",
        action="store_true",
        help="load a version that was not registered through nbdeploy",
    )
    sub.add_parser("list", help="list deployments")
    stop = sub.add_parser("stop", help="stop a deployment")
    stop.add_argument("name", nargs="?")
    stop.add_argument("--all", action="store_true")
    demo = sub.add_parser("demo", help="run the quickstart end to end, headless")
    demo.add_argument("--requests", type=int, default=500, help="requests to send")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            from nbdeploy.serving.process import run

            run(
                args.ref,
                name=args.name,
                host=args.host,
                port=args.port,
                token=args.token,
                trust_unverified=args.trust_unverified,
            )
        elif args.command == "list":
            from nbdeploy.serving.process import deployments

            print(deployments().to_string(index=False))
        elif args.command == "stop":
            from nbdeploy.serving.process import stop

            if not args.all and not args.name:
                raise NbdeployError("name a deployment or pass --all")
            print("stopped:", ", ".join(stop(args.name, all=args.all)) or "nothing")
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
