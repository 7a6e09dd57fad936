"""The gRPC-Web wire format (docs/grpc-web.md): frames, trailers, text mode, ``grpc-timeout``.

Pure functions, no I/O. A body is a sequence of frames: one flag byte, a 4-byte big-endian
length, then that many bytes. Flag 0x00 is a message, 0x80 the trailer frame, whose payload is
HTTP/1-style header lines (``name: value\\r\\n``); bit 0x01 would mean a compressed frame, which
this gateway neither sends nor accepts. In text mode (``application/grpc-web-text``) the body is
base64: the gateway encodes every chunk it writes on its own, padded, so a client can decode a
stream as it arrives, and it decodes a request made of such chunks too.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

__all__ = (
    "BINARY_TYPES",
    "FRAME_HEADER_BYTES",
    "TEXT_TYPES",
    "FramingError",
    "decode_text",
    "encode_text",
    "frame",
    "parse_timeout",
    "status_headers",
    "text_length",
    "trailer_frame",
    "unframe",
)

BINARY_TYPES = frozenset({"application/grpc-web", "application/grpc-web+proto"})
TEXT_TYPES = frozenset({"application/grpc-web-text", "application/grpc-web-text+proto"})
FRAME_HEADER_BYTES = 5  # flag byte + 4-byte length
_MESSAGE = 0x00
_COMPRESSED = 0x01
_TRAILER = 0x80
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")  # gRPC over HTTP/2: at most 8 digits and a unit
_TIMEOUT_UNIT_S = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_HEADER_NAME = re.compile(r"[0-9a-z_.-]+")  # gRPC's Header-Name
# A header value: printable ASCII, no space at either end (a reader strips it). No CR or LF: a
# value that could end its line would write header lines of its own (a forged grpc-status).
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")
# A grpc-message sent as it is: what gRPC's percent-encoding leaves alone (no "%"), no edge space.
_PLAIN_MESSAGE = re.compile(r"(?:[\x21-\x24\x26-\x7e](?:[\x20-\x24\x26-\x7e]*[\x21-\x24\x26-\x7e])?)?")
_STATUS_NAMES = frozenset({"grpc-status", "grpc-message"})


class FramingError(ValueError):
    """A request body that is not exactly one uncompressed message frame; the text says what is wrong."""


def unframe(body: bytes) -> bytes:
    """The message of a unary request body: exactly one frame, flag 0x00, its length exact."""
    if len(body) < FRAME_HEADER_BYTES:
        raise FramingError("the body is shorter than a frame header")
    flag, length = body[0], int.from_bytes(body[1:FRAME_HEADER_BYTES], "big")
    if flag & _COMPRESSED:
        raise FramingError("compressed frames are not supported (send grpc-encoding identity)")
    if flag != _MESSAGE:
        raise FramingError(f"the first frame is not a message (flag 0x{flag:02x})")
    if length != len(body) - FRAME_HEADER_BYTES:
        raise FramingError("the body is not exactly one message frame")
    return body[FRAME_HEADER_BYTES:]


def frame(message: bytes) -> bytes:
    """One message frame."""
    return bytes((_MESSAGE,)) + len(message).to_bytes(4, "big") + message


def status_headers(
    code: int, message: str, metadata: Iterable[tuple[str, str | bytes]] = ()
) -> list[tuple[str, str]]:
    """The status as header pairs: ``grpc-status``, ``grpc-message``, then ``metadata``.

    ``message`` is percent-encoded as gRPC's ``grpc-message`` is (UTF-8; bytes outside printable
    ASCII, ``%`` and a space at either end as ``%XX``), so no text can break out of its header
    line. The gateway's messages, reason codes of docs/protocol.md (``[a-z_]``) and gRPC's own
    texts, need no encoding and are sent as they are. A ``-bin`` value is standard base64 with
    padding, which browsers' ``atob`` reads as is (gRPC readers accept it padded or not).
    ``ValueError`` for a message that is not UTF-8 text (a lone surrogate), a metadata name that
    is not gRPC's (``[0-9a-z_.-]+``) or is ``grpc-status``/``grpc-message``, and a text value that
    is not printable ASCII without edge spaces.
    """
    pairs = [("grpc-status", str(code)), ("grpc-message", _percent_encode(message))]
    for name, value in metadata:
        text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
        _check_header(name, text)
        if name in _STATUS_NAMES:
            raise ValueError(f"{name} is the status, not metadata")
        pairs.append((name, text))
    return pairs


def trailer_frame(headers: Iterable[tuple[str, str]]) -> bytes:
    """The trailer frame of ``headers`` (``status_headers``): ``name: value\\r\\n`` lines.

    ``ValueError`` for a name or value that is not a header's (``status_headers`` says which).
    """
    lines = []
    for name, value in headers:
        _check_header(name, value)
        lines.append(f"{name}: {value}\r\n")
    block = "".join(lines).encode("ascii")
    return bytes((_TRAILER,)) + len(block).to_bytes(4, "big") + block


def _check_header(name: str, value: str) -> None:
    if _HEADER_NAME.fullmatch(name) is None:
        raise ValueError(f"not a gRPC header name: {name!r}")
    if _HEADER_VALUE.fullmatch(value) is None:
        raise ValueError(f"not a header value (printable ASCII, no edge space) of {name}: {value!r}")


def _percent_encode(message: str) -> str:
    if _PLAIN_MESSAGE.fullmatch(message) is not None:
        return message
    try:
        raw = message.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("grpc-message is not UTF-8 text (a lone surrogate)") from None
    last = len(raw) - 1
    return "".join(
        chr(byte) if (0x20 < byte < 0x7F and byte != 0x25) or (byte == 0x20 and 0 < at < last) else f"%{byte:02X}"
        for at, byte in enumerate(raw)
    )


def encode_text(chunk: bytes) -> bytes:
    """One chunk of a text-mode body: its base64, padded, decodable on its own."""
    return base64.b64encode(chunk)


def decode_text(data: bytes) -> bytes:
    """A text-mode request body: base64, possibly several padded chunks one after the other.

    Each chunk ends at its padding; a chunk that is not whole quanta of four characters of the
    standard alphabet is a ``FramingError``. CPython's strict mode takes padding after a whole
    quantum (``AAAA=``, ``AAAA====``) and ignores it, so a chunk's length and its run of padding
    (at most two) are checked here first.
    """
    out = bytearray()
    start, end = 0, len(data)
    while start < end:
        stop = data.find(b"=", start)
        stop = end if stop < 0 else stop + 1
        while stop < end and data[stop] == 0x3D:  # ord("=") == 0x3D: a second padding character
            stop += 1
        chunk = data[start:stop]
        if len(chunk) % 4 or chunk.endswith(b"==="):
            raise FramingError("the text-mode body is not base64")
        try:
            out += binascii.a2b_base64(chunk, strict_mode=True)
        except binascii.Error:
            raise FramingError("the text-mode body is not base64") from None
        start = stop
    return bytes(out)


def text_length(binary_bytes: int) -> int:
    """The base64 length of ``binary_bytes`` bytes encoded in one chunk (a request body's bound)."""
    return 4 * -(-binary_bytes // 3)


def parse_timeout(value: str | None) -> float | None:
    """Seconds of a ``grpc-timeout`` header (``100m``, ``5S``); None when absent or malformed."""
    if value is None:
        return None
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        return None
    return int(match[1]) * _TIMEOUT_UNIT_S[match[2]]
