"""The stub backend over real HTTP on loopback: e-mail login, sessions, admin actions, user API.

Each test starts its own ``StubBackend`` on ports chosen by the OS and stops it at the end. The
helpers here (``running_stub``, ``StubClient``) are shared with tests/test_stub_push.py and
tests/test_stub_projection.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from edgeward.config import Address, load
from edgeward.native.crypto import Signer
from edgeward.native.session_record import parse_session
from edgeward.stub import StubBackend, StubSettings
from edgeward.stub import state as stub_state
from edgeward.stub.state import MAX_WRONG_CODES

LOOPBACK_ANY = Address("127.0.0.1", 0)
WAIT_S = 5.0  # bound of every wait for the stub; generous for a loaded machine
DOCS = Path(__file__).resolve().parent.parent / "docs" / "stub-backend.md"

SEND_CODE = "/api/v1/public/auth/send-email-code"
CONFIRM = "/api/v1/public/auth/confirm-email-code"
SESSIONS = "/api/v1/internal/sessions"
USER_BLOCKS = "/api/v1/internal/user-blocks"
MAILBOX = "/api/v1/internal/stub/mailbox"
EVENTS = "/api/v1/internal/stub/events"
PROFILE = "/api/v1/user/profile"
ECHO = "/api/v1/user/echo"


@dataclasses.dataclass(frozen=True)
class Login:
    """A device session made by an e-mail login."""

    email: str
    device_session_id: str
    user_id: str
    signer: Signer


class StubClient:
    """Real HTTP to one running stub backend."""

    def __init__(self, backend: StubBackend, http: aiohttp.ClientSession) -> None:
        self.backend = backend
        self.http = http

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON answer); ``body`` is sent as JSON, ``data`` as raw bytes."""
        if body is not None:
            data = orjson.dumps(body)
        async with self.http.request(method, self.backend.base_url + path, data=data, headers=headers) as resp:
            raw = await resp.read()
            assert resp.content_type == "application/json", (resp.status, raw)
            return resp.status, orjson.loads(raw)

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, answer = await self.call(method, path, body, **kw)
        assert status == 200, answer
        return answer

    async def send_code(self, email: str) -> str:
        answer = await self.ok("POST", SEND_CODE, {"email": email})
        return str(answer["challenge_id"])

    async def mailbox(self, email: str) -> str:
        return str((await self.ok("GET", f"{MAILBOX}/{email}"))["code"])

    async def login(self, email: str = "ada@example.com", signer: Signer | None = None) -> Login:
        signer = signer or Signer.generate()
        challenge_id = await self.send_code(email)
        code = await self.mailbox(email)
        answer = await self.ok(
            "POST", CONFIRM, {"challenge_id": challenge_id, "code": code, "client_public_key": signer.public_key_b64}
        )
        device_session_id = answer["device_session_id"]  # the contract's answer names no user: read it
        return Login(email, device_session_id, (await self.session(device_session_id))["user_id"], signer)

    async def session(self, device_session_id: str) -> dict[str, Any]:
        answer = await self.ok("GET", f"{SESSIONS}/{device_session_id}")
        session: dict[str, Any] = answer["session"]
        return session

    async def revoke(self, device_session_id: str, body: Any = None) -> dict[str, Any]:
        """Revoke, then read the session back (the revoke answer carries only an outcome)."""
        answer = await self.ok("POST", f"{SESSIONS}/{device_session_id}/revoke", body)
        assert answer["outcome"] == "revoked", answer
        return await self.session(device_session_id)


@contextlib.asynccontextmanager
async def running_stub(**settings: Any) -> AsyncIterator[StubClient]:
    """A started stub backend on loopback (ports from the OS) and an HTTP client for it."""
    backend = StubBackend(StubSettings(stub_http_addr=LOOPBACK_ANY, stub_grpc_addr=LOOPBACK_ANY, **settings))
    await backend.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as http:
            yield StubClient(backend, http)
    finally:
        await backend.stop()


def assert_error(status: int, body: Any, want_status: int, want_code: str) -> None:
    """The contract's error answer: exactly ``{"error": {"code", "message"}}`` with a 4xx status."""
    assert 400 <= status < 500
    assert (status, body.get("error", {}).get("code")) == (want_status, want_code), body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


@pytest.fixture
async def stub() -> AsyncIterator[StubClient]:
    async with running_stub() as client:
        yield client


# --- e-mail login ----------------------------------------------------------------------------


async def test_email_login_gives_a_device_session(stub: StubClient) -> None:
    signer = Signer.generate()
    challenge_id = await stub.send_code("ada@example.com")
    mail = await stub.ok("GET", f"{MAILBOX}/ada@example.com")
    assert mail["challenge_id"] == challenge_id
    assert re.fullmatch(r"[0-9]{6}", mail["code"])

    answer = await stub.ok(
        "POST",
        CONFIRM,
        {"challenge_id": challenge_id, "code": mail["code"], "client_public_key": signer.public_key_b64},
    )
    assert isinstance(answer["device_session_id"], str)
    assert answer["device_session_id"]
    session = await stub.session(answer["device_session_id"])
    assert session["client_public_key"] == signer.public_key_b64


async def test_session_read_has_the_contract_shape(stub: StubClient) -> None:
    login = await stub.login()
    session = await stub.session(login.device_session_id)
    assert set(session) == {"device_session_id", "user_id", "client_public_key", "status", "created_at"}
    assert session["device_session_id"] == login.device_session_id
    assert session["user_id"] == login.user_id
    assert session["status"] == "active"
    assert session["client_public_key"] == login.signer.public_key_b64
    assert base64.b64decode(session["client_public_key"], validate=True) == login.signer.public_key
    assert session["created_at"].endswith("Z")  # RFC 3339 UTC (tests/test_stub_contract_examples.py)
    created = datetime.datetime.fromisoformat(session["created_at"])
    assert created.utcoffset() == datetime.timedelta(0)
    record = parse_session(session)  # what the gateway makes of it
    assert (record.user_id, record.client_public_key, record.revoked) == (login.user_id, login.signer.public_key, False)


async def test_logging_in_twice_with_one_email_gives_two_sessions_of_one_user(stub: StubClient) -> None:
    first = await stub.login("ada@example.com")
    second = await stub.login(" Ada@Example.COM")  # one mailbox, however it is spelled
    other = await stub.login("grace@example.com")
    assert first.device_session_id != second.device_session_id
    assert first.user_id == second.user_id
    assert other.user_id != first.user_id
    for login in (first, second):
        session = await stub.session(login.device_session_id)
        assert (session["user_id"], session["status"]) == (first.user_id, "active")
        assert session["client_public_key"] == login.signer.public_key_b64


async def test_mailbox_holds_the_latest_code_of_a_normalized_email(stub: StubClient) -> None:
    await stub.send_code("Ada@Example.com")
    latest = await stub.send_code("ada@example.com")
    mail = await stub.ok("GET", f"{MAILBOX}/ADA@example.com")
    assert mail["challenge_id"] == latest


async def test_mailbox_without_a_code_is_404(stub: StubClient) -> None:
    status, body = await stub.call("GET", f"{MAILBOX}/nobody@example.com")
    assert_error(status, body, 404, "mailbox_empty")


async def test_wrong_code_is_refused_and_the_challenge_stays_usable(stub: StubClient) -> None:
    key = Signer.generate().public_key_b64
    challenge_id = await stub.send_code("ada@example.com")
    status, body = await stub.call(
        "POST", CONFIRM, {"challenge_id": challenge_id, "code": "abcdef", "client_public_key": key}
    )
    assert_error(status, body, 400, "invalid_code")

    code = await stub.mailbox("ada@example.com")
    answer = await stub.ok("POST", CONFIRM, {"challenge_id": challenge_id, "code": code, "client_public_key": key})
    assert answer["device_session_id"]


async def test_too_many_wrong_codes_lock_the_challenge(stub: StubClient) -> None:
    key = Signer.generate().public_key_b64
    challenge_id = await stub.send_code("ada@example.com")
    for _ in range(MAX_WRONG_CODES):
        status, body = await stub.call(
            "POST", CONFIRM, {"challenge_id": challenge_id, "code": "abcdef", "client_public_key": key}
        )
        assert_error(status, body, 400, "invalid_code")
    code = await stub.mailbox("ada@example.com")
    body = {"challenge_id": challenge_id, "code": code, "client_public_key": key}
    status, answer = await stub.call("POST", CONFIRM, body)
    assert_error(status, answer, 429, "too_many_attempts")


async def test_a_challenge_is_spent_by_its_confirmation(stub: StubClient) -> None:
    key = Signer.generate().public_key_b64
    challenge_id = await stub.send_code("ada@example.com")
    code = await stub.mailbox("ada@example.com")
    body = {"challenge_id": challenge_id, "code": code, "client_public_key": key}
    await stub.ok("POST", CONFIRM, body)
    status, answer = await stub.call("POST", CONFIRM, body)
    assert_error(status, answer, 404, "challenge_not_found")


async def test_unknown_challenge_is_404(stub: StubClient) -> None:
    body = {"challenge_id": "chl_unknown", "code": "123456", "client_public_key": Signer.generate().public_key_b64}
    status, answer = await stub.call("POST", CONFIRM, body)
    assert_error(status, answer, 404, "challenge_not_found")


async def test_expired_challenge_is_410(stub: StubClient, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(stub_state, "monotonic_ms", lambda: clock[0])
    challenge_id = await stub.send_code("ada@example.com")
    code = await stub.mailbox("ada@example.com")
    clock[0] += stub.backend.settings.stub_challenge_ttl_ms
    body = {"challenge_id": challenge_id, "code": code, "client_public_key": Signer.generate().public_key_b64}
    status, answer = await stub.call("POST", CONFIRM, body)
    assert_error(status, answer, 410, "challenge_expired")
    status, answer = await stub.call("POST", CONFIRM, body)
    assert_error(status, answer, 404, "challenge_not_found")


_KEY = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("path", "data", "status", "code"),
    [
        (SEND_CODE, b"{not json", 400, "invalid_request"),
        (SEND_CODE, b"", 400, "invalid_request"),
        (SEND_CODE, b'["ada@example.com"]', 400, "invalid_request"),
        (SEND_CODE, b"{}", 400, "invalid_request"),
        (SEND_CODE, b'{"email": 5}', 400, "invalid_request"),
        (SEND_CODE, b'{"email": ""}', 400, "invalid_request"),
        (SEND_CODE, b'{"email": "no-at-sign"}', 400, "invalid_email"),
        (SEND_CODE, b'{"email": "a@b@c"}', 400, "invalid_email"),
        (SEND_CODE, b'{"email": "a b@example.com"}', 400, "invalid_email"),
        (CONFIRM, b"null", 400, "invalid_request"),
        (CONFIRM, b'{"code": "123456", "client_public_key": "' + _KEY.encode() + b'"}', 400, "invalid_request"),
        (CONFIRM, b'{"challenge_id": "chl_x", "client_public_key": "' + _KEY.encode() + b'"}', 400, "invalid_request"),
        (CONFIRM, b'{"challenge_id": "chl_x", "code": 123456, "client_public_key": "' + _KEY.encode() + b'"}', 400,
         "invalid_request"),
        (CONFIRM, b'{"challenge_id": "chl_x", "code": "123456"}', 400, "invalid_request"),
        (CONFIRM, b'{"challenge_id": "chl_x", "code": "123456", "client_public_key": "not base64!"}', 400,
         "invalid_client_public_key"),
        (CONFIRM, b'{"challenge_id": "chl_x", "code": "123456", "client_public_key": "AAAA"}', 400,
         "invalid_client_public_key"),
    ],
)
async def test_bad_auth_requests_get_the_error_shape(
    stub: StubClient, path: str, data: bytes, status: int, code: str
) -> None:
    got_status, body = await stub.call("POST", path, data=data)
    assert_error(got_status, body, status, code)


# --- sessions: read, revoke, user blocks ------------------------------------------------------


async def test_unknown_session_is_404_session_not_found(stub: StubClient) -> None:
    status, body = await stub.call("GET", f"{SESSIONS}/dsn_unknown")
    assert_error(status, body, 404, "session_not_found")
    status, body = await stub.call("POST", f"{SESSIONS}/dsn_unknown/revoke", {})
    assert_error(status, body, 404, "session_not_found")


async def test_revoke_marks_only_that_session_revoked(stub: StubClient) -> None:
    login = await stub.login()
    sibling = await stub.login()
    session = await stub.revoke(login.device_session_id, {"reason_code": "lost_device", "actor": {"type": "system"}})
    assert session["status"] == "revoked"
    assert isinstance(session["revoked_at_ms"], int)
    assert session["revoked_at_ms"] > 0
    assert session["client_public_key"] == login.signer.public_key_b64
    assert set(session) == {
        "device_session_id", "user_id", "client_public_key", "status", "created_at", "revoked_at_ms"
    }
    assert (await stub.session(sibling.device_session_id))["status"] == "active"
    record = parse_session(session)
    assert (record.revoked, record.revoked_at_ms) == (True, session["revoked_at_ms"])


async def test_revoking_twice_keeps_the_first_revocation_time(stub: StubClient) -> None:
    login = await stub.login()
    first = await stub.revoke(login.device_session_id)  # no body: the default reason
    second = await stub.revoke(login.device_session_id, {})
    assert first["revoked_at_ms"] == second["revoked_at_ms"]
    assert second["status"] == "revoked"


@pytest.mark.parametrize(
    "data",
    [b"[]", b"not json", b'{"reason_code": 7}', b'{"reason_code": ""}', b'{"actor": false}', b'{"actor": {}}'],
)
async def test_revoke_with_a_bad_body_is_400_and_changes_nothing(stub: StubClient, data: bytes) -> None:
    login = await stub.login()
    status, body = await stub.call("POST", f"{SESSIONS}/{login.device_session_id}/revoke", data=data)
    assert_error(status, body, 400, "invalid_request")
    assert (await stub.session(login.device_session_id))["status"] == "active"


@pytest.mark.parametrize("by", ["email", "user_id"])
async def test_user_block_revokes_every_session_of_the_user(stub: StubClient, by: str) -> None:
    first = await stub.login("ada@example.com")
    second = await stub.login("ada@example.com")
    already = await stub.login("ada@example.com")
    await stub.revoke(already.device_session_id)
    bystander = await stub.login("grace@example.com")

    who = {"email": "ADA@example.com"} if by == "email" else {"user_id": first.user_id}
    actor = {"type": "admin", "id": "admin-1"}
    answer = await stub.ok("POST", USER_BLOCKS, {**who, "reason_code": "abuse", "actor": actor})
    assert answer == {
        "outcome": "blocked",
        "subject_kind": by,
        "subject_value": "ada@example.com" if by == "email" else first.user_id,
        "affected_session_count": 2,
        "affected_device_session_ids": sorted([first.device_session_id, second.device_session_id]),
    }
    revoked = [await stub.session(login.device_session_id) for login in (first, second)]
    assert [s["status"] for s in revoked] == ["revoked", "revoked"]
    assert revoked[0]["revoked_at_ms"] == revoked[1]["revoked_at_ms"]
    assert (await stub.session(bystander.device_session_id))["status"] == "active"

    # A blocked user cannot log in again.
    challenge_id = await stub.send_code("ada@example.com")
    code = await stub.mailbox("ada@example.com")
    status, body = await stub.call(
        "POST", CONFIRM, {"challenge_id": challenge_id, "code": code, "client_public_key": _KEY}
    )
    assert_error(status, body, 403, "user_blocked")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"reason_code": "abuse", "actor": "ops"}, 400, "invalid_request"),  # neither email nor user_id
        ({"email": "ada@example.com", "user_id": "usr_x", "reason_code": "abuse", "actor": "ops"}, 400,
         "invalid_request"),
        ({"email": "ada@example.com", "actor": "ops"}, 400, "invalid_request"),
        ({"email": "ada@example.com", "reason_code": "abuse"}, 400, "invalid_request"),
        ({"user_id": 5, "reason_code": "abuse", "actor": "ops"}, 400, "invalid_request"),
        ({"email": "not-an-email", "reason_code": "abuse", "actor": "ops"}, 400, "invalid_email"),
        ({"email": "nobody@example.com", "reason_code": "abuse", "actor": "ops"}, 404, "user_not_found"),
        ({"user_id": "usr_unknown", "reason_code": "abuse", "actor": "ops"}, 404, "user_not_found"),
        ([], 400, "invalid_request"),
    ],
)
async def test_bad_user_blocks_are_refused(stub: StubClient, body: Any, status: int, code: str) -> None:
    login = await stub.login("ada@example.com")
    got_status, answer = await stub.call("POST", USER_BLOCKS, body)
    assert_error(got_status, answer, status, code)
    assert (await stub.session(login.device_session_id))["status"] == "active"


# --- user API ---------------------------------------------------------------------------------


def user_headers(user_id: str, **extra: str) -> dict[str, str]:
    return {"X-User-Id": user_id, **extra}


async def test_profile_get_and_update_round_trip(stub: StubClient) -> None:
    login = await stub.login("ada.lovelace@example.com")
    headers = user_headers(login.user_id)
    profile = (await stub.ok("GET", PROFILE, headers=headers))["profile"]
    assert set(profile) == {"user_id", "email", "display_name", "locale", "updated_at_ms"}
    assert profile["user_id"] == login.user_id
    assert profile["email"] == "ada.lovelace@example.com"
    assert profile["display_name"] == "ada.lovelace"
    assert profile["locale"] == "en"

    updated = (await stub.ok("PATCH", PROFILE, {"display_name": "Ada", "locale": "en-GB"}, headers=headers))["profile"]
    assert (updated["display_name"], updated["locale"]) == ("Ada", "en-GB")
    partial = (await stub.ok("PATCH", PROFILE, {"locale": "fr"}, headers=headers))["profile"]
    assert (partial["display_name"], partial["locale"]) == ("Ada", "fr")
    assert await stub.ok("GET", PROFILE, headers=headers) == {"profile": partial}

    # Profiles are per user: another user still has the defaults.
    other = (await stub.ok("GET", PROFILE, headers=user_headers("usr_never_logged_in")))["profile"]
    assert (other["email"], other["display_name"], other["locale"]) == (None, "usr_never_logged_in", "en")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(b'"Ada"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"nickname": "Ada"}', id="unknown-field"),
        pytest.param(b'{"display_name": "Ada", "user_id": "usr_other"}', id="unknown-beside-known"),
        pytest.param(b'{"display_name": 5}', id="display-name-number"),
        pytest.param(b'{"display_name": null}', id="display-name-null"),
        pytest.param(b'{"locale": ["en"]}', id="locale-array"),
        pytest.param(b'{"locale": true}', id="locale-bool"),
        pytest.param(b'{"display_name": ""}', id="display-name-empty"),
        pytest.param(b'{"display_name": "   "}', id="display-name-blank"),
        pytest.param(b'{"locale": "e"}', id="locale-too-short"),
        pytest.param(b'{"locale": "en_GB"}', id="locale-not-a-tag"),
    ],
)
async def test_bad_profile_update_is_400_with_the_stable_code(stub: StubClient, data: bytes) -> None:
    headers = user_headers("usr_1")
    before = await stub.ok("GET", PROFILE, headers=headers)
    status, body = await stub.call("PATCH", PROFILE, data=data, headers=headers)
    assert_error(status, body, 400, "invalid_profile_update")
    assert await stub.ok("GET", PROFILE, headers=headers) == before


@pytest.mark.parametrize(("method", "path"), [("GET", PROFILE), ("PATCH", PROFILE), ("POST", ECHO)])
async def test_user_api_requires_x_user_id(stub: StubClient, method: str, path: str) -> None:
    status, body = await stub.call(method, path, {})
    assert_error(status, body, 401, "missing_user")


async def test_echo_answers_with_the_headers_it_received(stub: StubClient) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = user_headers(
        "usr_1",
        **{
            "X-Device-Session-Id": "dsn_1",
            "X-Request-Id": "req-1",
            "X-Message-Type": "user.echo",
            "traceparent": traceparent,
        },
    )
    answer = await stub.ok("POST", ECHO, {"hello": ["world", 1]}, headers=headers)
    assert answer == {
        "echo": {"hello": ["world", 1]},
        "user_id": "usr_1",
        "device_session_id": "dsn_1",
        "request_id": "req-1",
        "message_type": "user.echo",
        "traceparent": traceparent,
    }
    empty = await stub.ok("POST", ECHO, headers=user_headers("usr_2"))
    assert empty == {
        "echo": None,
        "user_id": "usr_2",
        "device_session_id": None,
        "request_id": None,
        "message_type": None,
        "traceparent": None,
    }


async def test_echo_with_a_body_that_is_not_json_is_400(stub: StubClient) -> None:
    status, body = await stub.call("POST", ECHO, data=b"{not json", headers=user_headers("usr_1"))
    assert_error(status, body, 400, "invalid_request")


# --- HTTP plumbing, bounds, counters, settings -----------------------------------------------


async def test_http_failures_keep_the_error_shape() -> None:
    async with running_stub(stub_max_body_bytes=1024) as stub:
        status, body = await stub.call("GET", "/api/v1/nowhere")
        assert_error(status, body, 404, "not_found")

        async with stub.http.delete(stub.backend.base_url + PROFILE) as resp:
            assert resp.status == 405
            assert "PATCH" in resp.headers["Allow"]
            assert_error(resp.status, orjson.loads(await resp.read()), 405, "method_not_allowed")

        status, body = await stub.call("POST", ECHO, {"big": "x" * 2048}, headers=user_headers("usr_1"))
        assert_error(status, body, 413, "payload_too_large")


async def test_healthz(stub: StubClient) -> None:
    assert await stub.ok("GET", "/healthz") == {"status": "ok"}


async def test_calls_count_requests_by_route(stub: StubClient) -> None:
    assert sum(stub.backend.calls.values()) == 0
    login = await stub.login()
    await stub.session(login.device_session_id)
    await stub.call("GET", f"{SESSIONS}/dsn_unknown")  # failed requests count too
    await stub.ok("GET", PROFILE, headers=user_headers(login.user_id))
    await stub.call("GET", "/api/v1/nowhere")  # no route: not counted
    assert dict(stub.backend.calls) == {
        "public.send-email-code": 1,
        "stub.mailbox": 1,
        "public.confirm-email-code": 1,
        "sessions.get": 3,  # the login's own read of its user id, then two
        "user.profile.get": 1,
    }


async def test_the_oldest_sessions_are_forgotten_past_the_bound() -> None:
    async with running_stub(stub_max_sessions=2) as stub:
        logins = [await stub.login() for _ in range(3)]
        status, body = await stub.call("GET", f"{SESSIONS}/{logins[0].device_session_id}")
        assert_error(status, body, 404, "session_not_found")
        for login in logins[1:]:
            assert (await stub.session(login.device_session_id))["status"] == "active"


def test_settings_come_from_edgeward_variables() -> None:
    settings = load(
        StubSettings,
        env={
            "EDGEWARD_STUB_HTTP_ADDR": "127.0.0.1:18700",
            "EDGEWARD_STUB_GRPC_ADDR": "127.0.0.1:18701",
            "EDGEWARD_REDIS_URL": "redis://127.0.0.1:16379/0",
            "EDGEWARD_STUB_MAX_SESSIONS": "10",
        },
    )
    assert settings.stub_http_addr == Address("127.0.0.1", 18700)
    assert settings.stub_grpc_addr == Address("127.0.0.1", 18701)
    assert settings.redis_url == "redis://127.0.0.1:16379/0"
    assert settings.stub_max_sessions == 10
    defaults = load(StubSettings, env={})
    assert (defaults.stub_http_addr, defaults.stub_grpc_addr, defaults.redis_url) == (
        Address("127.0.0.1", 8700),
        Address("127.0.0.1", 8701),
        None,
    )


def _documented_settings() -> Iterator[tuple[str, str]]:
    for field in dataclasses.fields(StubSettings):
        default = "unset" if field.default is None else str(field.default)
        yield f"EDGEWARD_{field.name.upper()}", default


def test_every_setting_is_documented_with_its_default() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for env_name, default in _documented_settings():
        assert f"| `{env_name}` | `{default}` |" in text, env_name


async def _line_with(stream: asyncio.StreamReader, marker: bytes) -> bytes:
    """The first line holding ``marker``; the caller bounds the wait."""
    while line := await stream.readline():
        if marker in line:
            return line
    raise AssertionError(f"the output ended without {marker!r}")


async def test_edgeward_stub_backend_runs_from_edgeward_variables() -> None:
    env = {
        **os.environ,
        "EDGEWARD_STUB_HTTP_ADDR": "127.0.0.1:0",
        "EDGEWARD_STUB_GRPC_ADDR": "127.0.0.1:0",
        "EDGEWARD_LOG_LEVEL": "INFO",
    }
    env.pop("EDGEWARD_REDIS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeward", "stub-backend",
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        line = await asyncio.wait_for(_line_with(proc.stderr, b"stub backend listening"), 60)
        found = re.search(rb"http (http://127\.0\.0\.1:[0-9]+), push grpc (127\.0\.0\.1:[0-9]+);", line)
        assert found is not None, line
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as http,
            http.get(found[1].decode() + "/healthz") as resp,
        ):
            assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    finally:
        if proc.returncode is None:
            proc.terminate()  # SIGTERM: the stub stops cleanly
        await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
