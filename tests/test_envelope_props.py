"""Differential property tests of the envelope twins (yarl's hypothesis split).

Random valid requests, structured wire-format noise (every wire type, groups, overlong and
truncated varints, repeated fields), mutations of valid requests and plain random bytes go to
both twins, which must return equal requests or raise the same ``Rejection`` (reason, metadata
and detail). Valid requests are also checked against the official protobuf runtime's own parse,
and encoded responses and events must be byte-identical between the twins and parse back.
"""

from __future__ import annotations

import hashlib
import importlib
import string
from types import ModuleType

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeward._pb import gateway_pb2
from edgeward.native.crypto import Signer, verify
from edgeward.native.signing import event_signing_input, request_signing_input, response_signing_input
from edgeward.reasons import Reason, Rejection

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_TWIN = settings(SETTINGS, max_examples=100)

FIELDS = (
    "device_session_id",
    "message_type",
    "request_id",
    "timestamp_ms",
    "payload_hash",
    "trace_id",
    "payload",
    "signature",
    "payload_digest",
    "signing_input",
)

ID_CHARS = string.ascii_letters + string.digits + "._:-"
TYPE_CHARS = string.ascii_lowercase + string.digits + "._-"
TRACE_CHARS = string.ascii_letters + string.digits + "-"
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)


def texts(alphabet: str, min_size: int = 0, max_size: int = 8) -> st.SearchStrategy[str]:
    """Strings of ``alphabet`` of any length in the range: a short random text repeated
    (cheaper to generate than ``st.text`` of the same size, and as good at the length limits)."""
    return st.builds(
        lambda unit, size: (unit * size)[:size],
        st.text(alphabet, min_size=1, max_size=6),
        st.integers(min_size, max_size),
    )


def twins() -> tuple[ModuleType, ModuleType]:
    """(native, pure); imported here so that a pure build can still collect this module."""
    native = importlib.import_module("edgeward.native._envelope_c")
    return native, importlib.import_module("edgeward.native._envelope_py")


def outcome(impl: ModuleType, data: bytes, max_payload: int, kind: str = "execute") -> tuple[object, ...]:
    try:
        req = impl.decode_request(data, max_payload, kind)
    except Rejection as exc:
        return ("rejected", exc.reason, exc.metadata, str(exc))
    return ("ok", *(getattr(req, name) for name in FIELDS))


def assert_same(data: bytes, max_payload: int = 1024, kind: str = "execute") -> tuple[object, ...]:
    native, pure = twins()
    expected = outcome(pure, data, max_payload, kind)
    assert outcome(native, data, max_payload, kind) == expected, data
    return expected


# -- raw wire format ------------------------------------------------------------------------


def varint(value: int, pad: int = 0) -> bytes:
    """``value`` as a varint; ``pad`` more bytes make it overlong (and past 10 bytes, malformed)."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    for _ in range(pad):
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def field(number: int, wire_type: int, value: bytes) -> bytes:
    return varint(number << 3 | wire_type) + (varint(len(value)) + value if wire_type == 2 else value)


FIELD_NUMBERS = st.sampled_from([0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 15, 16, 100, 2**29 - 1, 2**29])
PAD = st.sampled_from([0, 0, 0, 0, 1, 4, 5, 9])


@st.composite
def tags(draw: st.DrawFn, wire_type: int | None = None) -> bytes:
    number = draw(FIELD_NUMBERS)
    wt = draw(st.integers(0, 7)) if wire_type is None else wire_type
    return varint(number << 3 | wt, draw(PAD))


def fields(depth: int) -> st.SearchStrategy[bytes]:
    """One raw field of any wire type, sometimes malformed; ``depth`` bounds nesting."""
    scalar = st.one_of(
        st.builds(lambda t, v, p: t + varint(v, p), tags(0), UINT64, PAD),
        st.builds(lambda t, v: t + v, tags(1), st.binary(min_size=7, max_size=9)),
        st.builds(lambda t, v: t + v, tags(5), st.binary(min_size=3, max_size=5)),
        st.builds(lambda t, v, p: t + varint(len(v), p) + v, tags(2), st.binary(max_size=12), PAD),
        st.builds(
            lambda t, v, d: t + varint(max(0, len(v) + d)) + v, tags(2), st.binary(max_size=12), st.integers(-2, 2)
        ),
        st.builds(lambda t: t, tags()),
        st.binary(min_size=1, max_size=3),
    )
    if depth == 0:
        return scalar
    inner = st.lists(fields(depth - 1), max_size=4).map(b"".join)
    nested = st.one_of(
        st.builds(lambda t, v: t + varint(len(v)) + v, tags(2), inner),
        st.builds(  # a group, its end tag sometimes for another field
            lambda n, v, same: varint(n << 3 | 3) + v + varint((n if same else n + 1) << 3 | 4),
            FIELD_NUMBERS,
            inner,
            st.booleans(),
        ),
    )
    return st.one_of(scalar, nested)


def envelope_fields() -> st.SearchStrategy[bytes]:
    """Fields of a RequestEnvelope, valid and not: the known numbers with every wire type."""
    known = st.one_of(
        st.builds(lambda v: field(1, 0, varint(v)), st.sampled_from([1, 1, 1, 0, 2, 2**32 + 1, 2**64 - 1])),
        st.builds(lambda v: field(2, 2, v.encode()), texts(ID_CHARS, 0, 130)),
        st.builds(lambda v: field(3, 2, v.encode()), texts(TYPE_CHARS, 0, 66)),
        st.builds(lambda v: field(4, 2, v.encode()), texts(ID_CHARS, 14, 130)),
        st.builds(lambda v: field(5, 0, varint(v % 2**64)), INT64),
        st.builds(lambda v: field(6, 2, v), st.binary(min_size=31, max_size=33)),
        st.builds(lambda v: field(7, 2, v.encode()), texts(TRACE_CHARS, 0, 66)),
        st.builds(lambda n, v: field(n, 2, v), st.sampled_from([2, 3, 4, 7]), st.binary(max_size=6)),
        st.builds(lambda n, v: field(n, 2, v.encode()), st.sampled_from([2, 3, 4, 7]), st.text(max_size=6)),
    )
    return st.one_of(known, ANY_FIELD, DEEP_GROUPS)


ANY_FIELD = fields(2)
# Nested groups around upb's depth limit (100 levels, the envelope counting as one).
DEEP_GROUPS = st.builds(
    lambda n, depth: varint(n << 3 | 3) * depth + varint(n << 3 | 4) * depth, FIELD_NUMBERS, st.integers(98, 101)
)
TOP_FIELD = st.one_of(
    DEEP_GROUPS,
    st.builds(lambda v: field(1, 2, v), st.lists(envelope_fields(), max_size=10).map(b"".join)),
    st.builds(lambda v: field(2, 2, v), st.binary(max_size=40)),
    st.builds(lambda v: field(3, 2, v), st.binary(min_size=63, max_size=65)),
    ANY_FIELD,
)
# A request as a sequence of raw fields: envelopes (repeated, so merged), payloads, noise.
WIRE_MESSAGES = st.lists(TOP_FIELD, max_size=8).map(b"".join)


# -- valid requests through the protobuf runtime ---------------------------------------------


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, int, str]:
    payload = draw(st.binary(max_size=300))
    kind = draw(st.sampled_from(["execute", "subscribe"]))
    env = gateway_pb2.RequestEnvelope(
        protocol_version=1,
        device_session_id=draw(texts(ID_CHARS, 1, 128)),
        message_type=draw(texts(TYPE_CHARS, 1, 64)),
        request_id=draw(texts(ID_CHARS, 16, 128)),
        timestamp_ms=draw(INT64),
        payload_hash=draw(st.one_of(st.just(hashlib.sha256(payload).digest()), st.binary(min_size=32, max_size=32))),
        trace_id=draw(texts(TRACE_CHARS, 0, 64)),
    )
    cls = gateway_pb2.ExecuteCommandRequest if kind == "execute" else gateway_pb2.SubscribeEventsRequest
    msg = cls(payload_bytes=payload, signature=draw(st.binary(min_size=64, max_size=64)))
    msg.envelope.CopyFrom(env)
    data = msg.SerializeToString()
    if draw(st.booleans()):  # unknown fields anywhere between the known ones are skipped
        data += b"".join(draw(st.lists(st.sampled_from([field(9, 0, b"\x01"), field(10, 2, b"xy"), b"\x2b\x2c"]))))
    return data, len(payload) + draw(st.integers(0, 10)), kind


@pytest.mark.native
@SETTINGS
@given(request=valid_requests())
def test_valid_requests_match_the_protobuf_runtime(request: tuple[bytes, int, str]) -> None:
    data, max_payload, kind = request
    result = assert_same(data, max_payload, kind)
    cls = gateway_pb2.ExecuteCommandRequest if kind == "execute" else gateway_pb2.SubscribeEventsRequest
    msg = cls.FromString(data)
    env = msg.envelope
    assert result == (
        "ok",
        env.device_session_id,
        env.message_type,
        env.request_id,
        env.timestamp_ms,
        env.payload_hash,
        env.trace_id,
        msg.payload_bytes,
        msg.signature,
        hashlib.sha256(msg.payload_bytes).digest(),
        request_signing_input(
            1, env.device_session_id, env.message_type, env.request_id, env.timestamp_ms, env.payload_hash, env.trace_id
        ),
    )


@PER_TWIN
@given(request=valid_requests())
def test_each_twin_decodes_valid_requests_as_the_runtime_does(
    envelope_impl: ModuleType, request: tuple[bytes, int, str]
) -> None:
    data, max_payload, kind = request
    req = envelope_impl.decode_request(data, max_payload, kind)
    msg = gateway_pb2.ExecuteCommandRequest.FromString(data)  # same fields for both kinds
    assert (req.device_session_id, req.request_id, req.timestamp_ms, req.payload) == (
        msg.envelope.device_session_id,
        msg.envelope.request_id,
        msg.envelope.timestamp_ms,
        msg.payload_bytes,
    )


@pytest.mark.native
@SETTINGS
@given(data=WIRE_MESSAGES, max_payload=st.integers(0, 64))
def test_structured_wire_input_gets_the_same_answer(data: bytes, max_payload: int) -> None:
    result = assert_same(data, max_payload)
    undecodable = ("rejected", Reason.INVALID_ENVELOPE, {"field": "message"})
    try:
        msg = gateway_pb2.ExecuteCommandRequest.FromString(data)
    except DecodeError:
        assert result[:3] == undecodable
        return
    assert result[:3] != undecodable
    if result[0] == "ok":
        assert result[1:3] == (msg.envelope.device_session_id, msg.envelope.message_type)
        assert result[7:9] == (msg.payload_bytes, msg.signature)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_requests())[0])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A, 0x2B, 0x2C, 0xC0, 0xED]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        else:
            data += data[at:]
    return bytes(data)


@pytest.mark.native
@SETTINGS
@given(data=mutated_requests(), max_payload=st.integers(0, 400))
def test_mutated_requests_get_the_same_answer(data: bytes, max_payload: int) -> None:
    assert_same(data, max_payload)


@pytest.mark.native
@SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes_get_the_same_answer(data: bytes) -> None:
    assert_same(data)


# -- encoding ---------------------------------------------------------------------------------

TEXT = st.one_of(st.text(max_size=40), texts(ID_CHARS, 0, 200))
BODY = st.binary(max_size=300)


@pytest.mark.native
@SETTINGS
@given(
    seed=st.binary(min_size=32, max_size=32),
    request_id=TEXT,
    trace_id=TEXT,
    result_code=TEXT,
    body=BODY,
    timestamp_ms=INT64,
)
def test_encoded_responses_are_identical_and_parse_back(
    seed: bytes, request_id: str, trace_id: str, result_code: str, body: bytes, timestamp_ms: int
) -> None:
    native, pure = twins()
    signer = Signer(seed)
    data = native.encode_response(signer, request_id, trace_id, result_code, body, timestamp_ms)
    assert data == pure.encode_response(signer, request_id, trace_id, result_code, body, timestamp_ms)
    resp = gateway_pb2.ExecuteCommandResponse.FromString(data)
    env = resp.envelope
    assert (env.protocol_version, env.request_id, env.timestamp_ms, env.result_code, env.trace_id) == (
        1,
        request_id,
        timestamp_ms,
        result_code,
        trace_id,
    )
    assert env.payload_hash == hashlib.sha256(body).digest() and resp.payload_bytes == body
    signed = response_signing_input(1, request_id, timestamp_ms, result_code, env.payload_hash, trace_id)
    assert verify(signer.public_key, signed, resp.signature)


@pytest.mark.native
@SETTINGS
@given(
    seed=st.binary(min_size=32, max_size=32),
    event_id=TEXT,
    event_type=TEXT,
    body=BODY,
    timestamp_ms=INT64,
    trace_id=st.one_of(st.none(), TEXT),
)
def test_encoded_events_are_identical_and_parse_back(
    seed: bytes, event_id: str, event_type: str, body: bytes, timestamp_ms: int, trace_id: str | None
) -> None:
    native, pure = twins()
    signer = Signer(seed)
    extra = () if trace_id is None else (trace_id,)
    data = native.encode_event(signer, event_id, event_type, body, timestamp_ms, *extra)
    assert data == pure.encode_event(signer, event_id, event_type, body, timestamp_ms, *extra)
    ev = gateway_pb2.GatewayEvent.FromString(data)
    env = ev.envelope
    assert (env.protocol_version, env.event_id, env.event_type, env.timestamp_ms, env.trace_id) == (
        1,
        event_id,
        event_type,
        timestamp_ms,
        trace_id or "",
    )
    assert env.payload_hash == hashlib.sha256(body).digest() and ev.payload_bytes == body
    signed = event_signing_input(1, event_id, event_type, timestamp_ms, env.payload_hash, trace_id or "")
    assert verify(signer.public_key, signed, ev.signature)


@pytest.mark.native
@pytest.mark.parametrize("number", [2, 3, 4, 7], ids=["device_session_id", "message_type", "request_id", "trace_id"])
def test_every_last_byte_of_every_string_field_gets_the_same_answer(number: int) -> None:
    payload = b"{}"
    valid = {2: b"dsn_abc", 3: b"user.echo", 4: b"r" * 16, 6: hashlib.sha256(payload).digest(), 7: b"t-1"}
    for byte in range(256):
        values = {**valid, number: valid[number][:-1] + bytes([byte])}
        env = field(1, 0, b"\x01") + b"".join(field(n, 2, value) for n, value in sorted(values.items()))
        assert_same(field(1, 2, env) + field(2, 2, payload) + field(3, 2, b"s" * 64))
