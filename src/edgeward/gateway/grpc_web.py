"""The gRPC-Web listener: ExecuteCommand and SubscribeEvents for browsers (docs/grpc-web.md).

A browser cannot speak gRPC (it has no HTTP/2 trailers to read), so this listener speaks gRPC-Web
over HTTP/1.1: one POST per call, the request as one message frame, the answer as message frames
and a trailer frame carrying the status (``gateway/grpc_web_framing.py``). Behind the framing it is
the gRPC service itself: ``GatewayService.execute`` and ``open_subscription`` are the same path
into the pipeline, with the same verification, counting, access line, drain and shutdown cut.

- Modes: ``application/grpc-web[+proto]`` (binary) and ``application/grpc-web-text[+proto]``
  (base64, each written chunk encoded on its own); the answer has the request's content type;
  any other content type is 415.
- A request body is read within ``EDGEWARD_HTTP_BODY_TIMEOUT_MS`` (else 408 and the connection
  closed), and never past gRPC's own receive limit (``max_message_bytes``, payload limit plus
  envelope room): a larger body is answered RESOURCE_EXHAUSTED ``payload_too_large``, as gRPC
  refuses such a message, and the connection is closed without reading the rest.
- A body that is not exactly one uncompressed message frame is INVALID_ARGUMENT
  ``invalid_envelope`` with ErrorInfo ``field=message``, like bytes that are not a message.
- A call refused before any message (every ExecuteCommand refusal, a refused subscription) is
  answered "trailers-only": HTTP 200, the status in the headers, an empty body. Otherwise the
  status is the trailer frame, with ``edgeward-replayed: 1`` for a kept answer served again.
- ``grpc-timeout`` bounds an ExecuteCommand (at most ``MAX_TIMEOUT_S``): past it the answer is
  DEADLINE_EXCEEDED, and the command goes on for the client's retry as when a gRPC client leaves.
  SubscribeEvents ignores it: a stream lasts until the hub ends it or the client leaves.
- A stream's events are written as they come; the stream ends with the hub's reason
  (``session_revoked``, ``slow_consumer``, ``shutting_down``) in the trailer frame. A client that
  disconnects cancels its handler (aiohttp's handler cancellation is on for this listener), which
  closes its subscriber. The connection guard's timers are off while a request is handled, so the
  HTTP idle timeout never cuts a live stream.
- The client address is the peer's, or ``X-Forwarded-For`` from a trusted proxy, as on the
  public listener (``EDGEWARD_TRUSTED_PROXIES``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import grpc
from aiohttp import web

from edgeward.gateway.grpc_service import (
    GRPC_WEB,
    INTERNAL_ERROR,
    REPLAYED_METADATA,
    SERVICE_NAME,
    GatewayService,
    InternalError,
)
from edgeward.gateway.grpc_web_framing import (
    BINARY_TYPES,
    FRAME_HEADER_BYTES,
    TEXT_TYPES,
    FramingError,
    decode_text,
    encode_text,
    frame,
    parse_timeout,
    status_headers,
    text_length,
    trailer_frame,
    unframe,
)
from edgeward.protection.client_address import TrustedProxies, client_address
from edgeward.public.cors import CorsOrigins, CorsPolicy
from edgeward.public.listener import BodyTooLarge, read_body
from edgeward.reasons import Reason, Rejection
from edgeward.rpc_errors import trailers_for

__all__ = ("EXECUTE_PATH", "MAX_TIMEOUT_S", "SUBSCRIBE_PATH", "make_grpc_web_app")

EXECUTE_PATH = f"/{SERVICE_NAME}/ExecuteCommand"
SUBSCRIBE_PATH = f"/{SERVICE_NAME}/SubscribeEvents"
# A client's deadline longer than this is taken as this: the backend timeout ends a command long before.
MAX_TIMEOUT_S = 600.0
# How long the trailer frame of an ended stream may take to leave; a client that stopped reading
# (slow_consumer) then has its connection closed rather than holding the handler.
_END_WRITE_TIMEOUT_S = 5.0
_CORS_ALLOW_HEADERS = "content-type, x-grpc-web, x-user-agent, grpc-timeout, traceparent"
_CORS_EXPOSE_HEADERS = "grpc-status, grpc-message, grpc-status-details-bin, edgeward-replayed"
_DEADLINE_EXCEEDED = "Deadline Exceeded"  # gRPC's own text: the client's deadline, not a gateway reason


class _Answered(Exception):
    """The call was answered before the pipeline (a refusal of its body): return ``response``."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response


def _peer(request: web.Request) -> str:
    """The TCP peer in gRPC's form (``ipv4:1.2.3.4:5``), so access lines of both transports read alike."""
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
    return str(request.remote)


def _mode(request: web.Request) -> bool:
    """Whether the call is in text mode; 415 for a content type that is not gRPC-Web's."""
    if request.content_type in BINARY_TYPES:
        return False
    if request.content_type in TEXT_TYPES:
        return True
    raise web.HTTPUnsupportedMediaType(
        text="Content-Type must be application/grpc-web(+proto) or application/grpc-web-text(+proto)\n"
    )


def _trailers_only(
    request: web.Request, code: grpc.StatusCode, message: str, metadata: Iterable[tuple[str, str | bytes]] = ()
) -> web.Response:
    """A call refused before any message: HTTP 200, the status in the headers, an empty body."""
    resp = web.Response(status=200, content_type=request.content_type)
    for name, value in status_headers(code.value[0], message, metadata):
        resp.headers[name] = value
    return resp


def _rejected(request: web.Request, rejection: Rejection) -> web.Response:
    return _trailers_only(request, rejection.reason.code, rejection.reason.wire, trailers_for(rejection))


class _GrpcWeb:
    def __init__(
        self, service: GatewayService, max_message_bytes: int, body_timeout_s: float, trusted: TrustedProxies
    ) -> None:
        self._service = service
        self._max_body = max_message_bytes + FRAME_HEADER_BYTES
        self._body_timeout_s = body_timeout_s
        self._trusted = trusted

    async def execute(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        text = _mode(request)
        peer = _peer(request)
        try:
            message = await self._message(request, text, "ExecuteCommand", peer, started)
        except _Answered as answered:
            return answered.response
        timeout_s = parse_timeout(request.headers.get("grpc-timeout"))
        try:
            async with asyncio.timeout(None if timeout_s is None else min(timeout_s, MAX_TIMEOUT_S)):
                response, replayed = await self._service.execute(message, self._client_ip(request), peer, GRPC_WEB)
        except Rejection as rejection:
            return _rejected(request, rejection)
        except InternalError:
            return _trailers_only(request, grpc.StatusCode.INTERNAL, INTERNAL_ERROR)
        except TimeoutError:  # counted "cancelled", as a gRPC call whose client's deadline passed
            return _trailers_only(request, grpc.StatusCode.DEADLINE_EXCEEDED, _DEADLINE_EXCEEDED)
        end = trailer_frame(status_headers(0, "", REPLAYED_METADATA if replayed else ()))
        body = encode_text(frame(response)) + encode_text(end) if text else frame(response) + end
        return web.Response(body=body, content_type=request.content_type)

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        text = _mode(request)
        peer = _peer(request)
        try:
            message = await self._message(request, text, "SubscribeEvents", peer, started)
        except _Answered as answered:
            return answered.response
        try:
            subscriber, greeting = await self._service.open_subscription(
                message, self._client_ip(request), peer, GRPC_WEB
            )
        except Rejection as rejection:
            return _rejected(request, rejection)
        except InternalError:
            return _trailers_only(request, grpc.StatusCode.INTERNAL, INTERNAL_ERROR)
        resp = web.StreamResponse(status=200)
        resp.content_type = request.content_type

        async def write(event: bytes) -> None:
            # Shielded: the hub ends a stalled stream by cancelling this task, and aiohttp waits for
            # a slow client on one drain future per connection, awaited as it is: cancelled, every
            # later write of the connection would fail at once, the trailer's bounded wait included,
            # and aiohttp's close would then wait forever to flush. A task per event, gRPC-Web only.
            await asyncio.shield(resp.write(encode_text(frame(event)) if text else frame(event)))

        try:
            await resp.prepare(request)
            try:
                await subscriber.pump(write, greeting)
            except Rejection as rejection:  # the hub ended the stream: its reason is the final status
                end = trailer_frame(
                    status_headers(rejection.reason.code.value[0], rejection.reason.wire, trailers_for(rejection))
                )
            try:
                async with asyncio.timeout(_END_WRITE_TIMEOUT_S):
                    await resp.write(encode_text(end) if text else end)
                    await resp.write_eof()
            except TimeoutError:  # the client stopped reading: nothing more can reach it
                if request.transport is not None:
                    request.transport.abort()
        except ConnectionError:  # the client left while an event was being written
            pass
        finally:
            subscriber.close()
        return resp

    async def _message(self, request: web.Request, text: bool, method: str, peer: str, started: float) -> bytes:
        """The request message: the body read within its bounds, decoded and unframed."""
        limit = text_length(self._max_body) if text else self._max_body
        try:
            body = await read_body(request, limit, self._body_timeout_s)
        except BodyTooLarge:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED  # what gRPC answers a message over its limit
            self._service.refused(method, peer, GRPC_WEB, Reason.PAYLOAD_TOO_LARGE.wire, code, started)
            resp = _trailers_only(request, code, Reason.PAYLOAD_TOO_LARGE.wire)
            resp.force_close()
            await resp.prepare(request)
            await resp.write_eof()
            request.protocol.force_close()  # the rest of the body is never read
            raise _Answered(resp) from None
        except TimeoutError:
            resp = web.Response(status=408, text=f"the body did not arrive within {self._body_timeout_s:g} s\n")
            resp.force_close()
            raise _Answered(resp) from None
        try:
            return unframe(decode_text(body) if text else body)
        except FramingError as exc:
            rejection = Rejection(Reason.INVALID_ENVELOPE, str(exc), metadata={"field": "message"})
            self._service.refused(method, peer, GRPC_WEB, rejection.reason.wire, rejection.reason.code, started)
            raise _Answered(_rejected(request, rejection)) from None

    def _client_ip(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers.getall("X-Forwarded-For", ()), self._trusted)


def _cors_refused() -> web.Response:
    return web.Response(status=403, text="this origin may not call the gRPC-Web listener\n")


def make_grpc_web_app(
    service: GatewayService,
    *,
    max_message_bytes: int,
    body_timeout_s: float,
    trusted_proxies: TrustedProxies | None = None,
    cors: CorsOrigins | None = None,
) -> web.Application:
    """The gRPC-Web listener's application over ``service`` (the gateway's gRPC service).

    ``max_message_bytes``: the largest request message, gRPC's own receive limit. Serve it with
    aiohttp's handler cancellation on, so a client that disconnects ends its stream at once.
    """
    handlers = _GrpcWeb(service, max_message_bytes, body_timeout_s, trusted_proxies or TrustedProxies())
    policy = None
    if cors:
        policy = CorsPolicy(
            cors, allow_headers=_CORS_ALLOW_HEADERS, expose_headers=_CORS_EXPOSE_HEADERS, refused=_cors_refused
        )
    app = web.Application(middlewares=[policy.preflight] if policy is not None else [])
    if policy is not None:
        policy.install(app)
    app.router.add_post(EXECUTE_PATH, handlers.execute)
    app.router.add_post(SUBSCRIBE_PATH, handlers.subscribe)
    return app
