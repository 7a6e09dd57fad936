"""The route table: which message types the gateway forwards, and to which backend endpoint.

Each ``message_type`` maps to an HTTP method and a path under ``/api/v1/user/`` (docs/routes.md).
A routes file REPLACES the built-in table unless it says ``"include_defaults": true``: an
operator decides exactly which message types are exposed, and a type missing from the table is
refused with ``unknown_message_type`` before anything reaches the backend.

The file is validated strictly and in full when the gateway starts, and every mistake is a
``RouteFileError`` naming the file and the entry, so a bad deployment fails at boot rather than
on the first request. Unknown keys are refused (not ignored) so that a typo cannot silently drop
a setting, and so that per-route options can be added to an entry later without old gateways
misreading new files. The one option so far is ``budget``: the route's own (user, message type)
command budget, ``"RATE[/s|/m|/h]:BURST"`` or ``"off"``, in place of EDGEWARD_BUDGET_MESSAGE_TYPE.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import orjson

from edgeward.protection.limiter import Limit, parse_limit

__all__ = (
    "DEFAULT_ROUTES",
    "Route",
    "RouteFileError",
    "RouteTable",
    "load_route_table",
)

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_USER_PATH_PREFIX = "/api/v1/user/"

# The envelope's limit on message_type (protocol §1): a route for anything else is unreachable.
_MESSAGE_TYPE = re.compile(r"[a-z0-9._-]{1,64}")
# Non-empty segments of unreserved characters that do not start with a dot: no percent-escapes
# (which could smuggle an encoded "..") and no "." or ".." segments that a client library or
# the backend's router would normalize away.
_USER_PATH = re.compile(r"/api/v1/user(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+/?")
_FILE_KEYS = frozenset({"include_defaults", "routes"})
# One place to extend when route entries grow options.
_ROUTE_KEYS = frozenset({"method", "path", "budget"})


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """One forwarding rule: ``message_type`` is sent as ``method`` to ``path`` on the backend.

    ``budget``: the route's own (user, message type) budget, "off" for none, None for the default.
    """

    message_type: str
    method: str
    path: str
    budget: Limit | Literal["off"] | None = None


DEFAULT_ROUTES: Mapping[str, Route] = MappingProxyType(
    {
        route.message_type: route
        for route in (
            Route("user.profile.get", "GET", "/api/v1/user/profile"),
            Route("user.profile.update", "PATCH", "/api/v1/user/profile"),
            Route("user.echo", "POST", "/api/v1/user/echo"),
        )
    }
)


class RouteFileError(ValueError):
    """The routes file cannot be used; the message names the file and the bad entry."""


class RouteTable:
    """An immutable message_type -> Route lookup; iterating yields the message types, sorted."""

    __slots__ = ("_routes",)

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes: Mapping[str, Route] = MappingProxyType(dict(routes))

    def get(self, message_type: str) -> Route | None:
        return self._routes.get(message_type)

    def __contains__(self, message_type: object) -> bool:
        return message_type in self._routes

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._routes))

    def __repr__(self) -> str:
        return f"RouteTable({sorted(self._routes)!r})"

    def budget_overrides(self) -> dict[str, Limit | None]:
        """message_type -> its own (user, message type) budget (None: off), for the routes that set one."""
        return {
            mt: None if route.budget == "off" else route.budget
            for mt, route in self._routes.items()
            if route.budget is not None
        }


def load_route_table(path: str | None) -> RouteTable:
    """The table from the routes file at ``path``, or the built-in routes when ``path`` is None."""
    if path is None:
        return RouteTable(DEFAULT_ROUTES)
    try:
        document = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise RouteFileError(f"{path}: cannot read the routes file: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise RouteFileError(f"{path}: not valid JSON: {exc}") from None
    return RouteTable(_parse_document(path, document))


def _parse_document(source: str, document: Any) -> dict[str, Route]:
    if not isinstance(document, dict):
        raise RouteFileError(f"{source}: the routes file must be a JSON object")
    unknown = sorted(set(document) - _FILE_KEYS)
    if unknown:
        raise RouteFileError(
            f"{source}: unknown top-level key {unknown[0]!r} (allowed: include_defaults, routes)"
        )
    include_defaults = document.get("include_defaults", False)
    if not isinstance(include_defaults, bool):
        raise RouteFileError(f"{source}: include_defaults must be true or false")
    entries = document.get("routes")
    if not isinstance(entries, dict):
        raise RouteFileError(f"{source}: 'routes' must be a JSON object of message_type -> route")
    routes = dict(DEFAULT_ROUTES) if include_defaults else {}
    for message_type, entry in entries.items():
        routes[message_type] = _parse_route(source, message_type, entry)
    return routes


def _parse_route(source: str, message_type: str, entry: Any) -> Route:
    def bad(problem: str) -> RouteFileError:
        return RouteFileError(f"{source}: routes[{message_type!r}]: {problem}")

    if not _MESSAGE_TYPE.fullmatch(message_type):
        raise bad("message type must be 1..64 characters of [a-z0-9._-]")
    if message_type.split(".", 1)[0] == "gateway":
        raise bad("gateway.* message types are reserved for the gateway itself")
    if not isinstance(entry, dict):
        raise bad("must be an object with 'method' and 'path'")
    unknown = sorted(set(entry) - _ROUTE_KEYS)
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_ROUTE_KEYS))})")
    method, path = entry.get("method"), entry.get("path")
    if not isinstance(method, str) or method not in _METHODS:
        raise bad(f"method must be one of {', '.join(sorted(_METHODS))}, got {method!r}")
    if not isinstance(path, str):
        raise bad("path must be a string")
    if not path.startswith(_USER_PATH_PREFIX):
        raise bad(f"path must start with {_USER_PATH_PREFIX}, got {path!r}")
    if "?" in path or "#" in path:
        raise bad("path must not carry a query string or fragment")
    if ".." in path:
        raise bad("path must not contain '..'")
    if not _USER_PATH.fullmatch(path):
        raise bad(
            f"path segments must be non-empty, use only [A-Za-z0-9._~-] and not start with '.', got {path!r}"
        )
    budget = _parse_budget(entry["budget"], bad) if "budget" in entry else None
    return Route(message_type, method, path, budget)


def _parse_budget(value: Any, bad: Callable[[str], RouteFileError]) -> Limit | Literal["off"]:
    if not isinstance(value, str):
        raise bad('budget must be a string: "RATE[/s|/m|/h]:BURST" or "off"')
    try:
        limit = parse_limit(value)
    except ValueError as exc:
        raise bad(f"budget: {exc}") from None
    return "off" if limit is None else limit
