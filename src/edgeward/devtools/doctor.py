"""``edgeward doctor``: what this installation will run, before it runs in front of traffic.

Prints the Python and library versions, and for each hot-path concern whether its native
(Cython) twin or its pure-Python twin is active, with the import error when a native module fell
back. Exit status 1 when a native module is missing although extensions were not disabled
(EDGEWARD_NO_EXTENSIONS), so a deployment check can refuse a silently slow build.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from importlib import metadata

from edgeward import __version__
from edgeward.native import loader

__all__ = ("add_parser",)

_LIBRARIES = ("grpcio", "protobuf", "uvloop", "redis", "hiredis", "aiohttp", "httptools", "pynacl", "orjson")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("doctor", help="show which native modules are active and library versions")
    parser.set_defaults(func=_doctor)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _doctor(_args: argparse.Namespace) -> int:
    active = loader.load_all()
    print(f"edgeward {__version__} on Python {platform.python_version()} ({sys.executable})")
    print(f"implementation: {loader.implementation()}")
    if loader.extensions_disabled():
        print("  EDGEWARD_NO_EXTENSIONS is set: the pure-Python twins were chosen")
    for concern, kind in active.items():
        if kind == "c":
            module = importlib.import_module(f"edgeward.native._{concern}_c")
            print(f"  {concern:<12} native  {module.__file__}")
        else:
            reason = loader.FALLBACKS.get(concern, "extensions disabled")
            print(f"  {concern:<12} pure    ({reason})")
    print("libraries:")
    for dist in _LIBRARIES:
        print(f"  {dist:<10} {_version(dist)}")
    return 1 if loader.FALLBACKS else 0
