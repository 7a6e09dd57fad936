"""Stable rejection reason codes: the only source of the strings clients match on.

Each reason carries the gRPC status code the contract assigns to it (docs/protocol.md §3).
The backend's refusals have a stable form too (``{"error": {"code", "message"}}``, §5):
``stable_error_code`` reads it, for the gateway's backend client and the public listener alike.
A rejection anywhere in the gateway is a ``Rejection`` exception; the gRPC layer turns it into
a status whose message is the reason code and whose details carry ``google.rpc.ErrorInfo``.
"""

from __future__ import annotations

import enum

import grpc
import orjson

__all__ = ("Reason", "Rejection", "stable_error_code")


class Reason(enum.Enum):
    """A rejection reason: ``value`` is the wire string, ``code`` the gRPC status code."""

    INVALID_ENVELOPE = ("invalid_envelope", grpc.StatusCode.INVALID_ARGUMENT)
    UNSUPPORTED_PROTOCOL_VERSION = ("unsupported_protocol_version", grpc.StatusCode.INVALID_ARGUMENT)
    PAYLOAD_TOO_LARGE = ("payload_too_large", grpc.StatusCode.INVALID_ARGUMENT)
    PAYLOAD_HASH_MISMATCH = ("payload_hash_mismatch", grpc.StatusCode.INVALID_ARGUMENT)
    SESSION_NOT_FOUND = ("session_not_found", grpc.StatusCode.UNAUTHENTICATED)
    INVALID_SIGNATURE = ("invalid_signature", grpc.StatusCode.UNAUTHENTICATED)
    SESSION_REVOKED = ("session_revoked", grpc.StatusCode.FAILED_PRECONDITION)
    STALE_REQUEST = ("stale_request", grpc.StatusCode.FAILED_PRECONDITION)
    REPLAYED_REQUEST = ("replayed_request", grpc.StatusCode.ALREADY_EXISTS)
    RATE_LIMITED = ("rate_limited", grpc.StatusCode.RESOURCE_EXHAUSTED)
    SLOW_CONSUMER = ("slow_consumer", grpc.StatusCode.RESOURCE_EXHAUSTED)
    TOO_MANY_STREAMS = ("too_many_streams", grpc.StatusCode.RESOURCE_EXHAUSTED)
    UNKNOWN_MESSAGE_TYPE = ("unknown_message_type", grpc.StatusCode.UNIMPLEMENTED)
    BACKEND_UNAVAILABLE = ("backend_unavailable", grpc.StatusCode.UNAVAILABLE)
    REPLAY_STORE_UNAVAILABLE = ("replay_store_unavailable", grpc.StatusCode.UNAVAILABLE)
    # The first call of a retried request still runs (docs/replay.md, "Idempotent retry"): retry later.
    REQUEST_IN_FLIGHT = ("request_in_flight", grpc.StatusCode.UNAVAILABLE)
    LIMITER_UNAVAILABLE = ("limiter_unavailable", grpc.StatusCode.UNAVAILABLE)  # Redis limiter failing closed
    SHUTTING_DOWN = ("shutting_down", grpc.StatusCode.UNAVAILABLE)
    BACKEND_TIMEOUT = ("backend_timeout", grpc.StatusCode.DEADLINE_EXCEEDED)

    def __init__(self, wire: str, code: grpc.StatusCode) -> None:
        self.wire = wire
        self.code = code


class Rejection(Exception):
    """A request refused with a stable reason.

    ``metadata`` goes into ``ErrorInfo.metadata`` (``field`` for invalid_envelope,
    ``server_time_ms`` for stale_request, ``scope`` and ``max_streams`` for too_many_streams);
    ``retry_after_ms`` becomes ``google.rpc.RetryInfo``.
    """

    def __init__(
        self,
        reason: Reason,
        detail: str = "",
        *,
        metadata: dict[str, str] | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(f"{reason.wire}: {detail}" if detail else reason.wire)
        self.reason = reason
        self.detail = detail
        self.metadata = metadata or {}
        self.retry_after_ms = retry_after_ms


def stable_error_code(body: bytes) -> str | None:
    """The code of a stable JSON error ``{"error": {"code": ...}}``, or None when it is not one.

    "ok" is not accepted as an error code: it would make a refusal look like success.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code and code != "ok" else None
