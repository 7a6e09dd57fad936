"""The public auth listener: a checking proxy for the backend's e-mail sign-in endpoints.

Only two routes exist (``PUBLIC_ROUTES``). A request is checked before it costs the backend
anything: JSON content type, a bounded body (never read past ``max_body_bytes``), a JSON object
with exactly the route's fields, all strings. The backend's answer is passed through as is when
it has one of the contract's forms (a JSON object on 2xx, a stable error on 4xx); anything else,
or no answer, becomes ``backend_unavailable`` (503) or ``backend_timeout`` (504), so a client
only ever sees ``{"error": {"code", "message"}}`` errors from this listener.

Each route is a ``PublicRoute`` entry, so later checks (the anti-abuse layer) attach per route
without touching the handler.
"""

from __future__ import annotations

import dataclasses
import logging

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from edgeward.backend import BackendClient, stable_error_code
from edgeward.reasons import Reason, Rejection

__all__ = ("PUBLIC_ROUTES", "PublicRoute", "make_public_app")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class PublicRoute:
    """A proxied endpoint: the gateway and backend path, and its exact set of string fields."""

    path: str
    fields: tuple[str, ...]


PUBLIC_ROUTES: tuple[PublicRoute, ...] = (
    PublicRoute("/api/v1/public/auth/send-email-code", ("email",)),
    PublicRoute("/api/v1/public/auth/confirm-email-code", ("challenge_id", "code", "client_public_key")),
)

# aiohttp's own 404 and 405 are text; these become the listener's JSON error form.
_ROUTING_ERRORS = {404: "not_found", 405: "method_not_allowed"}


def _json(status: int, body: bytes) -> web.Response:
    resp = web.Response(status=status, body=body, content_type="application/json")
    resp.headers["Cache-Control"] = "no-store"  # answers carry sign-in secrets
    return resp


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, orjson.dumps({"error": {"code": code, "message": message}}))


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


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit``: read at most ``limit + 1`` bytes, chunked or not."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _field_problem(route: PublicRoute, document: dict[str, object]) -> str | None:
    """What is wrong with the body's fields, naming the first bad one; None when they are right."""
    for name in route.fields:
        if name not in document:
            return f"missing field '{name}'"
        if not isinstance(document[name], str):
            return f"field '{name}' must be a string"
    extra = sorted(set(document) - set(route.fields))
    return f"unexpected field '{extra[0]}'" if extra else None


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


def make_public_app(backend: BackendClient, *, max_body_bytes: int) -> web.Application:
    """The public listener's application; ``backend`` must be started by the caller."""

    def proxy(route: PublicRoute) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.content_type != "application/json":
                return _error(415, "unsupported_media_type", "Content-Type must be application/json")
            body = await _read_bounded(request, max_body_bytes)
            if body is None:
                resp = _error(413, "request_too_large", f"the body is over {max_body_bytes} bytes")
                resp.force_close()  # the rest of the body is not wanted on this connection
                return resp
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                return _error(400, "invalid_request", "the body is not valid JSON")
            if not isinstance(document, dict):
                return _error(400, "invalid_request", "the body must be a JSON object")
            problem = _field_problem(route, document)
            if problem is not None:
                return _error(400, "invalid_request", problem)
            # The gateway is the edge: a client's own X-Forwarded-For is not trusted, only the peer.
            headers = {"Content-Type": "application/json"}
            if request.remote:
                headers["X-Forwarded-For"] = request.remote
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

    app = web.Application(client_max_size=max_body_bytes, middlewares=[_json_routing_errors])
    for route in PUBLIC_ROUTES:
        app.router.add_post(route.path, proxy(route))
    return app
