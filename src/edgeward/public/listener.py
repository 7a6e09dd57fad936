"""The public auth listener: a checking proxy for the backend's e-mail sign-in endpoints.

Only two routes exist (``PUBLIC_ROUTES``). A request is checked before it costs the backend
anything, in this order (docs/edge-protection.md):

1. the client address is resolved (``edgeward.protection.client_address``; X-Forwarded-For only from
   trusted proxies) and charged to its per-IP limit (429 ``rate_limited``);
2. JSON content type (415), a bounded body (413, answered and the connection closed at once:
   never read past ``max_body_bytes``; 408 ``request_timeout`` when the body does not arrive
   within ``body_timeout_s``), then the
   route's exact fields and their syntax (400 ``invalid_request`` naming the field:
   ``edgeward.public.checks``);
3. the per-e-mail or per-challenge limit (429 ``rate_limited``: ``edgeward.public.limits``).

The backend's answer is passed through as is when it has one of the contract's forms (a JSON
object on 2xx, a stable error on 4xx); anything else, or no answer, becomes
``backend_unavailable`` (503) or ``backend_timeout`` (504), so a client only ever sees
``{"error": {"code", "message"}}`` errors from this listener.

With ``EDGEWARD_CORS_ORIGINS`` set, browser pages of those origins may call the routes
(``edgeward.public.cors``): a preflight from another origin is answered 403 ``origin_not_allowed``.

Every request gets an ``edgeward.access`` line (docs/logging.md) from the outermost middleware:
the path (never the query or the body: the body carries e-mail addresses and login codes), the
peer, the status, the error code of a refusal, and the trace id of a ``traceparent`` header.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from edgeward.protection.client_address import TrustedProxies, client_address
from edgeward.public.checks import PUBLIC_ROUTES, PublicError, PublicRoute, check_body
from edgeward.public.cors import CorsOrigins, CorsPolicy
from edgeward.public.limits import PublicLimits
from edgeward.reasons import Reason, Rejection, stable_error_code
from edgeward.runtime import AccessLog

__all__ = ("PUBLIC_ROUTES", "BodyTooLarge", "PublicBackend", "PublicRoute", "make_public_app", "read_body")

log = logging.getLogger(__name__)
_LOGGED_PATH_CHARS = 128  # a client picks the path of a 404: its line stays short
_CLIENT_GONE = 499  # the status an access line shows when the client left first (nginx's convention)
_CORS_ALLOW_HEADERS = "content-type, traceparent"  # what a login page sends: JSON, and maybe its trace


class PublicBackend(Protocol):
    """What the listener needs of the backend (the gateway's ``BackendClient`` is one)."""

    async def post_public(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST ``body`` to ``path``; the answer's status and body, or ``Rejection`` (backend_timeout or
        backend_unavailable) when there is none."""
        ...


# aiohttp's own 404 and 405 are text; these become the listener's JSON error form.
_ROUTING_ERRORS = {404: "not_found", 405: "method_not_allowed"}


def _json(status: int, body: bytes) -> web.Response:
    resp = web.Response(status=status, body=body, content_type="application/json")
    resp.headers["Cache-Control"] = "no-store"  # answers carry sign-in secrets
    return resp


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, orjson.dumps({"error": {"code": code, "message": message}}))


async def _refusal(request: web.Request, error: PublicError) -> web.Response:
    """The refusal's answer; with ``error.close`` it is sent now and the connection closed after it,
    so the rest of an unwanted body is never read (aiohttp would otherwise read and discard it)."""
    resp = _error(error.status, error.code, error.message)
    if error.retry_after_s is not None:
        resp.headers["Retry-After"] = str(error.retry_after_s)
    if error.close:
        resp.force_close()
        await resp.prepare(request)
        await resp.write_eof()
        request.protocol.force_close()  # closes once the answer is flushed
    return resp


@web.middleware
async def _json_routing_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        code = _ROUTING_ERRORS.get(exc.status)
        if code is None:
            raise
        resp = _error(exc.status, code, exc.reason)
        if "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp


def _cors_refused() -> web.Response:
    return _error(403, "origin_not_allowed", "this origin may not call the public auth API")


def _outcome(status: int, body: bytes | None) -> str:
    """ok for 2xx and 3xx, else the answer's stable error code (short and plain, or just "error")."""
    if status < 400:
        return "ok"
    code = stable_error_code(body) if body else None
    return code if code and len(code) <= 64 and code.isascii() and code.isprintable() else "error"


def _trace_id(traceparent: str | None) -> str:
    """The trace id of a W3C ``traceparent`` header (``00-<32 hex>-<16 hex>-<2 hex>``), or ""."""
    if traceparent is None or len(traceparent) != 55 or traceparent[2] != "-" or traceparent[35] != "-":
        return ""
    trace_id = traceparent[3:35].lower()
    return trace_id if all(c in "0123456789abcdef" for c in trace_id) else ""


def _access_middleware(access: AccessLog) -> Middleware:
    """The outermost middleware: one access line per request, whatever answered it."""

    @web.middleware
    async def log_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status, outcome = 500, "internal_error"
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            status, outcome = exc.status, _outcome(exc.status, None)
            raise
        except asyncio.CancelledError:
            status, outcome = _CLIENT_GONE, "cancelled"
            raise
        else:
            status = resp.status
            body = resp.body if isinstance(resp, web.Response) else None
            outcome = _outcome(status, body if isinstance(body, bytes) else None)
            return resp
        finally:
            if access.wants(accepted=status < 400):
                access.write(
                    f"{request.method} {request.path[:_LOGGED_PATH_CHARS]}",
                    outcome,
                    {
                        "peer": request.remote,
                        "http_status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                        "trace_id": _trace_id(request.headers.get("traceparent")),
                    },
                )

    return log_access


class BodyTooLarge(Exception):
    """A request body over its listener's limit (``read_body`` read no more than the chunk that crossed it)."""


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body, at most ``limit`` bytes, all within ``timeout_s``; else ``BodyTooLarge`` or ``TimeoutError``.

    Shared by the browser-facing listeners (this one and gRPC-Web): a declared length over the
    limit is refused before a byte is read, and nothing past the chunk that crossed it is read.
    """
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    body = bytearray()
    async with asyncio.timeout(timeout_s):
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge
    return bytes(body)


async def _read_bounded(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body; ``PublicError`` 413 when it is over ``limit``, 408 when it has not all arrived within ``timeout_s``."""
    try:
        return await read_body(request, limit, timeout_s)
    except BodyTooLarge:
        raise PublicError(413, "request_too_large", f"the body is over {limit} bytes", close=True) from None
    except TimeoutError:
        message = f"the body did not arrive within {timeout_s:g} s"
        raise PublicError(408, "request_timeout", message, close=True) from None


def _pass_through(status: int, body: bytes) -> bool:
    """Whether an answer has a contract form: a JSON object on 2xx, a stable JSON error on 4xx."""
    if 400 <= status < 500:
        return stable_error_code(body) is not None
    if not 200 <= status < 300:
        return False
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


def make_public_app(
    backend: PublicBackend,
    *,
    max_body_bytes: int,
    limits: PublicLimits | None = None,
    trusted_proxies: TrustedProxies | None = None,
    refused: Counter[str] | None = None,
    body_timeout_s: float = 10.0,
    access_log: AccessLog | None = None,
    cors: CorsOrigins | None = None,
) -> web.Application:
    """The public listener's application; ``backend`` must be started by the caller.

    Without ``limits`` nothing is rate limited; without ``trusted_proxies`` the client address
    is always the peer. ``refused`` counts the gateway's own refusals by error code (metrics).
    ``access_log`` defaults to one line per request, none sampled out. ``cors``: the origins whose
    browser pages may call the routes (``edgeward.public.cors``); none by default.
    """
    public_limits = limits or PublicLimits()
    trusted = trusted_proxies or TrustedProxies()
    refusals = Counter[str]() if refused is None else refused

    def proxy(route: PublicRoute) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            client_ip = client_address(request.remote, request.headers.getall("X-Forwarded-For", ()), trusted)
            try:
                await public_limits.admit_ip(route.name, client_ip)
                if request.content_type != "application/json":
                    raise PublicError(415, "unsupported_media_type", "Content-Type must be application/json")
                body = await _read_bounded(request, max_body_bytes, body_timeout_s)
                classified = check_body(route, body, client_ip)
                await public_limits.admit(classified)
            except PublicError as error:
                refusals[error.code] += 1
                return await _refusal(request, error)
            # The backend learns the client address as resolved here, never a client's own claim.
            headers = {"Content-Type": "application/json", "X-Forwarded-For": client_ip}
            try:
                status, answer = await backend.post_public(route.path, body, headers)
            except Rejection as rejection:
                if rejection.reason is Reason.BACKEND_TIMEOUT:
                    return _error(504, "backend_timeout", "the backend did not answer in time")
                return _error(503, "backend_unavailable", "the backend is unavailable")
            if not _pass_through(status, answer):
                log.warning(
                    "backend_unavailable: public %s: HTTP %d without a contract answer", route.path, status
                )
                return _error(503, "backend_unavailable", "the backend is unavailable")
            return _json(status, answer)

        return handle

    middlewares = [_access_middleware(access_log or AccessLog()), _json_routing_errors]
    policy = None
    if cors:
        policy = CorsPolicy(cors, allow_headers=_CORS_ALLOW_HEADERS, refused=_cors_refused)
        middlewares.insert(1, policy.preflight)  # logged like any request, answered before routing's 405
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    if policy is not None:
        policy.install(app)
    for route in PUBLIC_ROUTES:
        app.router.add_post(route.path, proxy(route))
    return app
