"""The stub backend's settings, declared like the gateway's (edgeward.config machinery).

The listener variables are the ones ``edgeward dev`` sets, and ``EDGEWARD_REDIS_URL`` is shared
with the gateway on purpose: in a local stack both sides then meet in the same Redis, the
gateway reading the session projection the stub writes.
"""

from __future__ import annotations

import dataclasses

from edgeward.config import Address, int_in, parse_log_level, parse_redis_url, setting
from edgeward.runtime import parse_log_format

__all__ = ("StubSettings",)

_HTTP_ADDR = Address("127.0.0.1", 8700)  # the gateway's default backend_base_url
_GRPC_ADDR = Address("127.0.0.1", 8701)  # the gateway's default backend_push_addr


@dataclasses.dataclass(frozen=True, slots=True)
class StubSettings:
    """docs/stub-backend.md lists these with their defaults; port 0 picks a free port."""

    stub_http_addr: Address = setting(_HTTP_ADDR, Address.parse, "REST listener (HOST:PORT)")
    stub_grpc_addr: Address = setting(_GRPC_ADDR, Address.parse, "Push gRPC listener (HOST:PORT)")
    redis_url: str | None = setting(None, parse_redis_url, "Redis for the session projection; unset: none")
    stub_challenge_ttl_ms: int = setting(600_000, int_in(1_000, 86_400_000), "lifetime of an e-mail code")
    stub_max_challenges: int = setting(
        100_000, int_in(1, 10_000_000), "pending e-mail codes kept (and mailboxes); the oldest go first"
    )
    stub_max_sessions: int = setting(
        1_000_000, int_in(1, 100_000_000), "device sessions kept; the oldest are forgotten first"
    )
    stub_max_users: int = setting(
        1_000_000, int_in(1, 100_000_000), "users and profiles kept; the oldest are forgotten first"
    )
    stub_push_queue_size: int = setting(
        10_000, int_in(1, 10_000_000), "events queued per push stream before it is ended as too slow"
    )
    stub_max_body_bytes: int = setting(1_048_576, int_in(1_024, 64 * 1_048_576), "largest HTTP request body")
    log_level: str = setting("INFO", parse_log_level, "DEBUG, INFO, WARNING or ERROR")
    log_format: str = setting("json", parse_log_format, "json: one JSON object per line; text (edgeward dev)")
