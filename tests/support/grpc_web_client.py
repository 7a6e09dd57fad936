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
from collections.abc import Mapping

import aiohttp
import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from multidict import CIMultiDictProxy

from edgeward.client import GatewayError, error_from_status

__all__ = ("BINARY", "TEXT", "WAIT_S", "GrpcWebClient", "WebAnswer", "WebStream", "web_frame")

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
