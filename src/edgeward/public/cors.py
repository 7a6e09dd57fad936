"""CORS for the browser-facing listeners (the public auth listener and gRPC-Web): one origin list.

A browser page on another origin may call a listener only when that listener says so: it asks
first with a preflight ``OPTIONS`` and reads the ``Access-Control-*`` headers of the answers.
Both listeners take the same ``EDGEWARD_CORS_ORIGINS`` (``CorsOrigins``): exact origins, or ``*``.
Empty (the default) means no CORS at all: no header is added and no preflight is answered, so a
cross-origin browser page is refused by its own browser and the listeners behave as before.

With origins set (docs/grpc-web.md, "CORS"):

- a preflight from an allowed origin gets 204 with ``Access-Control-Allow-Origin`` (the origin
  itself, never ``*``, so the answer is right for that origin only), ``-Allow-Methods: POST``,
  the listener's ``-Allow-Headers`` and ``-Max-Age: 600``; a preflight from any other origin gets
  the listener's refusal (403) and no CORS header;
- every answer to an allowed origin carries ``Access-Control-Allow-Origin`` and the listener's
  ``-Expose-Headers`` (gRPC-Web: the status headers a script must read);
- every answer carries ``Vary: Origin``, so a cache never serves one origin's answer to another.

No ``Access-Control-Allow-Credentials``: neither listener reads cookies, a request carries its own
proof (a signature, or the body of a login step).
The headers are added in ``on_response_prepare``, so streamed answers and answers prepared early
(a refusal that closes the connection) get them as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ("CorsOrigins", "CorsPolicy")

_MAX_AGE_S = "600"  # browsers cap it lower (Chromium: 2 h, Firefox: 24 h); 10 min re-checks soon after a change


@dataclasses.dataclass(frozen=True, slots=True)
class CorsOrigins:
    """The origins allowed to call the browser-facing listeners: ``any`` (``*``), or exactly ``origins``."""

    origins: frozenset[str] = frozenset()
    any: bool = False

    @classmethod
    def parse(cls, text: str) -> CorsOrigins:
        """Comma-separated origins (``https://app.example.com, http://127.0.0.1:8090``), ``*``, or ``none``.

        An origin is ``scheme://host[:port]`` with scheme http or https and nothing after it: a
        browser's ``Origin`` header has exactly that form, so anything else could never match.
        """
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items or items == ["none"]:
            return cls()
        if "*" in items:
            if len(items) > 1:
                raise ValueError("'*' allows every origin: it cannot be listed with others")
            return cls(any=True)
        origins = set()
        for item in items:
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.hostname or item != f"{parts.scheme}://{parts.netloc}":
                raise ValueError(f"{item!r} is not an origin (expected scheme://host[:port], no path, no slash)")
            origins.add(item.lower())
        return cls(frozenset(origins))

    def allows(self, origin: str) -> bool:
        return self.any or origin in self.origins

    def __bool__(self) -> bool:
        return self.any or bool(self.origins)

    def __str__(self) -> str:
        return "*" if self.any else ",".join(sorted(self.origins)) or "none"


class CorsPolicy:
    """One listener's CORS answers: ``preflight`` is its middleware, ``decorate`` its prepare hook."""

    def __init__(
        self,
        origins: CorsOrigins,
        *,
        allow_headers: str,
        refused: Callable[[], web.StreamResponse],
        expose_headers: str = "",
    ) -> None:
        """``refused`` builds the answer to a preflight from an origin not allowed (the listener's own 403 form)."""
        self._origins = origins
        self._allow_headers = allow_headers
        self._expose_headers = expose_headers
        self._refused = refused

    def install(self, app: web.Application) -> None:
        """Add the prepare hook; the caller places ``preflight`` among its middlewares (after its access log)."""
        app.on_response_prepare.append(self.decorate)

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method); pass anything else."""
        origin = request.headers.get("Origin")
        if request.method != "OPTIONS" or origin is None or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        if not self._origins.allows(origin):
            return self._refused()
        resp = web.Response(status=204)
        resp.headers["Access-Control-Allow-Methods"] = "POST"
        resp.headers["Access-Control-Allow-Headers"] = self._allow_headers
        resp.headers["Access-Control-Max-Age"] = _MAX_AGE_S
        return resp

    async def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        """Before an answer's headers leave: ``Vary: Origin``, and the allow headers for an allowed origin."""
        vary = response.headers.get("Vary")
        response.headers["Vary"] = f"{vary}, Origin" if vary and "origin" not in vary.lower() else vary or "Origin"
        origin = request.headers.get("Origin")
        if origin is None or not self._origins.allows(origin):
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        if self._expose_headers:
            response.headers["Access-Control-Expose-Headers"] = self._expose_headers
