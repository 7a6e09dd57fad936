"""Decode and validate a signed request (ExecuteCommand / SubscribeEvents) from its wire bytes.

Pure-Python twin and reference of ``edgeward.native._envelope_c`` (ext/edgeward/native/_envelope_c.pyx): the
protobuf runtime parses, ``edgeward.native._crypto_py`` hashes. Import ``edgeward.native.envelope``, which picks
the active twin.

Step 1 of the request flow (docs/protocol.md §3): the message decodes, the envelope is present,
``protocol_version == 1`` and every field is within its limits. The gRPC handlers are registered
with raw bytes, so an undecodable message is our ``invalid_envelope`` rather than gRPC's own error.
The payload hash and the request signing input are computed here too, while the fields are at
hand; whether they match is decided later, in the pipeline's order.

Checks run in a fixed order so that a message with several faults always gets the same reason:
decode, envelope presence, protocol version, envelope fields in field-number order,
payload size, signature length.
"""

from __future__ import annotations

import dataclasses
import re

from google.protobuf.message import DecodeError

from edgeward._pb import gateway_pb2
from edgeward.native._crypto_py import SIGNATURE_BYTES, Signer, sha256
from edgeward.native.signing import event_signing_input, request_signing_input, response_signing_input
from edgeward.reasons import Reason, Rejection

__all__ = ("PROTOCOL_VERSION", "SignedRequest", "decode_request", "encode_event", "encode_response")

PROTOCOL_VERSION = 1
PAYLOAD_HASH_BYTES = 32

# (field, pattern) in field-number order; each pattern carries the contract's length limits.
_FIELD_RULES = (
    ("device_session_id", re.compile(r"[A-Za-z0-9._:-]{1,128}")),
    ("message_type", re.compile(r"[a-z0-9._-]{1,64}")),
    ("request_id", re.compile(r"[A-Za-z0-9._:-]{16,128}")),
)
_TRACE_ID = re.compile(r"[A-Za-z0-9-]{0,64}")

_RequestMessage = gateway_pb2.ExecuteCommandRequest | gateway_pb2.SubscribeEventsRequest
_REQUEST_TYPES: dict[str, type[_RequestMessage]] = {
    "execute": gateway_pb2.ExecuteCommandRequest,
    "subscribe": gateway_pb2.SubscribeEventsRequest,
}


@dataclasses.dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request whose shape is valid; nothing about its authenticity is known yet."""

    device_session_id: str
    message_type: str
    request_id: str
    timestamp_ms: int
    payload_hash: bytes
    trace_id: str
    payload: bytes
    signature: bytes
    payload_digest: bytes  # SHA-256(payload), compared with payload_hash at step 3
    signing_input: bytes  # request_signing_input(envelope), verified at step 4


def _invalid(field: str, detail: str) -> Rejection:
    return Rejection(Reason.INVALID_ENVELOPE, f"{field}: {detail}", metadata={"field": field})


def decode_request(data: bytes, max_payload_bytes: int, kind: str = "execute") -> SignedRequest:
    """Decode ``data`` as an ExecuteCommandRequest (``kind="execute"``) or SubscribeEventsRequest.

    Raises ``Rejection`` with invalid_envelope (metadata ``field``), unsupported_protocol_version
    or payload_too_large.
    """
    msg = _REQUEST_TYPES[kind]()
    try:
        msg.ParseFromString(data)
    except (DecodeError, UnicodeDecodeError):  # the second from protobuf's pure-Python backend (bad UTF-8)
        raise _invalid("message", "not a decodable protobuf message") from None
    if not msg.HasField("envelope"):
        raise _invalid("envelope", "missing")
    env = msg.envelope
    if env.protocol_version != PROTOCOL_VERSION:
        raise Rejection(
            Reason.UNSUPPORTED_PROTOCOL_VERSION,
            f"protocol_version {env.protocol_version}; this gateway speaks {PROTOCOL_VERSION}",
        )
    for field, pattern in _FIELD_RULES:
        if pattern.fullmatch(getattr(env, field)) is None:
            raise _invalid(field, "outside its length or character limits")
    if len(env.payload_hash) != PAYLOAD_HASH_BYTES:
        raise _invalid("payload_hash", f"must be {PAYLOAD_HASH_BYTES} bytes")
    if _TRACE_ID.fullmatch(env.trace_id) is None:
        raise _invalid("trace_id", "outside its length or character limits")
    if len(msg.payload_bytes) > max_payload_bytes:
        raise Rejection(
            Reason.PAYLOAD_TOO_LARGE, f"{len(msg.payload_bytes)} bytes; the limit is {max_payload_bytes}"
        )
    if len(msg.signature) != SIGNATURE_BYTES:
        raise _invalid("signature", f"must be {SIGNATURE_BYTES} bytes")
    return SignedRequest(
        device_session_id=env.device_session_id,
        message_type=env.message_type,
        request_id=env.request_id,
        timestamp_ms=env.timestamp_ms,
        payload_hash=env.payload_hash,
        trace_id=env.trace_id,
        payload=msg.payload_bytes,
        signature=msg.signature,
        payload_digest=sha256(msg.payload_bytes),
        signing_input=request_signing_input(
            PROTOCOL_VERSION,
            env.device_session_id,
            env.message_type,
            env.request_id,
            env.timestamp_ms,
            env.payload_hash,
            env.trace_id,
        ),
    )


def encode_response(
    signer: Signer, request_id: str, trace_id: str, result_code: str, body: bytes, timestamp_ms: int
) -> bytes:
    """Wire bytes of a gateway-signed ExecuteCommandResponse carrying ``body``."""
    env = gateway_pb2.ResponseEnvelope(
        protocol_version=PROTOCOL_VERSION,
        request_id=request_id,
        timestamp_ms=timestamp_ms,
        result_code=result_code,
        payload_hash=sha256(body),
        trace_id=trace_id,
    )
    signature = signer.sign(
        response_signing_input(
            PROTOCOL_VERSION, request_id, timestamp_ms, result_code, env.payload_hash, trace_id
        )
    )
    return gateway_pb2.ExecuteCommandResponse(
        envelope=env, payload_bytes=body, signature=signature
    ).SerializeToString()


def encode_event(
    signer: Signer, event_id: str, event_type: str, body: bytes, timestamp_ms: int, trace_id: str = ""
) -> bytes:
    """Wire bytes of a gateway-signed GatewayEvent: signed once, sent as is to every subscriber."""
    env = gateway_pb2.EventEnvelope(
        protocol_version=PROTOCOL_VERSION,
        event_id=event_id,
        event_type=event_type,
        timestamp_ms=timestamp_ms,
        payload_hash=sha256(body),
        trace_id=trace_id,
    )
    signature = signer.sign(
        event_signing_input(PROTOCOL_VERSION, event_id, event_type, timestamp_ms, env.payload_hash, trace_id)
    )
    return gateway_pb2.GatewayEvent(envelope=env, payload_bytes=body, signature=signature).SerializeToString()
