"""HTTP plumbing shared by the stub's routes: JSON bodies in, the contract's error shape out.

Every failure a client can cause (bad JSON, a wrong type, an unknown path or method, an
oversized body) is answered as ``{"error": {"code", "message"}}`` with a 4xx status and a
stable code, because the gateway forwards a backend's 4xx body to clients as a result code.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from edgeward.stub.errors import ApiError

__all__ = (
    "Route",
    "RouteNames",
    "error_middleware",
    "json_response",
    "optional_str",
    "read_json",
    "read_object",
    "require_str",
)

log = logging.getLogger(__name__)

Route = tuple[str, str, Handler, str]  # method, path, handler, name counted in StubBackend.calls
RouteNames = dict[web.AbstractRoute, str]

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def error_middleware(names: RouteNames, calls: Counter[str]) -> Middleware:
    """Count each request under its route's name and turn every failure into the JSON shape."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = names.get(request.match_info.route)
        if name is not None:
            calls[name] += 1
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception:
            log.exception("stub backend: %s %s failed", request.method, request.path)
            return _error(500, "internal_error", "the stub backend failed; see its log")

    return middleware


async def read_json(request: web.Request, code: str = "invalid_request", allow_empty: bool = False) -> Any:
    """The decoded body; an empty body is None when allowed, else refused like bad JSON."""
    body = await request.read()
    if allow_empty and not body.strip():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, code, "body is not valid JSON") from None


async def read_object(request: web.Request, allow_empty: bool = False) -> dict[str, Any]:
    """A JSON-object body; an empty body is ``{}`` when allowed."""
    if allow_empty and not (await request.read()).strip():
        return {}
    obj = await read_json(request)
    if not isinstance(obj, dict):
        raise ApiError(400, "invalid_request", "body must be a JSON object")
    return obj


def optional_str(obj: dict[str, Any], name: str, max_chars: int = 256) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise ApiError(400, "invalid_request", f"{name} must be a string of 1..{max_chars} characters")
    return value


def require_str(obj: dict[str, Any], name: str, max_chars: int = 256) -> str:
    value = optional_str(obj, name, max_chars)
    if value is None:
        raise ApiError(400, "invalid_request", f"{name} is required")
    return value
