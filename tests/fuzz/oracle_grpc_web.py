"""Oracle of the gRPC-Web wire format: ``edgeward.gateway.grpc_web_framing`` (docs/grpc-web.md).

Input: a mode byte (its value modulo 5), then the mode's bytes. Every mode holds the framing
module to a reference written here from the wire rules, sharing no code with it (as
``tests/support/grpc_web_client.py`` does); any difference, and any exception but the one the
rules name, is a finding:

0. ``unframe`` on the bytes: exactly the message of one uncompressed ``0x00`` frame whose length
   is the rest of the body, or ``FramingError``.
1. ``decode_text`` on the bytes (a text-mode body): the reference decoder's bytes, or
   ``FramingError`` where it refuses; then ``unframe`` on what was decoded (the request path).
2. Chunks: up to 7 length bytes cut the rest into pieces, each base64-encoded on its own (padded);
   ``decode_text`` of the concatenation is the concatenation of the pieces. Each piece also
   round-trips through ``encode_text``/``decode_text``, ``frame``/``unframe`` and both together,
   and ``text_length`` is its one-chunk base64 length.
3. ``parse_timeout`` on the bytes as a header string (UTF-8, undecodable bytes escaped as aiohttp
   does): None or a finite float >= 0, the reference's value, and never an exception.
4. Status: two bytes of code (signed), then NUL-separated fields: the message, then name and value
   pairs of metadata (a name ending in ``-bin`` takes its value as bytes). ``status_headers``
   either refuses with ``ValueError`` what cannot be a header (below), or its pairs are legal
   header text and ``trailer_frame`` of them parses back to the same code, message (after gRPC's
   percent-decoding) and metadata. The same pairs given straight to ``trailer_frame`` as header
   lines: exactly those lines, or ``ValueError``. A CR or LF of a message or value in the trailer
   block is header injection (a forged ``grpc-status``): the first finding of this target.

What is legal (gRPC over HTTP/2, and what an HTTP/1 reader keeps of a header line):

- a name is ``[0-9a-z_.-]+``; ``grpc-status`` and ``grpc-message`` are not metadata;
- a value (a text metadata value, and every header value sent) is printable ASCII (0x20-0x7E)
  without a space at either end, which a reader would strip; a ``-bin`` value is any bytes;
- a message is any text that is UTF-8 (a lone surrogate is not): it is sent percent-encoded,
  and a message of printable ASCII without ``%`` and edge spaces (the reason codes) as it is.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

from edgeward.gateway import grpc_web_framing as framing

_MODES = 5
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SEXTET = {char: value for value, char in enumerate(_ALPHABET)}
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_NAME = re.compile(r"[0-9a-z_.-]+")
_STATUS_NAMES = ("grpc-status", "grpc-message")


# -- references ---------------------------------------------------------------------------


def reference_unframe(body: bytes) -> bytes | None:
    """The message of a body that is exactly one uncompressed message frame, else None."""
    if len(body) < 5 or body[0] != 0x00 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        return None
    return body[5:]


def reference_decode_text(text: bytes) -> bytes | None:
    """Base64 read four characters at a time, as a client reads a stream: each quantum is four
    alphabet characters, or three and ``=``, or two and ``==``; else None. Bits below the last
    whole byte are dropped (RFC 4648 lets a decoder accept them non-zero)."""
    if len(text) % 4:
        return None
    out = bytearray()
    for at in range(0, len(text), 4):
        quantum = text[at : at + 4]
        digits = quantum.rstrip(b"=")
        pad = 4 - len(digits)
        if pad > 2 or any(char not in _SEXTET for char in digits):
            return None
        bits = 0
        for char in digits:
            bits = bits << 6 | _SEXTET[char]
        out += (bits << 6 * pad).to_bytes(3, "big")[: 3 - pad]
    return bytes(out)


def reference_timeout(value: str) -> float | None:
    """1 to 8 ASCII digits and a unit of ``HMSmun``, around them only whitespace."""
    text = value.strip()
    if not 2 <= len(text) <= 9 or text[-1] not in _UNITS or not all("0" <= c <= "9" for c in text[:-1]):
        return None
    return int(text[:-1]) * _UNITS[text[-1]]


def legal_value(value: str) -> bool:
    """Printable ASCII without a space at either end (empty is legal)."""
    return all(0x20 <= ord(c) <= 0x7E for c in value) and value == value.strip(" ")


def parse_trailer_frame(data: bytes) -> list[tuple[str, str]]:
    """The header lines of one trailer frame, in order, values stripped as an HTTP reader does."""
    assert data[:1] == b"\x80" and int.from_bytes(data[1:5], "big") == len(data) - 5, data
    block = data[5:]
    assert not block or block.endswith(b"\r\n"), block
    lines = block.decode("ascii").split("\r\n")[:-1] if block else []
    pairs = []
    for line in lines:
        name, colon, value = line.partition(":")
        assert colon and name and name == name.strip(), line
        pairs.append((name, value.strip(" \t")))
    return pairs


def percent_decode(value: str) -> str:
    """gRPC's ``grpc-message`` decoding: ``%XX`` is a byte, a ``%`` without two hex digits itself."""
    out = bytearray()
    at = 0
    raw = value.encode("ascii")
    while at < len(raw):
        if raw[at] == 0x25 and re.fullmatch(rb"[0-9A-Fa-f]{2}", raw[at + 1 : at + 3]):
            out.append(int(raw[at + 1 : at + 3], 16))
            at += 3
        else:
            out.append(raw[at])
            at += 1
    return out.decode("utf-8")


# -- the modes ----------------------------------------------------------------------------


def check_unframe(body: bytes) -> None:
    expected = reference_unframe(body)
    try:
        got = framing.unframe(body)
    except framing.FramingError:
        assert expected is None, f"refused one well-formed message frame of {len(expected)} bytes"
        return
    assert type(got) is bytes and got == expected, (got, expected)


def check_decode_text(text: bytes) -> None:
    expected = reference_decode_text(text)
    try:
        got = framing.decode_text(text)
    except framing.FramingError:
        assert expected is None, f"refused base64 that decodes to {expected!r}"
        return
    assert type(got) is bytes and got == expected, (got, expected)
    check_unframe(got)


def chunks_of(data: bytes) -> list[bytes]:
    """Up to 7 leading length bytes cut the rest; the last piece is what is left (maybe empty)."""
    if not data:
        return [b""]
    count = data[0] % 8
    lengths, rest = data[1 : 1 + count], data[1 + count :]
    pieces = []
    for length in lengths:
        pieces.append(rest[:length])
        rest = rest[length:]
    return [*pieces, rest]


def check_chunks(data: bytes) -> None:
    pieces = chunks_of(data)
    text = b"".join(base64.b64encode(piece) for piece in pieces)
    try:
        decoded = framing.decode_text(text)
    except framing.FramingError as exc:
        raise AssertionError(f"refused {len(pieces)} padded chunks: {exc}") from None
    assert decoded == b"".join(pieces), (decoded, pieces)
    for piece in pieces:
        encoded = framing.encode_text(piece)
        assert encoded == base64.b64encode(piece) and len(encoded) == framing.text_length(len(piece)), piece
        assert reference_decode_text(encoded) == piece == framing.decode_text(encoded), piece
        framed = framing.frame(piece)
        assert reference_unframe(framed) == piece == framing.unframe(framed), piece
        assert framing.unframe(framing.decode_text(framing.encode_text(framed))) == piece, piece


def check_timeout(data: bytes) -> None:
    value = data.decode("utf-8", "surrogateescape")
    got = framing.parse_timeout(value)
    expected = reference_timeout(value)
    assert got == expected, (value, got, expected)
    assert got is None or (isinstance(got, float) and math.isfinite(got) and got >= 0), got
    assert framing.parse_timeout(None) is None


def status_input(data: bytes) -> tuple[int, str, list[tuple[str, str | bytes]]]:
    """(code, message, metadata) of mode 4's bytes."""
    code = int.from_bytes(data[:2], "big", signed=True)
    fields = data[2:].split(b"\x00")
    message = fields[0].decode("utf-8", "surrogateescape")
    metadata: list[tuple[str, str | bytes]] = []
    for at in range(1, len(fields), 2):
        name = fields[at].decode("latin-1")
        raw = fields[at + 1] if at + 1 < len(fields) else b""
        metadata.append((name, raw if name.endswith("-bin") else raw.decode("utf-8", "surrogateescape")))
    return code, message, metadata


def check_status(data: bytes) -> None:
    code, message, metadata = status_input(data)
    utf8 = all(not 0xD800 <= ord(c) <= 0xDFFF for c in message)
    legal = utf8 and all(
        _NAME.fullmatch(name) is not None
        and name not in _STATUS_NAMES
        and (isinstance(value, bytes) or legal_value(value))
        for name, value in metadata
    )
    try:
        headers = framing.status_headers(code, message, metadata)
    except ValueError:
        assert not legal, f"refused legal status {code} {message!r} {metadata!r}"
    else:
        assert legal, f"sent what cannot be a header: {message!r} {metadata!r}"
        for name, value in headers:  # the trailers-only answer sends these as HTTP headers
            assert _NAME.fullmatch(name) is not None and legal_value(value), (name, value)
        if message == message.strip(" ") and all(0x20 <= ord(c) <= 0x7E and c != "%" for c in message):
            assert headers[1] == ("grpc-message", message), headers  # no percent-encoding needed
        pairs = parse_trailer_frame(framing.trailer_frame(headers))
        assert pairs == headers, (pairs, headers)
        assert pairs[0] == ("grpc-status", str(code)), pairs
        assert pairs[1][0] == "grpc-message" and percent_decode(pairs[1][1]) == message, (pairs, message)
        assert [name for name, _ in pairs[2:]] == [name for name, _ in metadata], (pairs, metadata)
        for (_, sent), (_, value) in zip(pairs[2:], metadata, strict=True):
            if isinstance(value, bytes):
                assert binascii.a2b_base64(sent, strict_mode=True) == value, (sent, value)
            else:
                assert sent == value, (sent, value)
    lines = [(name, value if isinstance(value, str) else value.decode("latin-1")) for name, value in metadata]
    lines_legal = all(_NAME.fullmatch(name) is not None and legal_value(value) for name, value in lines)
    try:
        block = framing.trailer_frame(lines)
    except ValueError:
        assert not lines_legal, f"refused legal header lines {lines!r}"
    else:
        assert lines_legal, f"wrote what cannot be a header line: {lines!r}"
        assert parse_trailer_frame(block) == lines, (block, lines)


def check(data: bytes) -> None:
    """Raise AssertionError on a finding; any exception the rules do not name goes out as it is."""
    if not data:
        return
    mode, rest = data[0] % _MODES, data[1:]
    (check_unframe, check_decode_text, check_chunks, check_timeout, check_status)[mode](rest)
