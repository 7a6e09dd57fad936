"""BackendClient against real aiohttp servers on 127.0.0.1: forwarding, answer mapping, sessions."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from edgeward.gateway.backend import BackendClient, CommandContext, traceparent_for
from edgeward.gateway.routes import Route
from edgeward.reasons import Reason, Rejection, stable_error_code

KEY = base64.b64encode(b"k" * 32).decode()
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")
CTX = CommandContext(
    user_id="u-1",
    device_session_id="dev-1",
    request_id="req-0123456789abcdef",
    message_type="user.test",
    trace_id="4BF92F3577B34DA6A3CE929D0E0E4736",
)
LIMIT = 1024


@dataclasses.dataclass
class Received:
    method: str
    path: str
    raw_path: str
    query: list[tuple[str, str]]
    headers: CIMultiDict[str]
    body: bytes
    has_body: bool


def _json(status: int, obj: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


class FakeBackend:
    """Answers each path under /api/v1/user/ with one scenario and records what it received."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.release = asyncio.Event()  # lets slow handlers finish at teardown
        self.scenarios: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
            "ok": self._ok,
            "conflict": lambda _r: self._const(
                409, orjson.dumps({"error": {"code": "conflict", "message": "m"}})
            ),
            "ok-code": lambda _r: self._const(400, orjson.dumps({"error": {"code": "ok"}})),
            "plain4xx": lambda _r: self._const(400, b"bad request"),
            "nocode4xx": lambda _r: self._const(422, orjson.dumps({"detail": "x"})),
            "broken4xx": lambda _r: self._const(404, b'{"error": {"code": "x"'),
            "fail5xx": lambda _r: self._const(503, orjson.dumps({"error": {"code": "down", "message": "m"}})),
            "redirect": lambda _r: self._const(302, b"", {"Location": "/api/v1/user/ok"}),
            "big": lambda _r: self._const(200, b"x" * (LIMIT + 1)),
            "big-chunked": self._big_chunked,
            "slow": self._slow,
            "slow-body": self._slow_body,
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(
                request.method,
                request.path,
                request.raw_path,
                list(request.query.items()),
                request.headers.copy(),
                body,
                request.body_exists,
            )
        )
        if request.path.startswith("/api/v1/internal/sessions/"):
            return self._session(request.match_info["tail"].rpartition("/")[2])
        scenario = self.scenarios.get(request.path.rpartition("/")[2])
        return await scenario(request) if scenario else web.Response(status=404)

    async def _ok(self, request: web.Request) -> web.Response:
        return _json(200, {"got": (await request.read()).decode()})

    async def _const(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, body=body, headers=headers)

    async def _big_chunked(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(4):
            await resp.write(b"y" * (LIMIT // 2))
        await resp.write_eof()
        return resp

    async def _slow(self, _request: web.Request) -> web.Response:
        await self.release.wait()
        return _json(200, {})

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "100"})
        await resp.prepare(request)
        await resp.write(b"x" * 10)
        await self.release.wait()
        return resp

    def _session(self, dsid: str) -> web.Response:
        record = {"device_session_id": dsid, "user_id": "u-1", "client_public_key": KEY, "status": "active"}
        if dsid == "s-ok":
            return _json(200, {"session": record})
        if dsid == "s-revoked":
            return _json(200, {"session": {**record, "status": "revoked", "revoked_at_ms": 5}})
        if dsid == "s-missing":
            return _json(404, {"error": {"code": "session_not_found", "message": "no such session"}})
        if dsid == "s-other404":
            return _json(404, {"error": {"code": "not_found", "message": "no route"}})
        if dsid == "s-badkey":
            return _json(200, {"session": {**record, "client_public_key": "short"}})
        if dsid == "s-nosession":
            return _json(200, {"device_session_id": dsid})
        if dsid == "s-other":
            return _json(200, {"session": {**record, "device_session_id": "s-ok"}})
        if dsid == "s-notjson":
            return web.Response(status=200, body=b"<html>")
        return _json(500, {"error": {"code": "internal", "message": "boom"}})


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeBackend, str]]:
    backend = FakeBackend()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", backend.handle)
    runner, port = await serve(app)
    yield backend, f"http://127.0.0.1:{port}"
    backend.release.set()
    await runner.cleanup()


@pytest.fixture
async def client(fake: tuple[FakeBackend, str]) -> AsyncIterator[BackendClient]:
    backend = BackendClient(fake[1] + "/", timeout_ms=5_000, max_response_bytes=LIMIT)
    await backend.start()
    yield backend
    await backend.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def route(name: str, method: str = "POST") -> Route:
    return Route("user.test", method, f"/api/v1/user/{name}")


async def test_post_sends_the_payload_and_the_five_headers(
    fake: tuple[FakeBackend, str], client: BackendClient
) -> None:
    payload = b'{"text": "hi"}'
    answer = await client.forward(route("ok"), payload, CTX)
    assert answer.result_code == "ok" and answer.status == 200
    assert orjson.loads(answer.body) == {"got": payload.decode()}
    (got,) = fake[0].received
    assert (got.method, got.path, got.body, got.query) == ("POST", "/api/v1/user/ok", payload, [])
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-User-Id"] == "u-1"
    assert got.headers["X-Device-Session-Id"] == "dev-1"
    assert got.headers["X-Request-Id"] == CTX.request_id
    assert got.headers["X-Message-Type"] == "user.test"
    match = TRACEPARENT.fullmatch(got.headers["traceparent"])
    assert match is not None and match.group(1) == CTX.trace_id.lower()


async def test_get_has_no_body_and_a_query_from_the_payload_scalars(
    fake: tuple[FakeBackend, str], client: BackendClient
) -> None:
    payload = orjson.dumps(
        {"q": "a b&c=d+é", "n": 3, "f": 1.5, "yes": True, "no": False, "none": None, "list": [1], "obj": {}}
    )
    answer = await client.forward(route("ok", "GET"), payload, CTX)
    assert answer.result_code == "ok"
    (got,) = fake[0].received
    assert got.method == "GET" and got.body == b"" and not got.has_body
    assert "Content-Type" not in got.headers
    assert got.query == [("q", "a b&c=d+é"), ("n", "3"), ("f", "1.5"), ("yes", "true"), ("no", "false")]
    assert TRACEPARENT.fullmatch(got.headers["traceparent"])


@pytest.mark.parametrize("payload", [b"", b"[1, 2]", b"not json", b'"text"'])
async def test_get_with_a_payload_that_is_not_an_object_sends_no_query(
    fake: tuple[FakeBackend, str], client: BackendClient, payload: bytes
) -> None:
    await client.forward(route("ok", "GET"), payload, CTX)
    assert fake[0].received[0].query == [] and not fake[0].received[0].has_body


async def test_a_stable_4xx_error_is_an_answer_with_its_code(client: BackendClient) -> None:
    answer = await client.forward(route("conflict"), b"{}", CTX)
    assert (answer.result_code, answer.status) == ("conflict", 409)
    assert orjson.loads(answer.body)["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    "scenario", ["plain4xx", "nocode4xx", "broken4xx", "ok-code", "fail5xx", "redirect", "big", "big-chunked"]
)
async def test_answers_outside_the_contract_are_backend_unavailable(
    client: BackendClient, scenario: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = b'{"password": "hunter2"}'
    with caplog.at_level(logging.WARNING, "edgeward.gateway.backend"), pytest.raises(Rejection) as info:
        await client.forward(route(scenario), secret, CTX)
    assert info.value.reason is Reason.BACKEND_UNAVAILABLE
    assert caplog.records and "hunter2" not in caplog.text


@pytest.mark.parametrize("scenario", ["slow", "slow-body"])
async def test_a_slow_backend_is_backend_timeout(fake: tuple[FakeBackend, str], scenario: str) -> None:
    backend = BackendClient(fake[1], timeout_ms=100)
    await backend.start()
    try:
        with pytest.raises(Rejection) as info:
            await asyncio.wait_for(backend.forward(route(scenario), b"{}", CTX), 10)
        assert info.value.reason is Reason.BACKEND_TIMEOUT
    finally:
        await backend.close()


async def test_a_closed_port_is_backend_unavailable() -> None:
    backend = BackendClient(f"http://127.0.0.1:{closed_port()}", timeout_ms=2_000)
    await backend.start()
    try:
        for call in (
            backend.forward(route("ok"), b"{}", CTX),
            backend.get_session("s-ok"),
            backend.post_public("/api/v1/public/auth/send-email-code", b"{}", {}),
        ):
            with pytest.raises(Rejection) as info:
                await call
            assert info.value.reason is Reason.BACKEND_UNAVAILABLE
        assert await backend.ping() is False
    finally:
        await backend.close()


async def test_garbage_on_the_wire_is_backend_unavailable() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = BackendClient(f"http://127.0.0.1:{port}", timeout_ms=2_000)
    await backend.start()
    try:
        with pytest.raises(Rejection) as info:
            await backend.forward(route("ok", "GET"), b"", CTX)
        assert info.value.reason is Reason.BACKEND_UNAVAILABLE
    finally:
        await backend.close()
        server.close()
        await server.wait_closed()


async def test_get_session_answers(client: BackendClient) -> None:
    record = await client.get_session("s-ok")
    assert record is not None
    assert (record.device_session_id, record.user_id, record.revoked) == ("s-ok", "u-1", False)
    assert record.client_public_key == b"k" * 32
    revoked = await client.get_session("s-revoked")
    assert revoked is not None and revoked.revoked and revoked.revoked_at_ms == 5
    assert await client.get_session("s-missing") is None
    assert await client.get_session("..") is None


@pytest.mark.parametrize("dsid", ["s-other404", "s-badkey", "s-nosession", "s-other", "s-notjson", "s-500"])
async def test_get_session_failures_are_backend_unavailable(client: BackendClient, dsid: str) -> None:
    with pytest.raises(Rejection) as info:
        await client.get_session(dsid)
    assert info.value.reason is Reason.BACKEND_UNAVAILABLE


async def test_get_session_percent_encodes_the_id(
    fake: tuple[FakeBackend, str], client: BackendClient
) -> None:
    with pytest.raises(Rejection):
        await client.get_session("a/b?c")
    assert fake[0].received[0].raw_path == "/api/v1/internal/sessions/a%2Fb%3Fc"


async def test_post_public_returns_any_status_and_refuses_other_paths(client: BackendClient) -> None:
    status, _body = await client.post_public("/api/v1/public/auth/send-email-code", b"{}", {})
    assert status == 404  # whatever the backend says; the proxy decides what to do with it
    with pytest.raises(ValueError, match="not a public backend path"):
        await client.post_public("/api/v1/internal/sessions/x", b"{}", {})


async def test_ping_and_lifecycle(fake: tuple[FakeBackend, str]) -> None:
    backend = BackendClient(fake[1], timeout_ms=2_000)
    assert await backend.ping() is False  # not started
    with pytest.raises(RuntimeError):
        await backend.forward(route("ok"), b"{}", CTX)
    await backend.start()
    assert await backend.ping() is True
    await backend.close()
    await backend.close()  # idempotent


def test_traceparent_derivation() -> None:
    valid = "4bf92f3577b34da6a3ce929d0e0e4736"
    match = TRACEPARENT.fullmatch(traceparent_for(valid.upper(), "req"))
    assert match is not None and match.group(1) == valid and match.group(2) != "0" * 16
    assert traceparent_for(valid, "r").split("-")[2] != traceparent_for(valid, "r").split("-")[2]

    def trace_id(trace: str, request_id: str) -> str:
        return traceparent_for(trace, request_id).split("-")[1]

    assert trace_id("0" * 32, "r") == trace_id("0" * 32, "other")  # all zeros is hashed as text
    assert trace_id("0" * 32, "r") != "0" * 32
    assert trace_id("short-trace", "r1") == trace_id("short-trace", "r2")
    assert trace_id("", "r1") == trace_id("", "r1") != trace_id("", "r2")
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id("", "r1"))


def test_stable_error_code() -> None:
    assert stable_error_code(b'{"error": {"code": "x", "message": "m"}}') == "x"
    for body in (b"", b"[]", b'{"error": "x"}', b'{"error": {"code": ""}}', b'{"error": {"code": 1}}'):
        assert stable_error_code(body) is None
    assert stable_error_code(b'{"error": {"code": "ok"}}') is None
