"""The public auth proxy on a real port, in front of a fake backend that records every call."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from edgeward.backend import BackendClient
from edgeward.http_public import make_public_app

SEND = "/api/v1/public/auth/send-email-code"
CONFIRM = "/api/v1/public/auth/confirm-email-code"
MAX_BODY = 256
CONFIRM_BODY = {"challenge_id": "c-1", "code": "123456", "client_public_key": "a2V5"}


@dataclasses.dataclass
class Call:
    path: str
    body: bytes
    content_type: str
    forwarded_for: str | None


class FakeBackend:
    """Records each call and answers with ``answer`` (status, body) or, when ``stall``, not at all."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.answer: tuple[int, bytes] = (200, b'{"challenge_id": "c-1"}')
        self.stall = False
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append(
            Call(request.path, body, request.content_type, request.headers.get("X-Forwarded-For"))
        )
        if self.stall:
            await self.release.wait()
        status, answer = self.answer
        return web.Response(status=status, body=answer, content_type="application/json")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@dataclasses.dataclass
class Stack:
    backend: FakeBackend
    url: str
    http: aiohttp.ClientSession

    async def post(self, path: str, **kwargs: Any) -> tuple[int, dict[str, object], aiohttp.ClientResponse]:
        async with self.http.post(self.url + path, **kwargs) as resp:
            return resp.status, orjson.loads(await resp.read()), resp


@contextlib.asynccontextmanager
async def start_stack(backend_url: str, fake: FakeBackend, timeout_ms: int = 5_000) -> AsyncIterator[Stack]:
    """The proxy on a real port in front of ``backend_url``, and a client session to call it."""
    client = BackendClient(backend_url, timeout_ms=timeout_ms)
    await client.start()
    runner, url = await serve(make_public_app(client, max_body_bytes=MAX_BODY))
    try:
        async with aiohttp.ClientSession() as http:
            yield Stack(fake, url, http)
    finally:
        fake.release.set()
        await runner.cleanup()
        await client.close()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    fake = FakeBackend()
    app = web.Application()
    app.router.add_post("/{tail:.*}", fake.handle)
    backend_runner, backend_url = await serve(app)
    try:
        async with start_stack(backend_url, fake, timeout_ms=500) as value:
            yield value
    finally:
        await backend_runner.cleanup()


def error_of(body: dict[str, object]) -> tuple[object, object]:
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}
    return error["code"], error["message"]


async def test_a_valid_send_is_forwarded_and_the_answer_passed_through(stack: Stack) -> None:
    status, body, resp = await stack.post(
        SEND, json={"email": "a@example.com"}, headers={"X-Forwarded-For": "6.6.6.6"}
    )
    assert (status, body) == (200, {"challenge_id": "c-1"})
    assert resp.headers["Cache-Control"] == "no-store"
    (call,) = stack.backend.calls
    assert call.path == SEND and orjson.loads(call.body) == {"email": "a@example.com"}
    assert call.content_type == "application/json"
    assert call.forwarded_for == "127.0.0.1"  # the peer, not what the client claimed


async def test_a_backend_error_is_passed_through_unchanged(stack: Stack) -> None:
    answer = b'{"error": {"code": "invalid_code", "message": "wrong code", "attempts_left": 2}}'
    stack.backend.answer = (400, answer)
    async with stack.http.post(stack.url + CONFIRM, json=CONFIRM_BODY) as resp:
        assert resp.status == 400 and await resp.read() == answer
    assert stack.backend.calls[0].path == CONFIRM


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        (
            {"data": b'{"email": "a@b"}', "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"data": b'{"email": "a@b"}'}, 415, "unsupported_media_type"),  # application/octet-stream
        ({"json": {"email": "x" * MAX_BODY}}, 413, "request_too_large"),
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "invalid_request"),
        ({"json": ["a@b"]}, 400, "invalid_request"),
        ({"json": "a@b"}, 400, "invalid_request"),
    ],
)
async def test_malformed_bodies_get_a_stable_error_and_never_reach_the_backend(
    stack: Stack, kwargs: dict[str, object], status: int, code: str
) -> None:
    got_status, body, resp = await stack.post(SEND, **kwargs)
    assert got_status == status and error_of(body)[0] == code
    assert resp.content_type == "application/json"
    assert stack.backend.calls == []


async def test_an_oversized_chunked_body_is_refused_without_reading_it_all(stack: Stack) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "'
        for _ in range(8):
            yield b"x" * 100

    status, body, _resp = await stack.post(SEND, data=chunks(), headers={"Content-Type": "application/json"})
    assert status == 413 and error_of(body)[0] == "request_too_large"
    assert stack.backend.calls == []


@pytest.mark.parametrize(
    ("path", "document", "field"),
    [
        (SEND, {}, "missing field 'email'"),
        (SEND, {"email": "a@b", "name": "x"}, "unexpected field 'name'"),
        (SEND, {"email": 5}, "field 'email' must be a string"),
        (SEND, {"email": None}, "field 'email' must be a string"),
        (CONFIRM, {**CONFIRM_BODY, "code": 123456}, "field 'code' must be a string"),
        (CONFIRM, {"challenge_id": "c", "code": "1"}, "missing field 'client_public_key'"),
        (CONFIRM, {**CONFIRM_BODY, "email": "a@b"}, "unexpected field 'email'"),
    ],
)
async def test_wrong_fields_are_named_and_never_reach_the_backend(
    stack: Stack, path: str, document: dict[str, object], field: str
) -> None:
    status, body, _resp = await stack.post(path, json=document)
    assert status == 400 and error_of(body) == ("invalid_request", field)
    assert stack.backend.calls == []


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        ((500, b'{"error": {"code": "internal", "message": "m"}}'), 503, "backend_unavailable"),
        ((200, b"<html>"), 503, "backend_unavailable"),
        ((200, b"[1]"), 503, "backend_unavailable"),
        ((404, b"not found"), 503, "backend_unavailable"),
    ],
)
async def test_answers_outside_the_contract_are_backend_unavailable(
    stack: Stack, answer: tuple[int, bytes], status: int, code: str
) -> None:
    stack.backend.answer = answer
    got_status, body, _resp = await stack.post(SEND, json={"email": "a@b"})
    assert got_status == status and error_of(body)[0] == code
    assert len(stack.backend.calls) == 1


async def test_a_slow_backend_is_504(stack: Stack) -> None:
    stack.backend.stall = True
    status, body, _resp = await stack.post(SEND, json={"email": "a@b"})
    assert status == 504 and error_of(body)[0] == "backend_timeout"


async def test_backend_down_is_503() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with start_stack(f"http://127.0.0.1:{port}", FakeBackend()) as stack:
        status, body, _resp = await stack.post(SEND, json={"email": "a@b"})
        assert status == 503 and error_of(body)[0] == "backend_unavailable"


async def test_other_paths_and_methods_get_json_errors(stack: Stack) -> None:
    status, body, _resp = await stack.post("/api/v1/public/auth/other", json={})
    assert status == 404 and error_of(body)[0] == "not_found"
    async with stack.http.get(stack.url + SEND) as resp:
        assert resp.status == 405 and "POST" in resp.headers["Allow"]
        assert error_of(orjson.loads(await resp.read()))[0] == "method_not_allowed"
    assert stack.backend.calls == []
