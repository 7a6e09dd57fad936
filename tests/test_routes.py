"""Route table: the built-in routes, routes files (replace vs include_defaults) and their validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from edgeward.gateway.routes import DEFAULT_ROUTES, Route, RouteFileError, load_route_table
from edgeward.protection.limiter import Limit

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "routes.json"
    path.write_bytes(document if isinstance(document, bytes) else orjson.dumps(document))
    return str(path)


def one_route(message_type: str, entry: Any) -> dict[str, Any]:
    return {"routes": {message_type: entry}}


def test_defaults_when_no_file() -> None:
    table = load_route_table(None)
    assert len(table) == 3
    assert table.get("user.profile.get") == Route("user.profile.get", "GET", "/api/v1/user/profile")
    assert table.get("user.profile.update") == Route("user.profile.update", "PATCH", "/api/v1/user/profile")
    assert table.get("user.echo") == Route("user.echo", "POST", "/api/v1/user/echo")
    assert table.get("user.nope") is None
    assert "user.echo" in table and "user.nope" not in table
    assert list(table) == ["user.echo", "user.profile.get", "user.profile.update"]
    assert dict(DEFAULT_ROUTES) == {t: table.get(t) for t in table}


def test_file_replaces_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, one_route("orders.list", {"method": "GET", "path": "/api/v1/user/orders"}))
    table = load_route_table(path)
    assert list(table) == ["orders.list"]
    assert table.get("orders.list") == Route("orders.list", "GET", "/api/v1/user/orders")
    assert table.get("user.profile.get") is None


def test_include_defaults_adds_the_file_to_the_built_in_routes(tmp_path: Path) -> None:
    document = {
        "include_defaults": True,
        "routes": {
            "orders.create": {"method": "POST", "path": "/api/v1/user/orders"},
            "user.echo": {"method": "PUT", "path": "/api/v1/user/echo/v2"},  # the file wins
        },
    }
    table = load_route_table(write(tmp_path, document))
    assert list(table) == ["orders.create", "user.echo", "user.profile.get", "user.profile.update"]
    assert table.get("user.echo") == Route("user.echo", "PUT", "/api/v1/user/echo/v2")


def test_an_empty_file_table_exposes_nothing(tmp_path: Path) -> None:
    assert len(load_route_table(write(tmp_path, {"include_defaults": False, "routes": {}}))) == 0


def test_the_example_routes_file_is_valid() -> None:
    table = load_route_table(str(ROOT / "examples" / "routes.json"))
    assert "user.profile.get" in table and len(table) > len(DEFAULT_ROUTES)


def test_a_route_may_set_its_own_message_type_budget(tmp_path: Path) -> None:
    routes = {
        "user.export": {"method": "POST", "path": "/api/v1/user/export", "budget": "2/h:1"},
        "user.ping": {"method": "GET", "path": "/api/v1/user/ping", "budget": "off"},
        "user.plain": {"method": "GET", "path": "/api/v1/user/plain"},
    }
    table = load_route_table(write(tmp_path, {"routes": routes}))
    export = table.get("user.export")
    assert export is not None and export.budget == Limit(2 / 3600, 1)
    assert table.get("user.plain") == Route("user.plain", "GET", "/api/v1/user/plain")
    assert table.budget_overrides() == {"user.export": Limit(2 / 3600, 1), "user.ping": None}
    assert load_route_table(None).budget_overrides() == {}


GOOD = {"method": "GET", "path": "/api/v1/user/profile"}


@pytest.mark.parametrize(
    ("message_type", "entry", "expected"),
    [
        ("User.Profile", GOOD, "[a-z0-9._-]"),
        ("x" * 65, GOOD, "1..64"),
        ("", GOOD, "1..64"),
        ("gateway.subscribe", GOOD, "reserved"),
        ("gateway.anything", GOOD, "reserved"),
        ("user.a", "GET /api/v1/user/a", "must be an object"),
        ("user.a", {**GOOD, "budgets": "1:1"}, "unknown key 'budgets' (allowed: budget, method, path)"),
        ("user.a", {**GOOD, "budget": {"rate": 1}}, "budget must be a string"),
        ("user.a", {**GOOD, "budget": None}, "budget must be a string"),
        ("user.a", {**GOOD, "budget": "fast"}, "budget: expected RATE"),
        ("user.a", {**GOOD, "budget": "5/d:1"}, "budget: expected RATE"),
        ("user.a", {**GOOD, "budget": "0:1"}, "budget: expected RATE"),
        ("user.a", {"path": "/api/v1/user/a"}, "method must be one of"),
        ("user.a", {"method": "get", "path": "/api/v1/user/a"}, "method must be one of"),
        ("user.a", {"method": "FETCH", "path": "/api/v1/user/a"}, "method must be one of"),
        ("user.a", {"method": ["GET"], "path": "/api/v1/user/a"}, "method must be one of"),
        ("user.a", {"method": "GET"}, "path must be a string"),
        ("user.a", {"method": "GET", "path": "/api/v1/internal/sessions/x"}, "must start with /api/v1/user/"),
        ("user.a", {"method": "GET", "path": "/api/v1/user/a?x=1"}, "query string"),
        ("user.a", {"method": "GET", "path": "/api/v1/user/../internal/x"}, "'..'"),
        ("user.a", {"method": "GET", "path": "/api/v1/user/%2e%2e/internal"}, "path segments"),
        ("user.a", {"method": "GET", "path": "/api/v1/user//a"}, "path segments"),
        ("user.a", {"method": "GET", "path": "/api/v1/user/./a"}, "path segments"),
        ("user.a", {"method": "GET", "path": "/api/v1/user/"}, "path segments"),
        ("user.a", {"method": "GET", "path": "/api/v1/user/a b"}, "path segments"),
    ],
)
def test_each_invalid_entry_is_refused_naming_file_and_entry(
    tmp_path: Path, message_type: str, entry: Any, expected: str
) -> None:
    path = write(tmp_path, one_route(message_type, entry))
    with pytest.raises(RouteFileError) as info:
        load_route_table(path)
    message = str(info.value)
    assert message.startswith(f"{path}: routes[{message_type!r}]: ")
    assert expected in message


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"{not json", "not valid JSON"),
        ([], "must be a JSON object"),
        ({}, "'routes' must be a JSON object"),
        ({"routes": []}, "'routes' must be a JSON object"),
        ({"include_defaults": "yes", "routes": {}}, "include_defaults must be true or false"),
        ({"includeDefaults": True, "routes": {}}, "unknown top-level key 'includeDefaults'"),
    ],
)
def test_an_invalid_file_is_refused_naming_it(tmp_path: Path, document: Any, expected: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(RouteFileError, match=expected) as info:
        load_route_table(path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.json")
    with pytest.raises(RouteFileError, match="cannot read") as info:
        load_route_table(path)
    assert path in str(info.value)
