"""Decode and validate a signed request (ExecuteCommand / SubscribeEvents) from its wire bytes.

Native twin of ``edgeward.native._envelope_py`` (the reference): the protobuf wire format is parsed by
hand from the request bytes (ext/edgeward/native/_wire.pxd), with no protobuf objects, and SHA-256 comes
from libsodium with the GIL released. Results, reasons, metadata and check order are the
reference's; tests/test_envelope_props.py holds the two to that. Import ``edgeward.native.envelope``,
which picks the active twin.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_Check
from cpython.number cimport PyNumber_Index
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from edgeward.native._sodium cimport crypto_hash_sha256, sodium_init
from edgeward.native._wire cimport (
    DEFAULT_DEPTH,
    WT_LEN,
    WT_VARINT,
    Reader,
    put_u32be,
    put_u64be,
    put_varint,
    read_length,
    read_tag,
    read_varint,
    skip_field,
    utf8_valid,
    varint_size,
)

from edgeward.reasons import Reason, Rejection
from edgeward.native.signing import EVENT_DOMAIN, REQUEST_DOMAIN, RESPONSE_DOMAIN

__all__ = ("PROTOCOL_VERSION", "SignedRequest", "decode_request", "encode_event", "encode_response")

PROTOCOL_VERSION = 1
PAYLOAD_HASH_BYTES = 32

if sodium_init() < 0:
    raise ImportError("libsodium failed to initialize")

cdef enum:
    _VERSION = 1
    _HASH_BYTES = 32
    _SIGNATURE_BYTES = 64

# Same lookups as the reference's ``_REQUEST_TYPES[kind]``, so an unknown kind is the same KeyError.
cdef dict _REQUEST_KINDS = {"execute": 0, "subscribe": 1}

# The signing-input domains come from edgeward.native.signing, the one definition of §2.
cdef bytes _REQUEST_DOMAIN = REQUEST_DOMAIN
cdef bytes _RESPONSE_DOMAIN = RESPONSE_DOMAIN
cdef bytes _EVENT_DOMAIN = EVENT_DOMAIN

cdef object _INVALID_ENVELOPE = Reason.INVALID_ENVELOPE
cdef object _UNSUPPORTED_PROTOCOL_VERSION = Reason.UNSUPPORTED_PROTOCOL_VERSION
cdef object _PAYLOAD_TOO_LARGE = Reason.PAYLOAD_TOO_LARGE

# Character classes of the contract (§1), one bit each, indexed by byte: any byte >= 0x80 is in
# none, so a string that passes is ASCII and its length in bytes is its length in characters.
cdef enum:
    _ID_CHARS = 1  # [A-Za-z0-9._:-]: device_session_id, request_id
    _TYPE_CHARS = 2  # [a-z0-9._-]: message_type
    _TRACE_CHARS = 4  # [A-Za-z0-9-]: trace_id

cdef unsigned char _CHAR_CLASS[256]


cdef void _init_char_classes() noexcept:
    cdef int c
    memset(_CHAR_CLASS, 0, 256)
    for c in range(256):
        if (c >= ord("a") and c <= ord("z")) or (c >= ord("0") and c <= ord("9")):
            _CHAR_CLASS[c] = _ID_CHARS | _TYPE_CHARS | _TRACE_CHARS
        elif c >= ord("A") and c <= ord("Z"):
            _CHAR_CLASS[c] = _ID_CHARS | _TRACE_CHARS
    _CHAR_CLASS[ord("-")] = _ID_CHARS | _TYPE_CHARS | _TRACE_CHARS
    _CHAR_CLASS[ord(".")] = _ID_CHARS | _TYPE_CHARS
    _CHAR_CLASS[ord("_")] = _ID_CHARS | _TYPE_CHARS
    _CHAR_CLASS[ord(":")] = _ID_CHARS


_init_char_classes()


cdef struct _Span:
    const unsigned char *ptr
    Py_ssize_t size


# The fields of one request as the protobuf runtime would hold them after parsing: a field seen
# twice keeps its last value, and every occurrence of the envelope is parsed into the same
# struct, which is protobuf's merge of repeated embedded messages.
cdef struct _Request:
    bint has_envelope
    uint32_t protocol_version
    int64_t timestamp_ms
    _Span device_session_id
    _Span message_type
    _Span request_id
    _Span payload_hash
    _Span trace_id
    _Span payload
    _Span signature


cdef int _parse_envelope(_Request *req, Reader *r) noexcept nogil:
    # RequestEnvelope (§1): 1 protocol_version, 2 device_session_id, 3 message_type,
    # 4 request_id, 5 timestamp_ms, 6 payload_hash, 7 trace_id. A known field number with another
    # wire type is an unknown field to protobuf, and skipped like one.
    cdef uint32_t tag
    cdef uint32_t field
    cdef uint64_t value
    cdef _Span span
    while r.ptr < r.end:
        if read_tag(r, &tag) < 0:
            return -1
        field = tag >> 3
        if field == 0:
            return -1
        if (tag & 7) == WT_VARINT and (field == 1 or field == 5):
            if read_varint(r, &value) < 0:
                return -1
            if field == 1:
                req.protocol_version = <uint32_t>value  # uint32: the low 32 bits, as protobuf
            else:
                req.timestamp_ms = <int64_t>value  # int64: two's complement, as protobuf
        elif (tag & 7) == WT_LEN and field >= 2 and field <= 7 and field != 5:
            if read_length(r, &span.size) < 0:
                return -1
            span.ptr = r.ptr
            r.ptr += span.size
            if field == 6:
                req.payload_hash = span
                continue
            if not utf8_valid(span.ptr, span.size):  # checked on every occurrence, as upb does
                return -1
            if field == 2:
                req.device_session_id = span
            elif field == 3:
                req.message_type = span
            elif field == 4:
                req.request_id = span
            else:
                req.trace_id = span
        elif skip_field(r, tag, DEFAULT_DEPTH - 1) < 0:  # the envelope is one level down
            return -1
    return 0


cdef int _parse_request(_Request *req, const unsigned char *data, Py_ssize_t size) noexcept nogil:
    # ExecuteCommandRequest / SubscribeEventsRequest (§1): 1 envelope, 2 payload_bytes, 3 signature.
    cdef Reader r
    cdef Reader sub
    cdef uint32_t tag
    cdef uint32_t field
    cdef Py_ssize_t length
    r.ptr = data
    r.end = data + size
    while r.ptr < r.end:
        if read_tag(&r, &tag) < 0:
            return -1
        field = tag >> 3
        if field == 0:
            return -1
        if (tag & 7) == WT_LEN and field <= 3:
            if read_length(&r, &length) < 0:
                return -1
            if field == 1:
                req.has_envelope = True
                sub.ptr = r.ptr
                sub.end = r.ptr + length
                if _parse_envelope(req, &sub) < 0:
                    return -1
            elif field == 2:
                req.payload.ptr = r.ptr
                req.payload.size = length
            else:
                req.signature.ptr = r.ptr
                req.signature.size = length
            r.ptr += length
        elif skip_field(&r, tag, DEFAULT_DEPTH) < 0:
            return -1
    return 0


cdef inline bint _chars_ok(_Span s, unsigned char char_class, Py_ssize_t low, Py_ssize_t high) noexcept nogil:
    cdef Py_ssize_t i
    if s.size < low or s.size > high:
        return False
    for i in range(s.size):
        if not (_CHAR_CLASS[s.ptr[i]] & char_class):
            return False
    return True


cdef inline str _ascii(_Span s):
    return PyUnicode_DecodeASCII(<char *>s.ptr, s.size, NULL)


cdef inline bytes _bytes(_Span s):
    return PyBytes_FromStringAndSize(<char *>s.ptr, s.size)


cdef bytes _sha256(const unsigned char *data, Py_ssize_t size):
    # ``data`` belongs to an immutable bytes object the caller holds, so it is safe without the GIL.
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _HASH_BYTES)
    cdef unsigned char *digest = <unsigned char *>PyBytes_AS_STRING(out)
    with nogil:
        crypto_hash_sha256(digest, data, <unsigned long long>size)
    return out


cdef inline unsigned char *_put_lp(unsigned char *w, const void *data, Py_ssize_t size) noexcept nogil:
    w = put_u32be(w, <uint32_t>size)
    if size:  # an absent field is a NULL span, and memcpy from NULL is undefined even for 0 bytes
        memcpy(w, data, <size_t>size)
    return w + size


cdef bytes _request_signing_input(_Request *req):
    # §2: domain || u32(protocol_version) || lp(device_session_id) || lp(message_type)
    #     || lp(request_id) || i64(timestamp_ms) || lp(payload_hash) || lp(trace_id)
    cdef Py_ssize_t domain_size = len(_REQUEST_DOMAIN)
    cdef Py_ssize_t size = (
        domain_size + 4 + 8 + 5 * 4 + req.device_session_id.size + req.message_type.size
        + req.request_id.size + req.payload_hash.size + req.trace_id.size
    )
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char *w = <unsigned char *>PyBytes_AS_STRING(out)
    memcpy(w, PyBytes_AS_STRING(_REQUEST_DOMAIN), <size_t>domain_size)
    w += domain_size
    w = put_u32be(w, _VERSION)
    w = _put_lp(w, req.device_session_id.ptr, req.device_session_id.size)
    w = _put_lp(w, req.message_type.ptr, req.message_type.size)
    w = _put_lp(w, req.request_id.ptr, req.request_id.size)
    w = put_u64be(w, <uint64_t>req.timestamp_ms)
    w = _put_lp(w, req.payload_hash.ptr, req.payload_hash.size)
    _put_lp(w, req.trace_id.ptr, req.trace_id.size)
    return out


cdef _invalid(str field, str detail):
    return Rejection(_INVALID_ENVELOPE, f"{field}: {detail}", metadata={"field": field})


# no_gc: the fields are str, bytes and int, which hold no references, so an instance can never be
# part of a reference cycle; leaving it untracked spares the collector one object per request.
@cython.final
@cython.no_gc
@cython.freelist(16)
cdef class SignedRequest:
    """A request whose shape is valid; nothing about its authenticity is known yet."""

    cdef readonly str device_session_id
    cdef readonly str message_type
    cdef readonly str request_id
    cdef readonly object timestamp_ms  # int
    cdef readonly bytes payload_hash
    cdef readonly str trace_id
    cdef readonly bytes payload
    cdef readonly bytes signature
    cdef readonly bytes payload_digest  # SHA-256(payload), compared with payload_hash at step 3
    cdef readonly bytes signing_input  # request_signing_input(envelope), verified at step 4

    __match_args__ = (
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

    def __init__(
        self,
        str device_session_id,
        str message_type,
        str request_id,
        timestamp_ms,
        bytes payload_hash,
        str trace_id,
        bytes payload,
        bytes signature,
        bytes payload_digest,
        bytes signing_input,
    ):
        self.device_session_id = device_session_id
        self.message_type = message_type
        self.request_id = request_id
        self.timestamp_ms = timestamp_ms
        self.payload_hash = payload_hash
        self.trace_id = trace_id
        self.payload = payload
        self.signature = signature
        self.payload_digest = payload_digest
        self.signing_input = signing_input

    cdef tuple _fields(self):
        return (
            self.device_session_id,
            self.message_type,
            self.request_id,
            self.timestamp_ms,
            self.payload_hash,
            self.trace_id,
            self.payload,
            self.signature,
            self.payload_digest,
            self.signing_input,
        )

    def __eq__(self, other):
        if type(other) is not SignedRequest:
            return NotImplemented
        return self._fields() == (<SignedRequest>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        return (
            f"{type(self).__qualname__}(device_session_id={self.device_session_id!r}, "
            f"message_type={self.message_type!r}, request_id={self.request_id!r}, "
            f"timestamp_ms={self.timestamp_ms!r}, payload_hash={self.payload_hash!r}, "
            f"trace_id={self.trace_id!r}, payload={self.payload!r}, signature={self.signature!r}, "
            f"payload_digest={self.payload_digest!r}, signing_input={self.signing_input!r})"
        )


def decode_request(data, max_payload_bytes, kind="execute") -> SignedRequest:
    """Decode ``data`` as an ExecuteCommandRequest (``kind="execute"``) or SubscribeEventsRequest.

    Raises ``Rejection`` with invalid_envelope (metadata ``field``), unsupported_protocol_version
    or payload_too_large.
    """
    cdef bytes buf
    cdef _Request req
    _REQUEST_KINDS[kind]  # both kinds have the same fields; only an unknown kind matters here
    if PyBytes_CheckExact(data):
        buf = <bytes>data
    else:  # any buffer, as the protobuf runtime accepts (TypeError for anything else)
        buf = bytes(memoryview(data))
    memset(&req, 0, sizeof(req))
    if _parse_request(&req, <const unsigned char *>PyBytes_AS_STRING(buf), len(buf)) < 0:
        raise _invalid("message", "not a decodable protobuf message")
    if not req.has_envelope:
        raise _invalid("envelope", "missing")
    if req.protocol_version != _VERSION:
        raise Rejection(
            _UNSUPPORTED_PROTOCOL_VERSION,
            f"protocol_version {req.protocol_version}; this gateway speaks {PROTOCOL_VERSION}",
        )
    # docs/protocol.md §6.1: the envelope fields in field-number order, then size, then signature.
    if not _chars_ok(req.device_session_id, _ID_CHARS, 1, 128):
        raise _invalid("device_session_id", "outside its length or character limits")
    if not _chars_ok(req.message_type, _TYPE_CHARS, 1, 64):
        raise _invalid("message_type", "outside its length or character limits")
    if not _chars_ok(req.request_id, _ID_CHARS, 16, 128):
        raise _invalid("request_id", "outside its length or character limits")
    if req.payload_hash.size != _HASH_BYTES:
        raise _invalid("payload_hash", f"must be {PAYLOAD_HASH_BYTES} bytes")
    if not _chars_ok(req.trace_id, _TRACE_CHARS, 0, 64):
        raise _invalid("trace_id", "outside its length or character limits")
    if req.payload.size > max_payload_bytes:
        raise Rejection(_PAYLOAD_TOO_LARGE, f"{req.payload.size} bytes; the limit is {max_payload_bytes}")
    if req.signature.size != _SIGNATURE_BYTES:
        raise _invalid("signature", f"must be {_SIGNATURE_BYTES} bytes")

    cdef SignedRequest out = SignedRequest.__new__(SignedRequest)
    out.device_session_id = _ascii(req.device_session_id)
    out.message_type = _ascii(req.message_type)
    out.request_id = _ascii(req.request_id)
    out.timestamp_ms = req.timestamp_ms
    out.payload_hash = _bytes(req.payload_hash)
    out.trace_id = _ascii(req.trace_id)
    out.payload = _bytes(req.payload)
    out.signature = _bytes(req.signature)
    out.payload_digest = _sha256(<const unsigned char *>PyBytes_AS_STRING(out.payload), req.payload.size)
    out.signing_input = _request_signing_input(&req)
    return out


cdef int64_t _int64(value) except? -1:
    # Accepts what the protobuf runtime accepts for an int64 field, with its exceptions.
    cdef int overflow = 0
    cdef long long result
    if value is True or value is False:
        raise TypeError(f"Expected an int, got a boolean: {value!r}")
    if not PyLong_Check(value):
        value = PyNumber_Index(value)  # TypeError for a float or a str, as protobuf
    result = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        raise ValueError(f"Value out of range: {value}")
    return result


cdef bytes _encode_signed(
    signer,
    bytes domain,
    str first,
    str second,
    bint timestamp_between,
    bytes body,
    value_ms,
    str trace_id,
):
    # ExecuteCommandResponse / GatewayEvent (§1, §2). Their envelopes share one layout:
    #   1 protocol_version, 2 first, then timestamp_ms and second (response: 3 timestamp_ms,
    #   4 second; event: 3 second, 4 timestamp_ms), 5 payload_hash, 6 trace_id;
    # and their signing inputs the same order. The output is what the protobuf runtime
    # serializes: fields in number order, proto3 defaults (0, "", b"") left out.
    cdef Py_ssize_t first_size, second_size, trace_size
    cdef const char *first_ptr = PyUnicode_AsUTF8AndSize(first, &first_size)
    cdef int64_t timestamp_ms = _int64(value_ms)
    cdef const char *second_ptr = PyUnicode_AsUTF8AndSize(second, &second_size)
    cdef const char *trace_ptr = PyUnicode_AsUTF8AndSize(trace_id, &trace_size)
    cdef unsigned char digest[_HASH_BYTES]
    cdef const unsigned char *body_ptr = <const unsigned char *>PyBytes_AS_STRING(body)
    cdef Py_ssize_t body_size = len(body)
    with nogil:
        crypto_hash_sha256(digest, body_ptr, <unsigned long long>body_size)

    # Signing input (§2).
    cdef Py_ssize_t domain_size = len(domain)
    cdef bytes signing_input = PyBytes_FromStringAndSize(
        NULL, domain_size + 4 + 8 + 4 * 4 + first_size + second_size + _HASH_BYTES + trace_size
    )
    cdef unsigned char *w = <unsigned char *>PyBytes_AS_STRING(signing_input)
    memcpy(w, PyBytes_AS_STRING(domain), <size_t>domain_size)
    w += domain_size
    w = put_u32be(w, _VERSION)
    w = _put_lp(w, first_ptr, first_size)
    if timestamp_between:
        w = put_u64be(w, <uint64_t>timestamp_ms)
        w = _put_lp(w, second_ptr, second_size)
    else:
        w = _put_lp(w, second_ptr, second_size)
        w = put_u64be(w, <uint64_t>timestamp_ms)
    w = _put_lp(w, digest, _HASH_BYTES)
    _put_lp(w, trace_ptr, trace_size)
    cdef bytes signature = signer.sign(signing_input)
    cdef Py_ssize_t signature_size = len(signature)

    # Protobuf wire bytes: envelope (field 1), payload_bytes (2), signature (3).
    cdef Py_ssize_t env_size = 2 + 2 + _HASH_BYTES  # protocol_version, payload_hash
    if first_size:
        env_size += 1 + varint_size(<uint64_t>first_size) + first_size
    if second_size:
        env_size += 1 + varint_size(<uint64_t>second_size) + second_size
    if timestamp_ms:
        env_size += 1 + varint_size(<uint64_t>timestamp_ms)
    if trace_size:
        env_size += 1 + varint_size(<uint64_t>trace_size) + trace_size
    cdef Py_ssize_t size = 1 + varint_size(<uint64_t>env_size) + env_size
    if body_size:
        size += 1 + varint_size(<uint64_t>body_size) + body_size
    if signature_size:
        size += 1 + varint_size(<uint64_t>signature_size) + signature_size
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    w = <unsigned char *>PyBytes_AS_STRING(out)
    w[0] = 0x0A  # field 1, length-delimited
    w = put_varint(w + 1, <uint64_t>env_size)
    w[0] = 0x08  # field 1, varint
    w[1] = _VERSION
    w += 2
    if first_size:
        w[0] = 0x12  # field 2, length-delimited
        w = put_varint(w + 1, <uint64_t>first_size)
        memcpy(w, first_ptr, <size_t>first_size)
        w += first_size
    if timestamp_between and timestamp_ms:
        w[0] = 0x18  # field 3, varint
        w = put_varint(w + 1, <uint64_t>timestamp_ms)
    if second_size:
        w[0] = 0x22 if timestamp_between else 0x1A  # field 4 / field 3, length-delimited
        w = put_varint(w + 1, <uint64_t>second_size)
        memcpy(w, second_ptr, <size_t>second_size)
        w += second_size
    if not timestamp_between and timestamp_ms:
        w[0] = 0x20  # field 4, varint
        w = put_varint(w + 1, <uint64_t>timestamp_ms)
    w[0] = 0x2A  # field 5, length-delimited
    w[1] = _HASH_BYTES
    memcpy(w + 2, digest, _HASH_BYTES)
    w += 2 + _HASH_BYTES
    if trace_size:
        w[0] = 0x32  # field 6, length-delimited
        w = put_varint(w + 1, <uint64_t>trace_size)
        memcpy(w, trace_ptr, <size_t>trace_size)
        w += trace_size
    if body_size:
        w[0] = 0x12  # field 2, length-delimited
        w = put_varint(w + 1, <uint64_t>body_size)
        memcpy(w, body_ptr, <size_t>body_size)
        w += body_size
    if signature_size:
        w[0] = 0x1A  # field 3, length-delimited
        w = put_varint(w + 1, <uint64_t>signature_size)
        memcpy(w, PyBytes_AS_STRING(signature), <size_t>signature_size)
    return out


def encode_response(
    signer, str request_id not None, str trace_id not None, str result_code not None, bytes body not None,
    timestamp_ms,
) -> bytes:
    """Wire bytes of a gateway-signed ExecuteCommandResponse carrying ``body``."""
    return _encode_signed(signer, _RESPONSE_DOMAIN, request_id, result_code, True, body, timestamp_ms, trace_id)


def encode_event(
    signer, str event_id not None, str event_type not None, bytes body not None, timestamp_ms,
    str trace_id not None="",
) -> bytes:
    """Wire bytes of a gateway-signed GatewayEvent: signed once, sent as is to every subscriber."""
    return _encode_signed(signer, _EVENT_DOMAIN, event_id, event_type, False, body, timestamp_ms, trace_id)
