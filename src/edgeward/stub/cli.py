"""``edgeward stub-backend``: the stub backend as a process (what ``edgeward dev`` starts)."""

from __future__ import annotations

import argparse
import importlib
import sys

from edgeward.config import ConfigError, add_arguments, load
from edgeward.runtime import EXIT_CANNOT_LISTEN, ListenError, configure_logging, run
from edgeward.stub.settings import StubSettings

__all__ = ("add_parser",)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "stub-backend", help="run the stub backend: e-mail login, sessions, push, user API"
    )
    add_arguments(parser, StubSettings)
    parser.set_defaults(func=_stub_backend)


def _stub_backend(args: argparse.Namespace) -> int:
    try:
        settings = load(StubSettings, overrides=vars(args))
    except ConfigError as exc:
        print(f"edgeward stub-backend: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        service = importlib.import_module("edgeward.stub.service")  # only this command needs redis-py
        run(service.run_stub_backend(settings))
    except ListenError as exc:
        print(f"edgeward stub-backend: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    return 0
