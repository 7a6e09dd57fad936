"""A small gRPC-Web client over aiohttp, written from the wire format of docs/grpc-web.md.

It shares no code with the gateway's framing module, so a test with it checks the wire format
itself. Text mode is decoded four characters at a time: every quantum of base64 decodes on its
own, so the chunks the gateway pads one by one are read in whatever pieces the socket gives them.
Every read is bounded (``WAIT_S``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
from collections.abc import Mapping

import aiohttp
import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from multidict import CIMultiDictProxy

from edgeward.client import GatewayError, error_from_status

__all__ = (
    "BINARY", "TEXT", "WAIT_S", "GrpcWebClient", "RawEnd", "RawWebStream", "WebAnswer", "WebStream", "web_frame",
)

BINARY = "application/grpc-web+proto"
TEXT = "application/grpc-web-text"
WAIT_S = 30.0
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def web_frame(message: bytes, flag: int = 0) -> bytes:
    return bytes((flag,)) + len(message).to_bytes(4, "big") + message


def _parse_trailers(block: bytes) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in block.decode("ascii").split("\r\n") if line)
    return {name.strip().lower(): value.strip() for name, value in pairs}


def gateway_error(status: Mapping[str, str]) -> GatewayError:
    """The gateway's error from status headers (trailers-only) or a trailer frame, as the SDK reads gRPC's."""
    code = _CODES[int(status["grpc-status"])]
    reason = status.get("grpc-message", "")
    details, parsed = status.get("grpc-status-details-bin"), None
    if details is not None:
        try:
            parsed = status_pb2.Status.FromString(base64.b64decode(details + "=" * (-len(details) % 4)))
        except DecodeError:
            parsed = status_pb2.Status()
        assert parsed.code == code.value[0] and parsed.message == reason
    return error_from_status(code, reason, parsed)


@dataclasses.dataclass
class WebAnswer:
    """A whole answer: the HTTP status and headers, the messages, and the trailer frame (None: trailers-only)."""

    http_status: int
    headers: CIMultiDictProxy[str]
    body: bytes  # as received (base64 in text mode)
    messages: list[bytes]
    trailers: dict[str, str] | None

    @property
    def trailers_only(self) -> bool:
        return self.trailers is None and not self.body

    def status(self) -> Mapping[str, str]:
        """Where the status is: the trailer frame, or the headers of a trailers-only answer."""
        if self.trailers is not None:
            return self.trailers
        return {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("grpc-")}

    def error(self) -> GatewayError:
        return gateway_error(self.status())


class _Frames:
    """Frames out of a body read in pieces, decoding text mode as it comes."""

    def __init__(self, content: aiohttp.StreamReader, text: bool) -> None:
        self._content = content
        self._text = text
        self._pending = b""  # text not yet decoded (fewer than four characters)
        self._data = b""
        self.raw = bytearray()

    async def _more(self) -> bool:
        chunk = await asyncio.wait_for(self._content.readany(), WAIT_S)
        if not chunk:
            return False
        self.raw += chunk
        if not self._text:
            self._data += chunk
            return True
        self._pending += chunk
        whole = len(self._pending) // 4 * 4
        quanta, self._pending = self._pending[:whole], self._pending[whole:]
        self._data += b"".join(base64.b64decode(quanta[i : i + 4]) for i in range(0, whole, 4))
        return True

    async def next(self) -> tuple[int, bytes] | None:
        """The next (flag, payload); None at a clean end of the body."""
        while len(self._data) < 5 or len(self._data) < 5 + int.from_bytes(self._data[1:5], "big"):
            if not await self._more():
                assert not self._data and not self._pending, "the body ended inside a frame"
                return None
        length = int.from_bytes(self._data[1:5], "big")
        flag, payload = self._data[0], self._data[5 : 5 + length]
        self._data = self._data[5 + length :]
        return flag, payload


class WebStream:
    """An open server-streaming call: read message by message, then its trailers."""

    def __init__(self, response: aiohttp.ClientResponse, text: bool) -> None:
        self.response = response
        self._frames = _Frames(response.content, text)

    async def message(self) -> bytes:
        got = await self._frames.next()
        assert got is not None, "the stream ended without a trailer frame"
        flag, payload = got
        assert flag == 0x00, f"expected a message, got the trailer frame {_parse_trailers(payload)}"
        return payload

    async def end(self) -> GatewayError:
        """Read until the trailer frame; the error it carries (fails on OK)."""
        while (got := await self._frames.next()) is not None:
            flag, payload = got
            if flag == 0x80:
                assert await self._frames.next() is None, "data after the trailer frame"
                return gateway_error(_parse_trailers(payload))
        raise AssertionError("the stream ended without a trailer frame")

    async def refused(self) -> GatewayError:
        """The error of a call refused before any message: trailers-only, an empty body."""
        assert self.response.status == 200 and await self._frames.next() is None
        return gateway_error({k.lower(): v for k, v in self.response.headers.items() if k.lower().startswith("grpc-")})

    def close(self) -> None:
        """Leave: close the connection."""
        self.response.close()


class GrpcWebClient:
    """Calls to one gRPC-Web listener in one mode (``BINARY`` or ``TEXT``)."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, content_type: str = BINARY) -> None:
        self.http = http
        self.base_url = base_url
        self.content_type = content_type
        self.text = content_type.startswith("application/grpc-web-text")

    def body(self, message: bytes) -> bytes:
        framed = web_frame(message)
        return base64.b64encode(framed) if self.text else framed

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"Content-Type": self.content_type, "X-Grpc-Web": "1", **(extra or {})}

    async def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> WebAnswer:
        """POST ``body`` as it is (already framed and encoded) and read the whole answer."""
        async with self.http.post(
            self.base_url + path, data=body, headers=self.headers(headers), timeout=aiohttp.ClientTimeout(WAIT_S)
        ) as resp:
            frames = _Frames(resp.content, self.text)
            messages: list[bytes] = []
            trailers = None
            while (got := await frames.next()) is not None:
                flag, payload = got
                if flag == 0x80:
                    trailers = _parse_trailers(payload)
                else:
                    assert trailers is None, "a message after the trailer frame"
                    messages.append(payload)
            return WebAnswer(resp.status, resp.headers, bytes(frames.raw), messages, trailers)

    async def unary(self, path: str, message: bytes, headers: Mapping[str, str] | None = None) -> WebAnswer:
        return await self.post(path, self.body(message), headers)

    async def stream(self, path: str, message: bytes) -> WebStream:
        """Open a server-streaming call; the caller reads it and closes it."""
        resp = await self.http.post(
            self.base_url + path, data=self.body(message), headers=self.headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=WAIT_S),
        )
        return WebStream(resp, self.text)


@dataclasses.dataclass
class RawEnd:
    """How a ``RawWebStream`` ended: its frames from where reading stopped, and how the body ended."""

    frames: list[tuple[int, bytes]]
    complete: bool  # the chunked body's last chunk arrived: the answer ended as HTTP says it should
    reset: bool  # the connection was reset (ECONNRESET) rather than closed

    def trailers(self) -> dict[str, str] | None:
        """The trailer frame, if it arrived (it is the last frame)."""
        if self.frames and self.frames[-1][0] == 0x80:
            return _parse_trailers(self.frames[-1][1])
        return None

    def messages(self) -> list[bytes]:
        return [payload for flag, payload in self.frames if flag == 0x00]


class RawWebStream:
    """A server-streaming call over a plain socket that reads only when asked, with a small receive buffer.

    For a client that stops reading: nothing drains the socket behind the test's back (aiohttp and
    asyncio's streams read ahead into buffers of their own), and the small ``SO_RCVBUF``, set before
    connecting, keeps the TCP window small, so the gateway's writes block after a bounded amount.
    HTTP/1.1 with a chunked answer, as the gateway writes a stream; every read is bounded (``WAIT_S``).
    """

    def __init__(self, sock: socket.socket, text: bool) -> None:
        self._sock = sock
        self._text = text
        self._raw = b""  # received, not yet parsed (the head, then the chunked body)
        self._pending = b""  # text-mode body not yet decoded (fewer than four characters)
        self._data = b""  # body bytes not yet cut into frames
        self._complete = False
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(
        cls, port: int, path: str, message: bytes, content_type: str = BINARY, receive_buffer: int = 4096
    ) -> RawWebStream:
        """POST ``message`` framed (and base64 in text mode) to ``127.0.0.1:port``; read the answer's head."""
        text = content_type.startswith("application/grpc-web-text")
        framed = web_frame(message)
        body = base64.b64encode(framed) if text else framed
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        stream = cls(sock, text)
        try:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), WAIT_S)
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
                f"X-Grpc-Web: 1\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            await asyncio.wait_for(loop.sock_sendall(sock, head.encode("ascii") + body), WAIT_S)
            await stream._read_head()
        except BaseException:
            sock.close()
            raise
        return stream

    async def _recv(self) -> bytes:
        """The next bytes; b"" at the end of the connection; raises ``ConnectionResetError`` on a reset."""
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self._sock, 1 << 16), WAIT_S)

    async def _read_head(self) -> None:
        while b"\r\n\r\n" not in self._raw:
            chunk = await self._recv()
            assert chunk, f"the connection closed before the answer's head: {self._raw!r}"
            self._raw += chunk
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        assert self.headers.get("transfer-encoding") == "chunked", self.headers

    def _unchunk(self) -> None:
        """Move the whole chunks received so far into the body (decoded in text mode)."""
        while not self._complete and b"\r\n" in self._raw:
            size_line, rest = self._raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            assert rest[size : size + 2] == b"\r\n", "a chunk without its CRLF"
            chunk, self._raw = rest[:size], rest[size + 2 :]
            if size == 0:
                self._complete = True
                return
            if not self._text:
                self._data += chunk
                continue
            self._pending += chunk
            whole = len(self._pending) // 4 * 4
            quanta, self._pending = self._pending[:whole], self._pending[whole:]
            self._data += b"".join(base64.b64decode(quanta[i : i + 4]) for i in range(0, whole, 4))

    def _frame(self) -> tuple[int, bytes] | None:
        """The next whole frame of the body received so far, or None."""
        if len(self._data) < 5 or len(self._data) < 5 + int.from_bytes(self._data[1:5], "big"):
            return None
        length = int.from_bytes(self._data[1:5], "big")
        flag, payload = self._data[0], self._data[5 : 5 + length]
        self._data = self._data[5 + length :]
        return flag, payload

    async def message(self) -> bytes:
        """Read until the next frame, which must be a message; its payload."""
        self._unchunk()  # the head's read may have brought chunks with it
        while (got := self._frame()) is None:
            assert not self._complete, "the body ended before the next message"
            chunk = await self._recv()
            assert chunk, "the connection closed before the next message"
            self._raw += chunk
            self._unchunk()
        flag, payload = got
        assert flag == 0x00, f"expected a message, got the trailer frame {_parse_trailers(payload)}"
        return payload

    async def read_to_end(self) -> RawEnd:
        """Read until the body's last chunk, or the end of the connection; what arrived."""
        reset = False
        self._unchunk()
        while not self._complete:
            try:
                chunk = await self._recv()
            except ConnectionResetError:
                reset = True
                break
            if not chunk:
                break
            self._raw += chunk
            self._unchunk()
        frames = []
        while (got := self._frame()) is not None:
            frames.append(got)
        return RawEnd(frames, self._complete, reset)

    def close(self) -> None:
        self._sock.close()
