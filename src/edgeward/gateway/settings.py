"""The gateway's settings: one ``EDGEWARD_*`` variable (and CLI flag) per field.

docs/configuration.md lists them with their defaults; ``edgeward.config`` is the machinery that
reads and checks them, shared with the stub backend's settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from edgeward.config import (
    Address,
    ConfigError,
    int_in,
    parse_bool,
    parse_log_level,
    parse_redis_url,
    parse_text,
    parse_url,
    setting,
)
from edgeward.protection.budgets import Limit, parse_limit
from edgeward.protection.client_address import TrustedProxies
from edgeward.protection.limiter import parse_failure_mode
from edgeward.public.cors import CorsOrigins
from edgeward.runtime import parse_log_format

__all__ = ("GatewaySettings",)


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected {' or '.join(choices)}")
        return value

    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise ValueError("expected a number from 0 to 1")
    return value


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
    grpc_web_addr: Address | None = setting(
        None, Address.parse, "gRPC-Web listener for browsers (HOST:PORT; docs/grpc-web.md); unset: none"
    )
    cors_origins: CorsOrigins = setting(
        CorsOrigins(), CorsOrigins.parse,
        "origins whose browser pages may call the public and gRPC-Web listeners: comma-separated, or *; none",
    )
    backend_base_url: str = setting("http://127.0.0.1:8700", parse_url, "backend REST base URL")
    backend_push_addr: Address = setting(
        Address("127.0.0.1", 8701), Address.parse, "backend Push gRPC address (HOST:PORT)"
    )
    redis_url: str | None = setting(None, parse_redis_url, "Redis for the replay store; unset: embedded in-memory")
    signing_key_file: str | None = setting(
        None, parse_text, "gateway Ed25519 seed file (base64); unset: an ephemeral key, with a warning"
    )
    # TLS of the gRPC and public HTTP listeners (docs/operations.md, TLS): both files, or neither.
    tls_cert_file: str | None = setting(
        None, parse_text, "PEM certificate chain of the gRPC and public HTTP listeners; unset: plaintext"
    )
    tls_key_file: str | None = setting(None, parse_text, "PEM private key of EDGEWARD_TLS_CERT_FILE")
    admin_tls_client_ca_file: str | None = setting(
        None, parse_text, "PEM CA: the admin listener serves TLS and admits only client certificates it signed"
    )
    # HTTPS to the backend: whom to trust, and the gateway's own certificate for mutual TLS.
    backend_ca_file: str | None = setting(None, parse_text, "PEM CA bundle for an https backend; unset: the system CAs")
    backend_client_cert_file: str | None = setting(
        None, parse_text, "PEM client certificate chain presented to an https backend (mutual TLS); unset: none"
    )
    backend_client_key_file: str | None = setting(
        None, parse_text, "PEM private key of EDGEWARD_BACKEND_CLIENT_CERT_FILE"
    )
    freshness_window_ms: int = setting(300_000, int_in(1_000, 3_600_000), "accepted client clock skew")
    routes_file: str | None = setting(None, parse_text, "JSON route table; unset: the built-in routes")
    backend_timeout_ms: int = setting(5_000, int_in(10, 600_000), "timeout of one backend call")
    max_payload_bytes: int = setting(65_536, int_in(0, 16 * 1024 * 1024), "largest payload_bytes accepted")
    session_cache_size: int = setting(100_000, int_in(1, 100_000_000), "device sessions kept in memory")
    session_cache_ttl_ms: int = setting(60_000, int_in(100, 86_400_000), "how long a session record is trusted")
    session_negative_ttl_ms: int = setting(5_000, int_in(0, 3_600_000), "how long an unknown id is remembered")
    # Session source (docs/sessions.md): where a session-cache miss is read.
    session_source: str = setting(
        "backend", _one_of("backend", "redis"), "backend REST, or redis: the projection in EDGEWARD_REDIS_URL"
    )
    session_source_fallback: str = setting(
        "backend", _one_of("backend", "none"), "session_source=redis, key missing: ask backend REST, or none"
    )
    session_redis_timeout_ms: int = setting(
        1_000, int_in(10, 60_000), "connect and reply timeout of session reads in Redis (beyond XREAD's block)"
    )
    replay_memory_max_entries: int = setting(
        1_000_000, int_in(1, 100_000_000), "capacity of the embedded replay store"
    )
    replay_max_response_bytes: int = setting(
        65_536, int_in(0, 4 * 1024 * 1024), "largest signed response kept for idempotent retries (0: none)"
    )
    replay_memory_max_response_bytes: int = setting(
        64 * 1024 * 1024, int_in(0, 64 * 1024 * 1024 * 1024), "all responses the embedded replay store keeps at once"
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
    limit_ipv6_prefix: int = setting(64, int_in(32, 128), "per-IP limits count an IPv6 client by this prefix")
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
        60_000, int_in(1_000, 86_400_000), "how long an IP over its failure limit is refused"
    )
    limiter_redis_url: str | None = setting(
        None, parse_redis_url, "Redis shared by all instances' limits; unset: in-process"
    )
    limiter_redis_timeout_ms: int = setting(200, int_in(10, 10_000), "connect and reply timeout of the Redis limiter")
    limiter_redis_retry_ms: int = setting(
        1_000, int_in(0, 600_000), "after a Redis limiter failure, how long the failure mode decides alone"
    )
    limiter_on_redis_error: str = setting(
        "open", parse_failure_mode, "command budgets and pre-auth guard without Redis: open, closed or local"
    )
    public_limiter_on_redis_error: str = setting(
        "local", parse_failure_mode, "public auth limits without Redis: open, closed or local"
    )
    public_max_body_bytes: int = setting(8_192, int_in(64, 1_048_576), "largest public auth request body")
    # Connection limits (docs/edge-protection.md §10): one client must not hold a listener or the process.
    http_header_timeout_ms: int = setting(
        10_000, int_in(100, 600_000), "public and admin HTTP: a request head must arrive within this"
    )
    http_body_timeout_ms: int = setting(
        10_000, int_in(100, 600_000), "public HTTP: a request body must arrive within this after its head"
    )
    http_idle_timeout_ms: int = setting(
        30_000, int_in(100, 3_600_000), "public and admin HTTP: a keep-alive connection idle this long is closed"
    )
    public_max_connections: int = setting(
        10_000, int_in(1, 1_000_000), "open public HTTP connections (also capped by the fd limit less the reserve)"
    )
    public_max_connections_per_ip: int = setting(
        64, int_in(1, 1_000_000), "open public HTTP connections per client IP (trusted proxies exempt)"
    )
    admin_max_connections: int = setting(64, int_in(1, 100_000), "open admin HTTP connections")
    fd_reserve: int = setting(
        256, int_in(16, 1_000_000), "file descriptors the HTTP listeners leave free for gRPC, the backend and Redis"
    )
    grpc_max_concurrent_streams: int = setting(
        100, int_in(1, 1_000_000), "concurrent calls per gRPC connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)"
    )
    grpc_max_pending_calls: int = setting(
        1_000, int_in(1, 1_000_000),
        "calls gRPC queues before the gateway takes them; past it gRPC sheds new ones at random (CANCELLED), "
        "all past 3x (docs/operations.md, overload)",
    )
    grpc_max_connection_idle_ms: int = setting(
        300_000, int_in(1_000, 86_400_000), "a gRPC connection with no call open this long gets GOAWAY"
    )
    grpc_max_connection_age_ms: int = setting(
        3_600_000, int_in(0, 604_800_000), "a gRPC connection this old gets GOAWAY (gRPC adds ±10% jitter); 0: never"
    )
    grpc_max_connection_age_grace_ms: int = setting(
        300_000, int_in(0, 86_400_000), "after that GOAWAY, how long its calls may finish before the connection closes"
    )
    # Push (docs/push.md): SubscribeEvents streams, keepalive, shutdown, the backend push stream.
    stream_queue_size: int = setting(
        256, int_in(1, 1_000_000), "events queued per SubscribeEvents stream before it ends as slow_consumer"
    )
    max_streams_per_session: int = setting(
        4, int_in(1, 1_000), "concurrent SubscribeEvents streams per device session"
    )
    max_streams_per_user: int = setting(32, int_in(1, 100_000), "concurrent SubscribeEvents streams per user")
    event_history: bool = setting(
        True, parse_bool, "keep each user's recent events in Redis (EDGEWARD_REDIS_URL) so streams can resume"
    )
    event_history_max_len: int = setting(
        1_000, int_in(1, 1_000_000), "events kept per user for resuming streams (about: trimmed with MAXLEN ~)"
    )
    event_history_max_age_ms: int = setting(
        3_600_000, int_in(1_000, 30 * 86_400_000), "how long events are kept for resuming streams"
    )
    event_history_timeout_ms: int = setting(
        500, int_in(10, 60_000), "connect and reply timeout of the event history's Redis commands"
    )
    grpc_keepalive_time_ms: int = setting(
        30_000, int_in(1_000, 7_200_000), "the gateway pings a client connection idle this long"
    )
    grpc_keepalive_timeout_ms: int = setting(
        10_000, int_in(1_000, 600_000), "a connection whose ping is not answered within this is closed"
    )
    grpc_keepalive_permit_without_calls: bool = setting(
        True, parse_bool, "keepalive pings (both ways) also on connections with no call open"
    )
    grpc_min_ping_interval_ms: int = setting(
        10_000, int_in(1_000, 3_600_000), "shortest client ping interval accepted before GOAWAY too_many_pings"
    )
    shutdown_grace_ms: int = setting(
        5_000, int_in(0, 600_000), "on SIGTERM, how long calls in flight may finish before they are cancelled"
    )
    health_poll_ms: int = setting(
        1_000, int_in(10, 60_000), "how often grpc.health.v1's status is refreshed from readiness"
    )
    grpc_reflection: bool = setting(False, parse_bool, "gRPC server reflection on the gRPC port")
    push_reconnect_initial_ms: int = setting(
        250, int_in(10, 60_000), "first delay before reconnecting the backend push stream"
    )
    push_reconnect_max_ms: int = setting(
        10_000, int_in(10, 600_000), "cap of the push reconnection delay (doubles per failure, jittered)"
    )
    backend_push_keepalive_ms: int = setting(
        300_000, int_in(10_000, 7_200_000), "ping the backend push connection when idle this long"
    )
    # Workers (docs/workers.md): gateway processes of one host under a supervisor, sharing the ports.
    workers: int | None = setting(
        None, int_in(1, 1024), "gateway processes; unset: the usable CPUs with EDGEWARD_REDIS_URL, else 1"
    )
    log_level: str = setting("INFO", parse_log_level, "DEBUG, INFO, WARNING or ERROR")
    # Logs (docs/logging.md).
    log_format: str = setting("json", parse_log_format, "json: one JSON object per line; text (edgeward dev)")
    access_log: bool = setting(True, parse_bool, "one edgeward.access line per RPC and public HTTP request: on or off")
    access_log_sample: float = setting(
        1.0, _fraction, "fraction of accepted calls logged (rejections always are): 0 to 1"
    )

    def __post_init__(self) -> None:
        """Checks across settings, reported like a bad value (``edgeward serve`` exits with status 2)."""
        if self.session_source == "redis" and not self.redis_url:
            raise ConfigError(
                ["EDGEWARD_SESSION_SOURCE='redis' needs EDGEWARD_REDIS_URL (the Redis holding the session projection)"]
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(["EDGEWARD_TLS_CERT_FILE and EDGEWARD_TLS_KEY_FILE are set together, or neither"])
        if self.admin_tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError(["EDGEWARD_ADMIN_TLS_CLIENT_CA_FILE needs EDGEWARD_TLS_CERT_FILE (its certificate)"])
        if bool(self.backend_client_cert_file) != bool(self.backend_client_key_file):
            raise ConfigError(
                ["EDGEWARD_BACKEND_CLIENT_CERT_FILE and EDGEWARD_BACKEND_CLIENT_KEY_FILE are set together, or neither"]
            )
