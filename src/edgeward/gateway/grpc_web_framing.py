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

    ``message`` is a reason code of docs/protocol.md (``[a-z_]``), which needs no percent-encoding.
    A ``-bin`` value is standard base64 with padding, which browsers' ``atob`` reads as is (gRPC
    readers accept it padded or not).
    """
    pairs = [("grpc-status", str(code)), ("grpc-message", message)]
    for name, value in metadata:
        pairs.append((name, base64.b64encode(value).decode() if isinstance(value, bytes) else value))
    return pairs


def trailer_frame(headers: Iterable[tuple[str, str]]) -> bytes:
    """The trailer frame of ``headers`` (``status_headers``): ``name: value\\r\\n`` lines."""
    block = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("ascii")
    return bytes((_TRAILER,)) + len(block).to_bytes(4, "big") + block


def encode_text(chunk: bytes) -> bytes:
    """One chunk of a text-mode body: its base64, padded, decodable on its own."""
    return base64.b64encode(chunk)


def decode_text(data: bytes) -> bytes:
    """A text-mode request body: base64, possibly several padded chunks one after the other.

    Each chunk ends at its padding; a chunk that is not whole quanta of four characters of the
    standard alphabet is a ``FramingError``.
    """
    out = bytearray()
    start, end = 0, len(data)
    while start < end:
        stop = data.find(b"=", start)
        stop = end if stop < 0 else stop + 1
        while stop < end and data[stop] == 0x3D:  # ord("=") == 0x3D: a second padding character
            stop += 1
        try:
            out += binascii.a2b_base64(data[start:stop], strict_mode=True)
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
