"""Envelope decoding: every field limit of the contract, in a fixed order, with stable reasons.

Every test runs against both twins (``envelope_impl``: ``edgeward.native._envelope_c`` and
``edgeward.native._envelope_py``); tests/test_envelope_props.py compares them on random input.
"""

from __future__ import annotations

import hashlib
import importlib
from types import ModuleType

import pytest

from edgeward._pb import gateway_pb2
from edgeward.native import envelope as public
from edgeward.native import loader
from edgeward.native.crypto import Signer, verify
from edgeward.native.signing import event_signing_input, request_signing_input, response_signing_input
from edgeward.reasons import Reason, Rejection

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


def rejection(impl: ModuleType, data: bytes, max_payload: int = 1024) -> Rejection:
    with pytest.raises(Rejection) as info:
        impl.decode_request(data, max_payload)
    return info.value


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, wire_type: int, value: bytes = b"") -> bytes:
    """One raw field: its tag, then ``value`` as is (length-prefixed for wire type 2)."""
    tag = varint(number << 3 | wire_type)
    return tag + (varint(len(value)) + value if wire_type == 2 else value)


def test_public_module_binds_the_active_twin() -> None:
    active = importlib.import_module(f"edgeward.native._envelope_{loader.ACTIVE['envelope']}")
    for name in public.__all__:
        assert getattr(public, name) is getattr(active, name)


def test_valid_request_decodes_with_digest_and_signing_input(envelope_impl: ModuleType) -> None:
    req = envelope_impl.decode_request(wire(envelope(trace_id="trace-1")), 1024)
    assert (req.device_session_id, req.message_type, req.request_id) == ("dsn_abc", "user.echo", "r" * 16)
    assert req.payload == PAYLOAD and req.payload_digest == hashlib.sha256(PAYLOAD).digest()
    assert req.timestamp_ms == 1_700_000_000_000 and req.trace_id == "trace-1" and req.signature == b"s" * 64
    assert req.signing_input == request_signing_input(
        1, "dsn_abc", "user.echo", "r" * 16, 1_700_000_000_000, req.payload_hash, "trace-1"
    )


def test_signed_request_is_an_immutable_value(envelope_impl: ModuleType) -> None:
    data = wire()
    req, same = envelope_impl.decode_request(data, 1024), envelope_impl.decode_request(data, 1024)
    assert isinstance(req, envelope_impl.SignedRequest)
    assert req == same and (req != same) is False and hash(req) == hash(same)
    assert req != envelope_impl.decode_request(wire(envelope(trace_id="other")), 1024)
    assert req != "not a request"
    assert repr(req).startswith("SignedRequest(device_session_id='dsn_abc', message_type='user.echo', ")
    with pytest.raises(AttributeError):
        req.request_id = "x" * 16
    rebuilt = envelope_impl.SignedRequest(
        device_session_id=req.device_session_id,
        message_type=req.message_type,
        request_id=req.request_id,
        timestamp_ms=req.timestamp_ms,
        payload_hash=req.payload_hash,
        trace_id=req.trace_id,
        payload=req.payload,
        signature=req.signature,
        payload_digest=req.payload_digest,
        signing_input=req.signing_input,
    )
    assert rebuilt == req and repr(rebuilt) == repr(req)


def test_negative_and_extreme_timestamps_round_trip(envelope_impl: ModuleType) -> None:
    for ts in (-1, -(2**63), 2**63 - 1, 0):
        req = envelope_impl.decode_request(wire(envelope(timestamp_ms=ts)), 1024)
        assert req.timestamp_ms == ts
        assert req.signing_input[-(8 + 4 + 32 + 4) : -(4 + 32 + 4)] == ts.to_bytes(8, "big", signed=True)


def test_subscribe_request_decodes_as_its_own_type(envelope_impl: ModuleType) -> None:
    msg = gateway_pb2.SubscribeEventsRequest(signature=b"s" * 64)
    msg.envelope.CopyFrom(envelope(message_type="gateway.subscribe", payload_hash=hashlib.sha256(b"").digest()))
    req = envelope_impl.decode_request(msg.SerializeToString(), 1024, "subscribe")
    assert req.message_type == "gateway.subscribe" and req.payload == b""


def test_unknown_kind_is_a_key_error(envelope_impl: ModuleType) -> None:
    with pytest.raises(KeyError):
        envelope_impl.decode_request(wire(), 1024, "publish")


def test_any_buffer_is_accepted_and_other_types_are_not(envelope_impl: ModuleType) -> None:
    data = wire()
    expected = envelope_impl.decode_request(data, 1024)
    assert envelope_impl.decode_request(bytearray(data), 1024) == expected
    assert envelope_impl.decode_request(memoryview(data), 1024) == expected
    with pytest.raises(TypeError):
        envelope_impl.decode_request(data.decode("latin-1"), 1024)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xff\xff\xff", id="unterminated-varint"),
        pytest.param(b"\x00\x01", id="field-number-0"),
        pytest.param(b"\x0a\x05\x08", id="truncated-envelope"),
        pytest.param(b"\x12\x05ab", id="length-past-the-end"),
        pytest.param(b"\x12\x85\x80\x80\x80\x80\x00abcde", id="length-of-6-bytes"),
        pytest.param(b"\x28" + b"\xff" * 10 + b"\x01", id="varint-of-11-bytes"),
        pytest.param(b"\x92\x80\x80\x80\x80\x00\x01x", id="tag-of-6-bytes"),
        pytest.param(b"\x80\x80\x80\x80\x10\x01", id="tag-over-32-bits"),
        pytest.param(b"\x29abc", id="truncated-fixed64"),
        pytest.param(b"\x2dab", id="truncated-fixed32"),
        pytest.param(b"\x2e", id="wire-type-6"),
        pytest.param(b"\x2f", id="wire-type-7"),
        pytest.param(b"\x2c", id="end-group-without-start"),
        pytest.param(b"\x2b", id="unterminated-group"),
        pytest.param(b"\x2b\x34", id="mismatched-end-group"),
        pytest.param(b"\x2b\x00\x2c", id="field-0-in-group-eats-the-end-tag"),
        pytest.param(b"\x2b\x32\x05x\x2c", id="truncated-length-in-group"),
        pytest.param(b"\x0a\x01\x44", id="end-group-in-envelope"),
        pytest.param(b"\x0a\x02\x43\x2b\x44", id="group-crossing-the-envelope-end"),
        pytest.param(b"\x0a\x03\x2b\x2c\x2c", id="extra-end-group-in-envelope"),
        pytest.param(b"\x2b" * 101 + b"\x2c" * 101, id="groups-over-the-depth-limit"),
        pytest.param(b"\x0a\xc8\x01" + b"\x4b" * 100 + b"\x4c" * 100, id="envelope-groups-over-the-depth-limit"),
    ],
)
def test_undecodable_bytes_are_invalid_envelope(envelope_impl: ModuleType, data: bytes) -> None:
    err = rejection(envelope_impl, data)
    assert err.reason is Reason.INVALID_ENVELOPE and err.metadata == {"field": "message"}


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"\xff\xfe\xfd", id="invalid-bytes"),
        pytest.param(b"\xc0\x80", id="overlong-nul"),
        pytest.param(b"\xe0\x80\xaf", id="overlong-3-bytes"),
        pytest.param(b"\xed\xa0\x80", id="surrogate"),
        pytest.param(b"\xf4\x90\x80\x80", id="above-u10ffff"),
        pytest.param(b"\xf0\x8f\xbf\xbf", id="overlong-4-bytes"),
        pytest.param(b"\xe2\x82", id="truncated-sequence"),
        pytest.param(b"\x80", id="lone-continuation"),
    ],
)
@pytest.mark.parametrize("name", ["device_session_id", "message_type", "request_id", "trace_id"])
def test_invalid_utf8_in_a_string_field_is_invalid_envelope(envelope_impl: ModuleType, name: str, bad: bytes) -> None:
    raw = wire(envelope(**{name: "marker_" + "m" * 16}))
    err = rejection(envelope_impl, raw.replace(b"marker_" + b"m" * 16, b"marker_" + bad + b"m" * (16 - len(bad))))
    assert err.reason is Reason.INVALID_ENVELOPE and err.metadata == {"field": "message"}


def test_invalid_utf8_is_refused_even_when_a_later_occurrence_replaces_it(envelope_impl: ModuleType) -> None:
    bad = field(1, 2, field(2, 2, b"\xff"))
    assert rejection(envelope_impl, bad + wire()).metadata == {"field": "message"}


def test_valid_non_ascii_utf8_is_decodable_but_outside_the_character_limits(envelope_impl: ModuleType) -> None:
    err = rejection(envelope_impl, wire(envelope(device_session_id="dsn_\u00e9\u20ac\U0001f600")))
    assert err.metadata == {"field": "device_session_id"}


def test_missing_envelope(envelope_impl: ModuleType) -> None:
    data = gateway_pb2.ExecuteCommandRequest(payload_bytes=PAYLOAD, signature=b"s" * 64).SerializeToString()
    assert rejection(envelope_impl, data).metadata == {"field": "envelope"}
    assert rejection(envelope_impl, b"").metadata == {"field": "envelope"}


def test_envelope_with_another_wire_type_is_an_unknown_field(envelope_impl: ModuleType) -> None:
    for data in (field(1, 0, b"\x05"), field(1, 3, field(2, 2, b"x")) + b"\x0c", field(1, 5, b"abcd")):
        assert rejection(envelope_impl, data).metadata == {"field": "envelope"}


@pytest.mark.parametrize("version", [0, 2, 4294967295])
def test_unsupported_protocol_version(envelope_impl: ModuleType, version: int) -> None:
    err = rejection(envelope_impl, wire(envelope(protocol_version=version)))
    assert err.reason is Reason.UNSUPPORTED_PROTOCOL_VERSION
    assert str(version) in err.detail and err.metadata == {}


def test_protocol_version_keeps_the_low_32_bits_of_a_wide_varint(envelope_impl: ModuleType) -> None:
    env = field(1, 0, varint(2**32 + 1)) + envelope(protocol_version=0).SerializeToString()
    data = field(1, 2, env) + field(2, 2, PAYLOAD) + field(3, 2, b"s" * 64)
    assert envelope_impl.decode_request(data, 1024).request_id == "r" * 16


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("device_session_id", ""),
        ("device_session_id", "a" * 129),
        ("device_session_id", "has space"),
        ("device_session_id", "dsn/slash"),
        ("message_type", ""),
        ("message_type", "a" * 65),
        ("message_type", "User.Echo"),
        ("message_type", "user:echo"),
        ("request_id", "r" * 15),
        ("request_id", "r" * 129),
        ("request_id", "r" * 15 + "!"),
        ("request_id", "r" * 15 + "\x00"),
        ("payload_hash", b""),
        ("payload_hash", b"x" * 31),
        ("payload_hash", b"x" * 33),
        ("trace_id", "t" * 65),
        ("trace_id", "trace_id_with_underscore"),
        ("trace_id", "trace.dot"),
        ("trace_id", "trace\n"),
    ],
)
def test_field_outside_its_limits_names_the_field(envelope_impl: ModuleType, field_name: str, value: object) -> None:
    err = rejection(envelope_impl, wire(envelope(**{field_name: value})))
    assert err.reason is Reason.INVALID_ENVELOPE
    assert err.metadata == {"field": field_name}


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("device_session_id", "a" * 128),
        ("device_session_id", "A.z_0:9-"),
        ("message_type", "a" * 64),
        ("message_type", "a.z_0-9"),
        ("request_id", "r" * 128),
        ("request_id", "A.z_0:9-" * 2),
        ("trace_id", "t" * 64),
        ("trace_id", "0af7651916cd43dd8448eb211c80319c"),
        ("trace_id", "Trace-ID-9"),
    ],
)
def test_field_at_its_limits_is_accepted(envelope_impl: ModuleType, field_name: str, value: object) -> None:
    assert getattr(envelope_impl.decode_request(wire(envelope(**{field_name: value})), 1024), field_name) == value


@pytest.mark.parametrize("length", [0, 63, 65])
def test_signature_must_be_64_bytes(envelope_impl: ModuleType, length: int) -> None:
    assert rejection(envelope_impl, wire(signature=b"s" * length)).metadata == {"field": "signature"}


def test_payload_over_the_limit(envelope_impl: ModuleType) -> None:
    err = rejection(envelope_impl, wire(payload=b"x" * 1025), max_payload=1024)
    assert err.reason is Reason.PAYLOAD_TOO_LARGE and "1025" in err.detail
    assert envelope_impl.decode_request(wire(payload=b"x" * 1024), 1024).payload == b"x" * 1024
    assert envelope_impl.decode_request(wire(payload=b"x" * 1024), 2**80).payload == b"x" * 1024


def test_first_fault_in_field_order_decides(envelope_impl: ModuleType) -> None:
    err = rejection(envelope_impl, wire(envelope(device_session_id="", request_id="short")))
    assert err.metadata == {"field": "device_session_id"}
    assert rejection(envelope_impl, wire(envelope(protocol_version=2, device_session_id=""))).reason is (
        Reason.UNSUPPORTED_PROTOCOL_VERSION
    )
    err = rejection(envelope_impl, wire(envelope(payload_hash=b"", trace_id="bad_trace"), payload=b"x" * 2000))
    assert err.metadata == {"field": "payload_hash"}
    err = rejection(envelope_impl, wire(envelope(trace_id="bad_trace"), payload=b"x" * 2000, signature=b""))
    assert err.metadata == {"field": "trace_id"}
    assert rejection(envelope_impl, wire(payload=b"x" * 2000, signature=b"")).reason is Reason.PAYLOAD_TOO_LARGE


def test_rejections_carry_the_same_detail_in_both_twins(envelope_impl: ModuleType) -> None:
    assert str(rejection(envelope_impl, b"\x2e")) == "invalid_envelope: message: not a decodable protobuf message"
    assert str(rejection(envelope_impl, wire(envelope(protocol_version=7)))) == (
        "unsupported_protocol_version: protocol_version 7; this gateway speaks 1"
    )
    assert str(rejection(envelope_impl, wire(envelope(payload_hash=b"x")))) == (
        "invalid_envelope: payload_hash: must be 32 bytes"
    )
    assert str(rejection(envelope_impl, wire(payload=b"x" * 11), max_payload=10)) == (
        "payload_too_large: 11 bytes; the limit is 10"
    )
    assert str(rejection(envelope_impl, wire(signature=b"s"))) == "invalid_envelope: signature: must be 64 bytes"


def test_unknown_fields_of_every_wire_type_are_skipped(envelope_impl: ModuleType) -> None:
    unknown = (
        b"\xa2\x06\x03abc"  # field 100, length-delimited, 3 bytes
        + field(9, 0, b"\xff" * 9 + b"\x7f")  # a 10-byte varint (the high bits are dropped)
        + field(10, 1, b"8 bytes!")
        + field(11, 5, b"4byt")
        + field(12, 3, field(1, 2, b"\xff") + field(13, 3, b"") + b"\x6c") + b"\x64"  # nested groups
        + b"\xf8\xff\xff\xff\x0f\x01"  # the largest field number
        + field(2, 0, b"\x01")  # a known number with another wire type is unknown too
        + b"\xf8\x00\x05"  # an overlong (2-byte) tag: field 15, varint
    )
    env = envelope().SerializeToString()
    data = wire() + unknown + field(1, 2, unknown)
    assert envelope_impl.decode_request(data, 1024).request_id == "r" * 16
    data = field(1, 2, unknown + env + unknown) + unknown + field(2, 2, PAYLOAD) + field(3, 2, b"s" * 64)
    assert envelope_impl.decode_request(data, 1024).payload == PAYLOAD


def test_field_number_0_is_skipped_inside_an_unknown_group(envelope_impl: ModuleType) -> None:
    # upb refuses field number 0 in a message but skips it inside a group, like any unknown field:
    # here its varint value is the 0x2c byte, so a third end tag closes the outer group.
    for groups in (b"\x2b\x00\x2c\x2c", b"\x2b\x2b\x00\x2c\x2c\x2c", b"\x2b\x02\x00\x2c", b"\x2b\x03\x04\x2c"):
        data = wire() + groups + field(1, 2, groups)
        assert envelope_impl.decode_request(data, 1024).request_id == "r" * 16


def test_groups_at_the_depth_limit_are_skipped(envelope_impl: ModuleType) -> None:
    top = b"\x2b" * 100 + b"\x2c" * 100
    inner = b"\x4b" * 99 + b"\x4c" * 99
    data = wire() + top + field(1, 2, inner)
    assert envelope_impl.decode_request(data, 1024).request_id == "r" * 16


def test_overlong_lengths_up_to_5_bytes_are_accepted(envelope_impl: ModuleType) -> None:
    data = wire(payload=b"")
    data += b"\x12\x85\x80\x80\x80\x00abcde"  # payload_bytes again, length 5 in 5 bytes
    assert envelope_impl.decode_request(data, 1024).payload == b"abcde"


def test_last_occurrence_wins_and_envelopes_merge(envelope_impl: ModuleType) -> None:
    first = envelope(device_session_id="dsn_first", trace_id="t-1").SerializeToString()
    later = field(2, 2, b"dsn_later") + field(5, 0, varint(0))  # an explicit 0 still overwrites
    data = (
        field(1, 2, first)
        + field(2, 2, b"first payload")
        + field(3, 2, b"x" * 10)
        + field(1, 2, later)
        + field(2, 2, PAYLOAD)
        + field(3, 2, b"s" * 64)
        + field(1, 2, b"")
    )
    req = envelope_impl.decode_request(data, 1024)
    assert (req.device_session_id, req.trace_id, req.timestamp_ms) == ("dsn_later", "t-1", 0)
    assert (req.payload, req.signature, req.message_type) == (PAYLOAD, b"s" * 64, "user.echo")
    parsed = gateway_pb2.ExecuteCommandRequest.FromString(data)
    assert parsed.envelope.device_session_id == "dsn_later" and parsed.envelope.timestamp_ms == 0


def test_encoded_response_is_signed_over_its_envelope(envelope_impl: ModuleType) -> None:
    signer = Signer(bytes(range(32)))
    data = envelope_impl.encode_response(signer, "r" * 16, "t-1", "ok", b'{"a":1}', 123)
    resp = gateway_pb2.ExecuteCommandResponse.FromString(data)
    env = resp.envelope
    assert (env.protocol_version, env.request_id, env.result_code, env.timestamp_ms) == (1, "r" * 16, "ok", 123)
    assert env.payload_hash == hashlib.sha256(b'{"a":1}').digest() and resp.payload_bytes == b'{"a":1}'
    signed = response_signing_input(1, "r" * 16, 123, "ok", env.payload_hash, "t-1")
    assert verify(signer.public_key, signed, resp.signature)
    assert data == resp.SerializeToString()


def test_encoded_event_is_signed_over_its_envelope(envelope_impl: ModuleType) -> None:
    signer = Signer(bytes(range(32)))
    data = envelope_impl.encode_event(signer, "e1", "gateway.server_time", b"{}", 5)
    ev = gateway_pb2.GatewayEvent.FromString(data)
    signed = event_signing_input(1, "e1", "gateway.server_time", 5, hashlib.sha256(b"{}").digest(), "")
    assert verify(signer.public_key, signed, ev.signature)
    assert (ev.envelope.event_id, ev.envelope.event_type, ev.envelope.timestamp_ms) == ("e1", "gateway.server_time", 5)
    assert data == ev.SerializeToString()


@pytest.mark.parametrize("timestamp_ms", [0, -1, 2**63 - 1, -(2**63)])
def test_encoding_leaves_out_defaults_and_keeps_utf8(envelope_impl: ModuleType, timestamp_ms: int) -> None:
    signer = Signer(bytes(range(32)))
    data = envelope_impl.encode_response(signer, "", "", "", b"", timestamp_ms)
    resp = gateway_pb2.ExecuteCommandResponse.FromString(data)
    assert data == resp.SerializeToString() and resp.envelope.timestamp_ms == timestamp_ms
    data = envelope_impl.encode_event(signer, "\u00e9v\u00e9nement", "\U0001f600", b"\x00" * 300, timestamp_ms, "t")
    ev = gateway_pb2.GatewayEvent.FromString(data)
    assert data == ev.SerializeToString() and ev.envelope.event_id == "\u00e9v\u00e9nement"
    signed = event_signing_input(1, "\u00e9v\u00e9nement", "\U0001f600", timestamp_ms, ev.envelope.payload_hash, "t")
    assert verify(signer.public_key, signed, ev.signature)


@pytest.mark.parametrize(
    ("timestamp_ms", "error"), [(2**63, ValueError), (-(2**63) - 1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_encoding_refuses_a_timestamp_outside_int64(
    envelope_impl: ModuleType, timestamp_ms: object, error: type[Exception]
) -> None:
    signer = Signer(bytes(range(32)))
    with pytest.raises(error):
        envelope_impl.encode_response(signer, "r", "", "ok", b"", timestamp_ms)
    with pytest.raises(error):
        envelope_impl.encode_event(signer, "e", "t", b"", timestamp_ms)


def test_encoding_refuses_a_body_that_is_not_bytes(envelope_impl: ModuleType) -> None:
    signer = Signer(bytes(range(32)))
    with pytest.raises(TypeError):
        envelope_impl.encode_response(signer, "r", "", "ok", "body", 1)
    with pytest.raises(UnicodeEncodeError):
        envelope_impl.encode_event(signer, "\ud800", "t", b"", 1)
