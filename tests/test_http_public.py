"""The public auth proxy on a real port, in front of a fake backend that records every call:
body checks, per-IP / per-e-mail / per-challenge limits (fake clock), X-Forwarded-For from trusted proxies."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from edgeward.gateway.backend import BackendClient
from edgeward.protection.client_address import TrustedProxies
from edgeward.protection.limiter import Limit, MemoryLimiter
from edgeward.public.limits import PublicLimits
from edgeward.public.listener import make_public_app

SEND = "/api/v1/public/auth/send-email-code"
CONFIRM = "/api/v1/public/auth/confirm-email-code"
MAX_BODY = 512
KEY = base64.b64encode(bytes(range(32))).decode()
CONFIRM_BODY = {"challenge_id": "chl_c-1", "code": "123456", "client_public_key": KEY}
SEND_BODY = {"email": "ada@example.com"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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
    refused: Counter[str]

    async def post(self, path: str, **kwargs: Any) -> tuple[int, dict[str, object], aiohttp.ClientResponse]:
        async with self.http.post(self.url + path, **kwargs) as resp:
            return resp.status, orjson.loads(await resp.read()), resp


@contextlib.asynccontextmanager
async def start_stack(
    backend_url: str,
    fake: FakeBackend,
    timeout_ms: int = 5_000,
    limits: PublicLimits | None = None,
    trusted: TrustedProxies | None = None,
) -> AsyncIterator[Stack]:
    """The proxy on a real port in front of ``backend_url``, and a client session to call it."""
    client = BackendClient(backend_url, timeout_ms=timeout_ms)
    await client.start()
    refused: Counter[str] = Counter()
    app = make_public_app(client, max_body_bytes=MAX_BODY, limits=limits, trusted_proxies=trusted, refused=refused)
    runner, url = await serve(app)
    try:
        async with aiohttp.ClientSession() as http:
            yield Stack(fake, url, http, refused)
    finally:
        fake.release.set()
        await runner.cleanup()
        await client.close()


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack() -> AsyncIterator[StackFactory]:
    """Start proxies (with limits or trusted proxies) in front of one fake backend."""
    fake = FakeBackend()
    app = web.Application()
    app.router.add_post("/{tail:.*}", fake.handle)
    backend_runner, backend_url = await serve(app)
    stacks = contextlib.AsyncExitStack()

    async def make(**kwargs: Any) -> Stack:
        return await stacks.enter_async_context(start_stack(backend_url, fake, timeout_ms=500, **kwargs))

    try:
        yield make
    finally:
        await stacks.aclose()
        await backend_runner.cleanup()


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


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
        for _ in range(12):
            yield b"x" * 100

    status, body, _resp = await stack.post(SEND, data=chunks(), headers={"Content-Type": "application/json"})
    assert status == 413 and error_of(body)[0] == "request_too_large"
    assert stack.backend.calls == []


@pytest.mark.parametrize(
    ("path", "document", "field"),
    [
        (SEND, {}, "missing field 'email'"),
        (SEND, {"email": "a@example.com", "name": "x"}, "unexpected field 'name'"),
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
    got_status, body, _resp = await stack.post(SEND, json=SEND_BODY)
    assert got_status == status and error_of(body)[0] == code
    assert len(stack.backend.calls) == 1


async def test_a_slow_backend_is_504(stack: Stack) -> None:
    stack.backend.stall = True
    status, body, _resp = await stack.post(SEND, json=SEND_BODY)
    assert status == 504 and error_of(body)[0] == "backend_timeout"


async def test_backend_down_is_503() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with start_stack(f"http://127.0.0.1:{port}", FakeBackend()) as stack:
        status, body, _resp = await stack.post(SEND, json=SEND_BODY)
        assert status == 503 and error_of(body)[0] == "backend_unavailable"


async def test_other_paths_and_methods_get_json_errors(stack: Stack) -> None:
    status, body, _resp = await stack.post("/api/v1/public/auth/other", json={})
    assert status == 404 and error_of(body)[0] == "not_found"
    async with stack.http.get(stack.url + SEND) as resp:
        assert resp.status == 405 and "POST" in resp.headers["Allow"]
        assert error_of(orjson.loads(await resp.read()))[0] == "method_not_allowed"
    assert stack.backend.calls == []


# ---- field syntax: every class of bad value, named, never forwarded ----

TOO_LONG_EMAIL = "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 57 + ".com"  # 255 characters


@pytest.mark.parametrize(
    ("path", "document", "field"),
    [
        *[
            (SEND, {"email": bad}, "email")
            for bad in (
                "",
                "ada",
                "a@b",  # a single-label domain
                "ada@@example.com",
                "ada lovelace@example.com",
                "ada@exa_mple.com",
                ".ada@example.com",
                "ada..l@example.com",
                "ada@-example.com",
                "ada@example.c0m-",
                "x" * 65 + "@example.com",  # local part over 64
                TOO_LONG_EMAIL,  # over 254
                "ädä@example.com",  # only ASCII addresses (IDN domains in their xn-- form)
                '"ada"@example.com',  # no quoted local parts
            )
        ],
        *[
            (CONFIRM, {**CONFIRM_BODY, "code": bad}, "code")
            # The last two: fullwidth and Arabic-Indic digits.
            for bad in ("", "123", "123456789", "12345a", " 123456", "\uff11\uff12\uff13\uff14", "\u0663" * 6)
        ],
        *[
            (CONFIRM, {**CONFIRM_BODY, "client_public_key": bad}, "client_public_key")
            for bad in (
                "",
                "a2V5",  # 3 bytes
                KEY[:-1],  # unpadded
                base64.b64encode(bytes(33)).decode(),
                base64.b64encode(bytes(31)).decode(),
                base64.urlsafe_b64encode(bytes([0xFB]) * 32).decode(),  # URL-safe alphabet
                KEY + " ",
                "=" * 44,
            )
        ],
        *[
            (CONFIRM, {**CONFIRM_BODY, "challenge_id": bad}, "challenge_id")
            for bad in ("", "x" * 129, "chl/../x", "chl id", "chl_ü")
        ],
    ],
)
async def test_each_bad_field_value_is_named_and_never_reaches_the_backend(
    stack: Stack, path: str, document: dict[str, object], field: str
) -> None:
    status, body, _resp = await stack.post(path, json=document)
    code, message = error_of(body)
    assert (status, code) == (400, "invalid_request")
    assert isinstance(message, str) and message.startswith(f"field '{field}' must be")
    assert stack.backend.calls == []
    assert stack.refused == {"invalid_request": 1}


@pytest.mark.parametrize(
    ("path", "document"),
    [
        (SEND, {"email": "Ada.Lovelace+sign-in@Example.COM"}),
        (SEND, {"email": " ada@example.com "}),
        (SEND, {"email": "o'brien@xn--bcher-kva.example"}),
        (SEND, {"email": "x" * 64 + "@example.com"}),
        (SEND, {"email": TOO_LONG_EMAIL[:-5] + ".com"}),  # 254 characters
        (CONFIRM, {**CONFIRM_BODY, "code": "0000"}),
        (CONFIRM, {**CONFIRM_BODY, "code": "01234567"}),
        (CONFIRM, {**CONFIRM_BODY, "challenge_id": "A" * 128}),
    ],
)
async def test_valid_values_are_forwarded_unchanged(stack: Stack, path: str, document: dict[str, object]) -> None:
    status, _body, _resp = await stack.post(path, json=document)
    assert status == 200
    (call,) = stack.backend.calls
    assert orjson.loads(call.body) == document


def test_an_email_is_normalized_to_its_mailbox() -> None:
    from edgeward.public.checks import normalize_email

    assert normalize_email(" Ada.Lovelace+sign-in@Example.COM ") == "ada.lovelace@example.com"
    assert normalize_email("+only-tag@example.com") == "+only-tag@example.com"
    assert normalize_email("ada@example") is None


# ---- rate limits: per IP, per e-mail, per challenge; 429 with Retry-After; reset with the clock ----


def limits(clock: FakeClock, **kwargs: Limit | None) -> PublicLimits:
    return PublicLimits(MemoryLimiter(clock), **kwargs)


async def assert_rate_limited(stack: Stack, path: str, document: object, retry_after: int, **kw: Any) -> None:
    before = len(stack.backend.calls)
    status, body, resp = await stack.post(path, json=document, **kw)
    assert (status, error_of(body)[0]) == (429, "rate_limited")
    assert resp.headers["Retry-After"] == str(retry_after)
    assert len(stack.backend.calls) == before  # never forwarded


async def test_the_per_ip_limit_trips_at_its_count_per_route_and_resets(make_stack: StackFactory) -> None:
    clock = FakeClock()
    stack = await make_stack(limits=limits(clock, ip=Limit(1 / 60, 3)))
    for _ in range(3):
        assert (await stack.post(SEND, json=SEND_BODY))[0] == 200
    await assert_rate_limited(stack, SEND, SEND_BODY, retry_after=60)
    assert (await stack.post(CONFIRM, json=CONFIRM_BODY))[0] == 200  # each route has its own count
    clock.now += 59_000
    await assert_rate_limited(stack, SEND, SEND_BODY, retry_after=1)
    clock.now += 1_000
    assert (await stack.post(SEND, json=SEND_BODY))[0] == 200
    clock.now += 3 * 60_000  # a full refill
    assert [(await stack.post(SEND, json=SEND_BODY))[0] for _ in range(4)] == [200, 200, 200, 429]
    assert stack.refused == {"rate_limited": 3}


async def test_malformed_requests_count_against_the_per_ip_limit(make_stack: StackFactory) -> None:
    stack = await make_stack(limits=limits(FakeClock(), ip=Limit(1 / 60, 2)))
    assert (await stack.post(SEND, data=b"x", headers={"Content-Type": "text/plain"}))[0] == 415
    assert (await stack.post(SEND, json={"email": "nope"}))[0] == 400
    await assert_rate_limited(stack, SEND, SEND_BODY, retry_after=60)


async def test_the_per_email_limit_counts_one_mailbox_however_spelled(make_stack: StackFactory) -> None:
    clock = FakeClock()
    stack = await make_stack(limits=limits(clock, ip=Limit(100, 100), email=Limit(1 / 3600, 2)))
    assert (await stack.post(SEND, json={"email": "ada@example.com"}))[0] == 200
    assert (await stack.post(SEND, json={"email": "Ada+1@Example.com"}))[0] == 200
    await assert_rate_limited(stack, SEND, {"email": " ADA+2@example.COM"}, retry_after=3600)
    assert (await stack.post(SEND, json={"email": "grace@example.com"}))[0] == 200  # another mailbox
    clock.now += 3_600_000
    assert (await stack.post(SEND, json={"email": "ada@example.com"}))[0] == 200
    await assert_rate_limited(stack, SEND, {"email": "ada@example.com"}, retry_after=3600)


async def test_the_per_challenge_limit_stops_guessing_a_code(make_stack: StackFactory) -> None:
    clock = FakeClock()
    stack = await make_stack(limits=limits(clock, ip=Limit(100, 100), challenge=Limit(1 / 3600, 5)))
    stack.backend.answer = (400, b'{"error": {"code": "invalid_code", "message": "wrong code"}}')
    for guess in range(5):
        status, body, _resp = await stack.post(CONFIRM, json={**CONFIRM_BODY, "code": f"{guess:06d}"})
        assert (status, error_of(body)[0]) == (400, "invalid_code")  # the backend's answer, passed through
    await assert_rate_limited(stack, CONFIRM, {**CONFIRM_BODY, "code": "000005"}, retry_after=3600)
    assert len(stack.backend.calls) == 5
    other = {**CONFIRM_BODY, "challenge_id": "chl_other"}
    assert (await stack.post(CONFIRM, json=other))[0] == 400  # another challenge: forwarded
    clock.now += 3_600_000
    assert (await stack.post(CONFIRM, json=CONFIRM_BODY))[0] == 400
    await assert_rate_limited(stack, CONFIRM, CONFIRM_BODY, retry_after=3600)


async def test_a_limiter_failing_closed_is_503(make_stack: StackFactory) -> None:
    from edgeward.protection.limiter import LimiterUnavailable

    class Down(MemoryLimiter):
        def acquire(self, hits: Any) -> Any:
            raise LimiterUnavailable("down")

    stack = await make_stack(limits=PublicLimits(Down(), ip=Limit(1, 1)))
    status, body, _resp = await stack.post(SEND, json=SEND_BODY)
    assert (status, error_of(body)[0]) == (503, "limiter_unavailable")
    assert stack.backend.calls == []


# ---- X-Forwarded-For: believed from trusted proxies only ----


async def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(make_stack: StackFactory) -> None:
    stack = await make_stack(limits=limits(FakeClock(), ip=Limit(1 / 60, 1)))
    assert (await stack.post(SEND, json=SEND_BODY, headers={"X-Forwarded-For": "198.51.100.1"}))[0] == 200
    # Another claimed address does not buy another budget: the peer is what counts.
    await assert_rate_limited(stack, SEND, SEND_BODY, retry_after=60, headers={"X-Forwarded-For": "198.51.100.2"})
    assert [call.forwarded_for for call in stack.backend.calls] == ["127.0.0.1"]


async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(make_stack: StackFactory) -> None:
    stack = await make_stack(
        limits=limits(FakeClock(), ip=Limit(1 / 60, 1)), trusted=TrustedProxies.parse("127.0.0.0/8, 10.0.0.0/8")
    )
    # The client claimed 6.6.6.6; the trusted proxy at 10.0.0.2 saw 198.51.100.1.
    chain = {"X-Forwarded-For": "6.6.6.6, 198.51.100.1, 10.0.0.2"}
    assert (await stack.post(SEND, json=SEND_BODY, headers=chain))[0] == 200
    await assert_rate_limited(stack, SEND, SEND_BODY, retry_after=60, headers=chain)
    other = {"X-Forwarded-For": "6.6.6.6, 198.51.100.2"}
    assert (await stack.post(SEND, json=SEND_BODY, headers=other))[0] == 200  # another client behind the proxy
    assert [call.forwarded_for for call in stack.backend.calls] == ["198.51.100.1", "198.51.100.2"]
