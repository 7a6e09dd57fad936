"""Canonical signing inputs of the wire contract (docs/protocol.md §2).

Signatures never cover protobuf bytes: protobuf encoding is not canonical. They cover these
byte strings built from the envelope fields in field-number order: ``u32`` and ``i64`` are
big-endian, ``lp(b)`` is ``u32(len(b)) || b`` with strings taken as UTF-8.
Client SDKs in other languages check themselves against tests/vectors/.
"""

from __future__ import annotations

import struct

__all__ = (
    "EVENT_DOMAIN",
    "REQUEST_DOMAIN",
    "RESPONSE_DOMAIN",
    "event_signing_input",
    "request_signing_input",
    "response_signing_input",
)

REQUEST_DOMAIN = b"edgeward.request.v1\x00"
RESPONSE_DOMAIN = b"edgeward.response.v1\x00"
EVENT_DOMAIN = b"edgeward.event.v1\x00"

_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")


def _lp(b: bytes) -> bytes:
    return _U32.pack(len(b)) + b


def request_signing_input(
    protocol_version: int,
    device_session_id: str,
    message_type: str,
    request_id: str,
    timestamp_ms: int,
    payload_hash: bytes,
    trace_id: str,
) -> bytes:
    """Bytes a client signs for ExecuteCommand and SubscribeEvents."""
    return b"".join(
        (
            REQUEST_DOMAIN,
            _U32.pack(protocol_version),
            _lp(device_session_id.encode()),
            _lp(message_type.encode()),
            _lp(request_id.encode()),
            _I64.pack(timestamp_ms),
            _lp(payload_hash),
            _lp(trace_id.encode()),
        )
    )


def response_signing_input(
    protocol_version: int,
    request_id: str,
    timestamp_ms: int,
    result_code: str,
    payload_hash: bytes,
    trace_id: str,
) -> bytes:
    """Bytes the gateway signs for an ExecuteCommandResponse."""
    return b"".join(
        (
            RESPONSE_DOMAIN,
            _U32.pack(protocol_version),
            _lp(request_id.encode()),
            _I64.pack(timestamp_ms),
            _lp(result_code.encode()),
            _lp(payload_hash),
            _lp(trace_id.encode()),
        )
    )


def event_signing_input(
    protocol_version: int,
    event_id: str,
    event_type: str,
    timestamp_ms: int,
    payload_hash: bytes,
    trace_id: str,
) -> bytes:
    """Bytes the gateway signs once per GatewayEvent."""
    return b"".join(
        (
            EVENT_DOMAIN,
            _U32.pack(protocol_version),
            _lp(event_id.encode()),
            _lp(event_type.encode()),
            _I64.pack(timestamp_ms),
            _lp(payload_hash),
            _lp(trace_id.encode()),
        )
    )
