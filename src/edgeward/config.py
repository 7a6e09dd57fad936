"""Settings from ``EDGEWARD_*`` environment variables and matching CLI flags.

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

from edgeward.budgets import Limit, parse_limit
from edgeward.client_address import TrustedProxies
from edgeward.limiter import parse_failure_mode

__all__ = (
    "Address",
    "ConfigError",
    "GatewaySettings",
    "add_arguments",
    "load",
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


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def _redis_url(text: str) -> str:
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return text


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("not an integer") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _text(text: str) -> str:
    return text


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def setting(default: T, parse: Callable[[str], Any], help: str) -> T:
    """Declare a settings field: its default, how to parse its text, and its help line."""
    return dataclasses.field(default=default, metadata={"parse": parse, "help": help})


@dataclasses.dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The gateway's settings; docs/configuration.md lists them with their defaults."""

    grpc_addr: Address = setting(Address("127.0.0.1", 50051), Address.parse, "gRPC listener (HOST:PORT)")
    public_http_addr: Address = setting(
        Address("127.0.0.1", 8080), Address.parse, "public auth HTTP listener (HOST:PORT)"
    )
    admin_http_addr: Address = setting(
        Address("127.0.0.1", 9090), Address.parse, "admin listener: /healthz, /readyz, /metrics"
    )
    backend_base_url: str = setting("http://127.0.0.1:8700", _url, "backend REST base URL")
    backend_push_addr: Address = setting(
        Address("127.0.0.1", 8701), Address.parse, "backend Push gRPC address (HOST:PORT)"
    )
    redis_url: str | None = setting(None, _redis_url, "Redis for the replay store; unset: embedded in-memory")
    signing_key_file: str | None = setting(
        None, _text, "gateway Ed25519 seed file (base64); unset: an ephemeral key, with a warning"
    )
    freshness_window_ms: int = setting(300_000, _int_in(1_000, 3_600_000), "accepted client clock skew")
    routes_file: str | None = setting(None, _text, "JSON route table; unset: the built-in routes")
    backend_timeout_ms: int = setting(5_000, _int_in(10, 600_000), "timeout of one backend call")
    max_payload_bytes: int = setting(65_536, _int_in(0, 16 * 1024 * 1024), "largest payload_bytes accepted")
    session_cache_size: int = setting(100_000, _int_in(1, 100_000_000), "device sessions kept in memory")
    session_cache_ttl_ms: int = setting(60_000, _int_in(100, 86_400_000), "how long a session record is trusted")
    session_negative_ttl_ms: int = setting(5_000, _int_in(0, 3_600_000), "how long an unknown id is remembered")
    replay_memory_max_entries: int = setting(
        1_000_000, _int_in(1, 100_000_000), "capacity of the embedded replay store"
    )
    budget_ip: Limit | None = setting(Limit(200, 400), parse_limit, "commands per client IP: RATE:BURST or off")
    budget_session: Limit | None = setting(Limit(50, 100), parse_limit, "commands per device session")
    budget_user: Limit | None = setting(Limit(100, 200), parse_limit, "commands per user, all devices")
    budget_message_type: Limit | None = setting(
        Limit(50, 100), parse_limit, "commands per (user, message type)"
    )
    # Edge protection (docs/edge-protection.md): public auth limits, pre-auth guard, limiter back-end.
    trusted_proxies: TrustedProxies = setting(
        TrustedProxies(), TrustedProxies.parse, "CIDRs whose X-Forwarded-For is believed (public listener); none"
    )
    limit_ipv6_prefix: int = setting(64, _int_in(32, 128), "per-IP limits count an IPv6 client by this prefix")
    public_limit_ip: Limit | None = setting(
        Limit(0.5, 30), parse_limit, "public auth requests per client IP and route: RATE[/s|/m|/h]:BURST or off"
    )
    public_limit_email: Limit | None = setting(Limit(6 / 3600, 5), parse_limit, "send-email-code per e-mail address")
    public_limit_challenge: Limit | None = setting(
        Limit(1 / 3600, 5), parse_limit, "confirm-email-code attempts per challenge"
    )
    preauth_failure_limit: Limit | None = setting(
        Limit(10 / 60, 20), parse_limit, "authentication failures per client IP before its cool-down"
    )
    preauth_cooldown_ms: int = setting(
        60_000, _int_in(1_000, 86_400_000), "how long an IP over its failure limit is refused"
    )
    limiter_redis_url: str | None = setting(
        None, _redis_url, "Redis shared by all instances' limits; unset: in-process"
    )
    limiter_redis_timeout_ms: int = setting(200, _int_in(10, 10_000), "connect and reply timeout of the Redis limiter")
    limiter_redis_retry_ms: int = setting(
        1_000, _int_in(0, 600_000), "after a Redis limiter failure, how long the failure mode decides alone"
    )
    limiter_on_redis_error: str = setting(
        "open", parse_failure_mode, "command budgets and pre-auth guard without Redis: open, closed or local"
    )
    public_limiter_on_redis_error: str = setting(
        "local", parse_failure_mode, "public auth limits without Redis: open, closed or local"
    )
    public_max_body_bytes: int = setting(8_192, _int_in(64, 1_048_576), "largest public auth request body")
    # Push (docs/push.md): SubscribeEvents streams, keepalive, shutdown, the backend push stream.
    stream_queue_size: int = setting(
        256, _int_in(1, 1_000_000), "events queued per SubscribeEvents stream before it ends as slow_consumer"
    )
    max_streams_per_session: int = setting(
        4, _int_in(1, 1_000), "concurrent SubscribeEvents streams per device session"
    )
    max_streams_per_user: int = setting(32, _int_in(1, 100_000), "concurrent SubscribeEvents streams per user")
    grpc_keepalive_time_ms: int = setting(
        30_000, _int_in(1_000, 7_200_000), "the gateway pings a client connection idle this long"
    )
    grpc_keepalive_timeout_ms: int = setting(
        10_000, _int_in(1_000, 600_000), "a connection whose ping is not answered within this is closed"
    )
    grpc_keepalive_permit_without_calls: bool = setting(
        True, _bool, "keepalive pings (both ways) also on connections with no call open"
    )
    grpc_min_ping_interval_ms: int = setting(
        10_000, _int_in(1_000, 3_600_000), "shortest client ping interval accepted before GOAWAY too_many_pings"
    )
    shutdown_grace_ms: int = setting(
        5_000, _int_in(0, 600_000), "on SIGTERM, how long calls in flight may finish before they are cancelled"
    )
    push_reconnect_initial_ms: int = setting(
        250, _int_in(10, 60_000), "first delay before reconnecting the backend push stream"
    )
    push_reconnect_max_ms: int = setting(
        10_000, _int_in(10, 600_000), "cap of the push reconnection delay (doubles per failure, jittered)"
    )
    backend_push_keepalive_ms: int = setting(
        300_000, _int_in(10_000, 7_200_000), "ping the backend push connection when idle this long"
    )
    log_level: str = setting("INFO", _log_level, "DEBUG, INFO, WARNING or ERROR")


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
