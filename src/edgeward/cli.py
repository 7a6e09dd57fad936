"""The ``edgeward`` command: each subcommand lives with the module it runs.

``serve`` runs a gateway, or N of them under a supervisor (docs/workers.md); ``dev`` runs a local
stack (see edgeward.devtools.dev); ``stub-backend`` the stub backend; ``doctor`` says which native
modules are active; ``keygen``, ``pubkey``, ``call`` and ``subscribe`` are client tools
(edgeward.client.cli).
A bad setting exits with status 2 and one line per bad value (so do workers that cannot be
shared: edgeward.workers.plan); a listener that cannot bind (say,
its port is in use) exits with status 4 and one line naming the listener and its address.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from edgeward import __version__
from edgeward.client import cli as client_cli
from edgeward.config import ConfigError, add_arguments, load
from edgeward.devtools import dev, doctor, healthcheck
from edgeward.gateway.server import run_gateway
from edgeward.gateway.settings import GatewaySettings
from edgeward.runtime import EXIT_CANNOT_LISTEN, ListenError, configure_logging, run
from edgeward.stub import cli as stub_cli
from edgeward.workers import plan
from edgeward.workers.supervisor import Supervisor
from edgeward.workers.worker import run_worker

__all__ = ("build_parser", "main")


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load(GatewaySettings, overrides=vars(args))
    except ConfigError as exc:
        print(f"edgeward serve: {exc}", file=sys.stderr)
        return 2
    if args.worker_pipes is None:
        try:
            count = plan.worker_count(settings)
        except plan.Refused as exc:
            print(f"edgeward serve: {exc}", file=sys.stderr)
            return 2
    # REPORT,LIFELINE,INDEX: the worker's two pipes and its slot (edgeward.workers.supervisor).
    pipes = [int(n) for n in args.worker_pipes.split(",")] if args.worker_pipes is not None else None
    configure_logging(settings.log_level, settings.log_format, pipes[2] if pipes is not None else None)
    try:
        if pipes is not None:
            report_fd, lifeline_fd = pipes[0], pipes[1]
            run(run_worker(plan.for_worker(settings), report_fd, lifeline_fd))
        elif count > 1:
            return run(Supervisor(settings, count, _setting_flags(args)).run())
        else:
            run(run_gateway(settings))
    except ListenError as exc:
        print(f"edgeward serve: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    return 0


def _setting_flags(args: argparse.Namespace) -> list[str]:
    """The setting flags given on this command line, for the workers (which read the same environment)."""
    flags = []
    for f in dataclasses.fields(GatewaySettings):
        value = getattr(args, f.name)
        if value is not None and f.name != "workers":
            flags += ["--" + f.name.replace("_", "-"), value]
    return flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeward", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"edgeward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the gateway (settings from EDGEWARD_* variables or flags)")
    add_arguments(serve, GatewaySettings)
    # Internal: set by the supervisor on the workers it starts (edgeward.workers.worker).
    serve.add_argument("--worker-pipes", default=None, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)
    dev.add_parser(sub)
    doctor.add_parser(sub)
    healthcheck.add_parser(sub)
    stub_cli.add_parser(sub)
    client_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))
