"""The settings machinery: ``EDGEWARD_*`` environment variables and matching CLI flags.

Each service declares its own settings class (``edgeward.gateway.settings.GatewaySettings``,
``edgeward.stub.settings.StubSettings``) with this module's ``setting()`` fields and parsers.
Every setting is declared once, as a dataclass field whose metadata names its parser and help.
The environment is read first, then CLI flags override it; every bad value is reported, all at
once, in a ``ConfigError`` naming the variable, so an operator fixes a deployment in one pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = (
    "Address",
    "ConfigError",
    "add_arguments",
    "int_in",
    "load",
    "parse_bool",
    "parse_log_level",
    "parse_redis_url",
    "parse_text",
    "parse_url",
    "setting",
)

T = TypeVar("T")


class ConfigError(ValueError):
    """One or more settings are invalid; ``errors`` holds one line per bad value."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(errors))
        self.errors = errors


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """A TCP listen or connect address."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("expected HOST:PORT")
        host = host.strip("[]")
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError("port is not a number") from None
        if not 0 <= port <= 65535:
            raise ValueError("port must be 0..65535")
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def parse_redis_url(text: str) -> str:
    """The scheme only; the client checks the rest when it is created (edgeward.io.redis.connect)."""
    if urlsplit(text).scheme not in ("redis", "rediss", "unix", "redis+cluster"):
        raise ValueError("expected a redis://, rediss://, unix:// or redis+cluster:// URL")
    return text


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("not an integer") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def parse_text(text: str) -> str:
    return text


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def setting(default: T, parse: Callable[[str], Any], help: str) -> T:
    """Declare a settings field: its default, how to parse its text, and its help line."""
    return dataclasses.field(default=default, metadata={"parse": parse, "help": help})


def _env_name(prefix: str, name: str) -> str:
    return f"{prefix}{name.upper()}"


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any], prefix: str = "EDGEWARD_") -> None:
    """Add one ``--flag`` per field of ``cls``; a flag left out keeps the environment's value."""
    for f in dataclasses.fields(cls):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar="VALUE",
            help=f"{f.metadata['help']} [{_env_name(prefix, f.name)}, default {f.default}]",
        )


def load(
    cls: type[T],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
    prefix: str = "EDGEWARD_",
) -> T:
    """Build ``cls`` from ``env`` (default ``os.environ``) then ``overrides`` (parsed CLI flags)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    errors: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = _env_name(prefix, f.name)
        text = (overrides or {}).get(f.name)
        source = "--" + f.name.replace("_", "-")
        if text is None:
            text, source = env.get(name), name
        if text is None or text == "":
            continue
        try:
            values[f.name] = f.metadata["parse"](text)
        except ValueError as exc:
            errors.append(f"{source}={text!r}: {exc}")
    if errors:
        raise ConfigError(errors)
    return cls(**values)
