"""The ``edgeward`` command: each subcommand lives with the module it runs.

``serve`` runs a gateway; ``dev`` runs a local stack (see edgeward.devtools.dev); ``stub-backend`` the
stub backend; ``doctor`` says which native modules are active; ``keygen``, ``pubkey``, ``call``
and ``subscribe`` are client tools (edgeward.client.cli).
A bad setting exits with status 2 and one line per bad value; a listener that cannot bind (say,
its port is in use) exits with status 4 and one line naming the listener and its address.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edgeward import __version__
from edgeward.client import cli as client_cli
from edgeward.config import ConfigError, add_arguments, load
from edgeward.devtools import dev, doctor
from edgeward.gateway.server import run_gateway
from edgeward.gateway.settings import GatewaySettings
from edgeward.runtime import EXIT_CANNOT_LISTEN, ListenError, configure_logging, run
from edgeward.stub import cli as stub_cli

__all__ = ("build_parser", "main")


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load(GatewaySettings, overrides=vars(args))
    except ConfigError as exc:
        print(f"edgeward serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        run(run_gateway(settings))
    except ListenError as exc:
        print(f"edgeward serve: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeward", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"edgeward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the gateway (settings from EDGEWARD_* variables or flags)")
    add_arguments(serve, GatewaySettings)
    serve.set_defaults(func=_serve)
    dev.add_parser(sub)
    doctor.add_parser(sub)
    stub_cli.add_parser(sub)
    client_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))
