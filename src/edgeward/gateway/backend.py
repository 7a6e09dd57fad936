"""The backend REST client (docs/protocol.md §5, docs/routes.md): sessions, commands, public auth.

One ``HTTP11Client`` (edgeward.io.http11) with a keep-alive pool serves every call: it costs a
fraction of aiohttp's CPU per request (bench/test_backend_client.py). Each call has one total
deadline (``timeout_ms``, connect and body included) and reads at most ``max_response_bytes``
of the answer, so a slow or misbehaving backend costs the gateway a bounded amount of time and
memory per request. Every failure leaves as a ``Rejection`` (``backend_timeout`` or
``backend_unavailable``): callers never see an HTTP client exception, and the gRPC layer turns
the rejection into the contract's status. Failures are logged at WARNING with a short reason, never
with a payload, which may hold user data.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import random
import re
import ssl
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlencode, urlsplit

import orjson

from edgeward.gateway.routes import Route
from edgeward.io.http11 import HTTP11Client, HTTPClientError, Origin, ResponseTooLargeError
from edgeward.native.crypto import sha256
from edgeward.native.session_record import SessionRecord, parse_session
from edgeward.reasons import Reason, Rejection, stable_error_code

__all__ = (
    "BackendAnswer",
    "BackendClient",
    "CommandContext",
    "trace_id_for",
    "traceparent_for",
)

log = logging.getLogger(__name__)

# Idle pooled connections are dropped before the common 5 s server-side idle timeouts (Node,
# uvicorn) so that a POST is rarely sent on a socket the backend is closing (http11 retries such
# a request once, on a new connection, only when no byte of an answer came back).
_KEEPALIVE_S = 4.0
_PUBLIC_PREFIX = "/api/v1/public/"
_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
_ZERO_TRACE_ID = "0" * 32
# Parent span ids need to be unique, not secret: a PRNG seeded from the OS, no system call per request.
_span_ids = random.Random(os.urandom(16))


@dataclasses.dataclass(frozen=True, slots=True)
class CommandContext:
    """Who sent a command and how to correlate it: becomes the X-* and traceparent headers."""

    user_id: str
    device_session_id: str
    request_id: str
    message_type: str
    trace_id: str
    span_id: int = 0  # the backend call's span when tracing (gateway/tracing.py); 0: none


@dataclasses.dataclass(frozen=True, slots=True)
class BackendAnswer:
    """A usable answer: ``result_code`` is "ok" (2xx) or the backend's stable error code (4xx)."""

    result_code: str
    body: bytes
    status: int


def trace_id_for(trace_id: str, request_id: str) -> str:
    """The W3C trace id (32 hex) of a request: the backend's traceparent and the gateway's spans share it.

    A 32-hex, non-zero ``trace_id`` is used as is (lower-cased); anything else is hashed so the
    backend still sees one stable trace id per client trace (or per request without one).
    """
    if _TRACE_ID.fullmatch(trace_id) and trace_id != _ZERO_TRACE_ID:
        return trace_id.lower()
    return sha256((trace_id or request_id).encode()).hex()[:32]


def traceparent_for(trace_id: str, request_id: str, parent_id: int = 0) -> str:
    """A W3C traceparent continuing the client's trace when it sent a usable one.

    ``parent_id`` is the backend call's span id when tracing is on; otherwise (0) it is random,
    and never all zeros, which W3C forbids.
    """
    return f"00-{trace_id_for(trace_id, request_id)}-{parent_id or _span_ids.getrandbits(64) or 1:016x}-01"


def _query_of(payload: bytes) -> list[tuple[str, str]]:
    """A JSON object's scalar members as query parameters (a GET carries no body)."""
    try:
        document = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        return []
    if not isinstance(document, dict):
        return []
    return [
        (key, value if isinstance(value, str) else orjson.dumps(value).decode())
        for key, value in document.items()
        if isinstance(value, (str, int, float))  # bool is an int; null, arrays, objects skipped
    ]


class BackendClient:
    def __init__(
        self,
        base_url: str,
        timeout_ms: int,
        *,
        max_connections: int = 256,
        max_response_bytes: int = 4 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` verifies an https backend (and may carry a client certificate); None: the system CAs."""
        parts = urlsplit(base_url)
        if parts.query or parts.fragment:
            raise ValueError(f"a backend base URL has no query or fragment: {base_url!r}")
        self._origin = Origin.from_url(base_url)
        self._prefix = parts.path.rstrip("/")  # paths are appended to it as they are
        # Credentials in the URL become Basic auth, as aiohttp made them.
        self._auth: dict[str, str] = {}
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("latin-1")
            self._auth["Authorization"] = "Basic " + base64.b64encode(userinfo).decode()
        self._timeout_ms = timeout_ms
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._ssl_context = ssl_context
        self._http: HTTP11Client | None = None

    async def start(self) -> None:
        if self._http is not None:
            return
        # Headers are per call and no cookies are kept, so nothing a backend says leaks into the
        # next call; redirects are answers like any other.
        self._http = HTTP11Client(
            timeout_s=self._timeout_ms / 1000,
            max_connections=self._max_connections,
            keepalive_s=_KEEPALIVE_S,
            max_response_bytes=self._max_response_bytes,
            ssl_context=self._ssl_context,
        )

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def get_session(self, device_session_id: str) -> SessionRecord | None:
        """The backend's record for a device session, or None when the backend does not know it."""
        if device_session_id in (".", ".."):
            return None  # not addressable as a path segment, so no backend can hold it
        what = "session lookup"
        path = "/api/v1/internal/sessions/" + quote(device_session_id, safe="")
        status, body = await self._call("GET", path, what)
        if status == 404 and stable_error_code(body) == "session_not_found":
            return None
        if status != 200:
            raise self._failure(Reason.BACKEND_UNAVAILABLE, what, f"answered HTTP {status}")
        try:
            document = orjson.loads(body)
            obj = document.get("session") if isinstance(document, dict) else None
            if not isinstance(obj, dict):
                raise ValueError("no session object")
            record = parse_session(obj)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            raise self._failure(Reason.BACKEND_UNAVAILABLE, what, f"malformed answer: {exc}") from None
        if record.device_session_id != device_session_id:
            raise self._failure(Reason.BACKEND_UNAVAILABLE, what, "answered for another session id")
        return record

    async def forward(self, route: Route, payload: bytes, ctx: CommandContext) -> BackendAnswer:
        """Send one command to its route and map the answer per the contract (docs/routes.md)."""
        headers = {
            "X-User-Id": ctx.user_id,
            "X-Device-Session-Id": ctx.device_session_id,
            "X-Request-Id": ctx.request_id,
            "X-Message-Type": ctx.message_type,
            "traceparent": traceparent_for(ctx.trace_id, ctx.request_id, ctx.span_id),
        }
        what = f"{ctx.message_type} ({route.method} {route.path})"
        if route.method == "GET":
            status, body = await self._call(
                "GET", route.path, what, headers=headers, params=_query_of(payload)
            )
        else:
            headers["Content-Type"] = "application/json"
            status, body = await self._call(route.method, route.path, what, headers=headers, data=payload)
        if 200 <= status < 300:
            return BackendAnswer("ok", body, status)
        code = stable_error_code(body) if 400 <= status < 500 else None
        if code is None:
            raise self._failure(Reason.BACKEND_UNAVAILABLE, what, f"HTTP {status} without a stable error")
        return BackendAnswer(code, body, status)

    async def post_public(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST to a public auth endpoint; any HTTP answer is returned as (status, body) for the proxy."""
        if not path.startswith(_PUBLIC_PREFIX):
            raise ValueError(f"not a public backend path: {path!r}")
        return await self._call("POST", path, f"public {path}", headers=headers, data=body)

    async def ping(self) -> bool:
        """True when the backend answers HTTP at all (any status): a readiness probe, so no logging."""
        http = self._http
        if http is None:
            return False
        try:
            await http.request(self._origin, "HEAD", self._prefix + "/", headers=self._auth)
        except (HTTPClientError, OSError):  # TimeoutError is an OSError
            return False
        return True

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, bytes]:
        """One bounded request: (status, body), or the Rejection that stands for its failure."""
        if self._http is None:
            raise RuntimeError("BackendClient.start() was not called")
        # Paths are validated (routes) or percent-encoded (session ids) and sent as they are: no
        # requoting or dot-segment normalization may change what the backend is asked for.
        target = self._prefix + path
        if params:
            target += "?" + urlencode(params)
        if self._auth:
            headers = {**self._auth, **(headers or {})}
        try:
            answer = await self._http.request(self._origin, method, target, headers=headers, body=data)
        except TimeoutError:  # before OSError: TimeoutError is one
            raise self._failure(
                Reason.BACKEND_TIMEOUT, what, f"no answer within {self._timeout_ms} ms"
            ) from None
        except ResponseTooLargeError:
            raise self._failure(
                Reason.BACKEND_UNAVAILABLE, what, f"answer over {self._max_response_bytes} bytes"
            ) from None
        except (HTTPClientError, OSError) as exc:
            # InvalidRequestError among them: a header value that cannot be sent (e.g. a newline).
            raise self._failure(Reason.BACKEND_UNAVAILABLE, what, type(exc).__name__) from None
        return answer.status, answer.body

    @staticmethod
    def _failure(reason: Reason, what: str, why: str) -> Rejection:
        log.warning("backend %s: %s: %s", reason.wire, what, why)
        return Rejection(reason, f"{what}: {why}")
