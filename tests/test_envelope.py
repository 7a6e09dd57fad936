"""Envelope decoding: every field limit of the contract, in a fixed order, with stable reasons."""

from __future__ import annotations

import hashlib

import pytest

from edgeward._pb import gateway_pb2
from edgeward.crypto import Signer, verify
from edgeward.envelope import decode_request, encode_event, encode_response
from edgeward.reasons import Reason, Rejection
from edgeward.signing import event_signing_input, request_signing_input, response_signing_input

PAYLOAD = b'{"hello":"world"}'


def envelope(**overrides: object) -> gateway_pb2.RequestEnvelope:
    fields: dict[str, object] = {
        "protocol_version": 1,
        "device_session_id": "dsn_abc",
        "message_type": "user.echo",
        "request_id": "r" * 16,
        "timestamp_ms": 1_700_000_000_000,
        "payload_hash": hashlib.sha256(PAYLOAD).digest(),
        "trace_id": "",
    }
    fields.update(overrides)
    return gateway_pb2.RequestEnvelope(**fields)  # type: ignore[arg-type]


def wire(
    env: gateway_pb2.RequestEnvelope | None = None, payload: bytes = PAYLOAD, signature: bytes = b"s" * 64
) -> bytes:
    msg = gateway_pb2.ExecuteCommandRequest(payload_bytes=payload, signature=signature)
    msg.envelope.CopyFrom(env if env is not None else envelope())
    return msg.SerializeToString()


def rejection(data: bytes, max_payload: int = 1024) -> Rejection:
    with pytest.raises(Rejection) as info:
        decode_request(data, max_payload)
    return info.value


def test_valid_request_decodes_with_digest_and_signing_input() -> None:
    req = decode_request(wire(envelope(trace_id="trace-1")), 1024)
    assert (req.device_session_id, req.message_type, req.request_id) == ("dsn_abc", "user.echo", "r" * 16)
    assert req.payload == PAYLOAD and req.payload_digest == hashlib.sha256(PAYLOAD).digest()
    assert req.signing_input == request_signing_input(
        1, "dsn_abc", "user.echo", "r" * 16, 1_700_000_000_000, req.payload_hash, "trace-1"
    )


def test_subscribe_request_decodes_as_its_own_type() -> None:
    msg = gateway_pb2.SubscribeEventsRequest(signature=b"s" * 64)
    msg.envelope.CopyFrom(envelope(message_type="gateway.subscribe", payload_hash=hashlib.sha256(b"").digest()))
    assert decode_request(msg.SerializeToString(), 1024, "subscribe").message_type == "gateway.subscribe"


def test_undecodable_bytes_are_invalid_envelope() -> None:
    err = rejection(b"\xff\xff\xff\xff")
    assert err.reason is Reason.INVALID_ENVELOPE and err.metadata == {"field": "message"}


def test_invalid_utf8_in_a_string_field_is_invalid_envelope() -> None:
    raw = wire(envelope(device_session_id="dsn_abc"))
    assert rejection(raw.replace(b"dsn_abc", b"dsn_\xff\xfe\xfd")).reason is Reason.INVALID_ENVELOPE


def test_missing_envelope() -> None:
    data = gateway_pb2.ExecuteCommandRequest(payload_bytes=PAYLOAD, signature=b"s" * 64).SerializeToString()
    assert rejection(data).metadata == {"field": "envelope"}


@pytest.mark.parametrize("version", [0, 2, 4294967295])
def test_unsupported_protocol_version(version: int) -> None:
    assert rejection(wire(envelope(protocol_version=version))).reason is Reason.UNSUPPORTED_PROTOCOL_VERSION


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device_session_id", ""),
        ("device_session_id", "a" * 129),
        ("device_session_id", "has space"),
        ("device_session_id", "dsn/slash"),
        ("message_type", ""),
        ("message_type", "a" * 65),
        ("message_type", "User.Echo"),
        ("request_id", "r" * 15),
        ("request_id", "r" * 129),
        ("request_id", "r" * 15 + "!"),
        ("payload_hash", b""),
        ("payload_hash", b"x" * 31),
        ("payload_hash", b"x" * 33),
        ("trace_id", "t" * 65),
        ("trace_id", "trace_id_with_underscore"),
        ("trace_id", "trace\n"),
    ],
)
def test_field_outside_its_limits_names_the_field(field: str, value: object) -> None:
    err = rejection(wire(envelope(**{field: value})))
    assert err.reason is Reason.INVALID_ENVELOPE
    assert err.metadata == {"field": field}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device_session_id", "a" * 128),
        ("device_session_id", "A.z_0:9-"),
        ("message_type", "a" * 64),
        ("request_id", "r" * 128),
        ("trace_id", "t" * 64),
        ("trace_id", "0af7651916cd43dd8448eb211c80319c"),
    ],
)
def test_field_at_its_limits_is_accepted(field: str, value: object) -> None:
    assert getattr(decode_request(wire(envelope(**{field: value})), 1024), field) == value


@pytest.mark.parametrize("length", [0, 63, 65])
def test_signature_must_be_64_bytes(length: int) -> None:
    assert rejection(wire(signature=b"s" * length)).metadata == {"field": "signature"}


def test_payload_over_the_limit() -> None:
    assert rejection(wire(payload=b"x" * 1025), max_payload=1024).reason is Reason.PAYLOAD_TOO_LARGE
    assert decode_request(wire(payload=b"x" * 1024), 1024).payload == b"x" * 1024


def test_first_fault_in_field_order_decides() -> None:
    err = rejection(wire(envelope(device_session_id="", request_id="short")))
    assert err.metadata == {"field": "device_session_id"}
    assert rejection(wire(envelope(protocol_version=2, device_session_id=""))).reason is (
        Reason.UNSUPPORTED_PROTOCOL_VERSION
    )


def test_unknown_fields_are_skipped() -> None:
    extra = b"\xa2\x06\x03abc"  # field 100, length-delimited, 3 bytes
    assert decode_request(wire() + extra, 1024).request_id == "r" * 16


def test_encoded_response_is_signed_over_its_envelope() -> None:
    signer = Signer(bytes(range(32)))
    data = encode_response(signer, "r" * 16, "t-1", "ok", b'{"a":1}', 123)
    resp = gateway_pb2.ExecuteCommandResponse.FromString(data)
    env = resp.envelope
    assert (env.protocol_version, env.request_id, env.result_code, env.timestamp_ms) == (1, "r" * 16, "ok", 123)
    assert env.payload_hash == hashlib.sha256(b'{"a":1}').digest() and resp.payload_bytes == b'{"a":1}'
    signed = response_signing_input(1, "r" * 16, 123, "ok", env.payload_hash, "t-1")
    assert verify(signer.public_key, signed, resp.signature)


def test_encoded_event_is_signed_over_its_envelope() -> None:
    signer = Signer(bytes(range(32)))
    ev = gateway_pb2.GatewayEvent.FromString(encode_event(signer, "e1", "gateway.server_time", b"{}", 5))
    signed = event_signing_input(1, "e1", "gateway.server_time", 5, hashlib.sha256(b"{}").digest(), "")
    assert verify(signer.public_key, signed, ev.signature)
