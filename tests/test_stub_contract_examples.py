"""Every example body and answer of the backend contract (protocol.md section 5), sent to the stub.

The shapes are the authsession service's own: ``actor`` is an object, revoke and user-blocks
answer with an ``outcome``, and ``created_at`` is RFC 3339 UTC with ``Z``. Each request below is
the spec's example byte for byte where it gives one; each answer is compared field by field,
types included (``same_json``: in Python ``1 == True``, in JSON they differ), over real HTTP
against a real stub.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgeward.native.crypto import Signer
from edgeward.native.session_record import parse_session
from edgeward.stub import state as stub_state
from tests.test_stub_backend import (
    CONFIRM,
    MAILBOX,
    SEND_CODE,
    SESSIONS,
    USER_BLOCKS,
    StubClient,
    assert_error,
    running_stub,
)

# The spec's example instant, "2026-04-05T12:00:00Z", and a login made 789 ms into that second.
EXAMPLE_CREATED_AT = "2026-04-05T12:00:00Z"
_EXAMPLE_MS = int(datetime.datetime(2026, 4, 5, 12, tzinfo=datetime.UTC).timestamp() * 1000)
RFC3339_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")

REVOKE_EXAMPLE = {"reason_code": "admin_revoke", "actor": {"type": "system"}}
BLOCK_EXAMPLE = {
    "email": "pilot@example.com",
    "reason_code": "policy_blocked",
    "actor": {"type": "admin", "id": "admin-1"},
}


@pytest.fixture
async def stub() -> AsyncIterator[StubClient]:
    async with running_stub() as client:
        yield client


def same_json(got: Any, want: Any) -> bool:
    """Equal as JSON values: same types at every level (no ``1 == True``, no ``1 == 1.0``)."""
    if type(got) is not type(want):
        return False
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(same_json(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(same_json(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want)


async def test_send_and_confirm_email_code_answer_only_the_contract_fields(stub: StubClient) -> None:
    signer = Signer.generate()
    sent = await stub.ok("POST", SEND_CODE, {"email": "pilot@example.com"})
    assert set(sent) == {"challenge_id"}
    assert isinstance(sent["challenge_id"], str)
    assert sent["challenge_id"]
    code = (await stub.ok("GET", f"{MAILBOX}/pilot@example.com"))["code"]
    body = {"challenge_id": sent["challenge_id"], "code": code, "client_public_key": signer.public_key_b64}
    confirmed = await stub.ok("POST", CONFIRM, body)
    assert set(confirmed) == {"device_session_id"}
    assert isinstance(confirmed["device_session_id"], str)
    assert confirmed["device_session_id"]
    status, answer = await stub.call("POST", CONFIRM, body)  # spent: the contract's error shape
    assert_error(status, answer, 404, "challenge_not_found")


async def test_session_read_is_the_contract_object_with_an_rfc3339_z_created_at(
    stub: StubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stub_state, "now_ms", lambda: _EXAMPLE_MS + 789)
    login = await stub.login("pilot@example.com")
    answer = await stub.ok("GET", f"{SESSIONS}/{login.device_session_id}")
    want = {
        "session": {
            "device_session_id": login.device_session_id,
            "user_id": login.user_id,
            "client_public_key": base64.b64encode(login.signer.public_key).decode(),
            "status": "active",
            "created_at": EXAMPLE_CREATED_AT,  # whole seconds, as in the spec's example
        }
    }
    assert same_json(answer, want), answer
    record = parse_session(answer["session"])  # what the gateway makes of it
    assert (record.user_id, record.client_public_key, record.revoked) == (login.user_id, login.signer.public_key, False)


async def test_created_at_is_the_login_time_in_utc(stub: StubClient) -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    login = await stub.login()
    after = datetime.datetime.now(datetime.UTC)
    created_at = (await stub.session(login.device_session_id))["created_at"]
    assert RFC3339_UTC.fullmatch(created_at), created_at
    created = datetime.datetime.fromisoformat(created_at)
    assert created.utcoffset() == datetime.timedelta(0)
    assert before <= created <= after


async def test_revoke_example(stub: StubClient) -> None:
    login = await stub.login()
    sibling = await stub.login()
    answer = await stub.ok("POST", f"{SESSIONS}/{login.device_session_id}/revoke", REVOKE_EXAMPLE)
    want = {"outcome": "revoked", "device_session_id": login.device_session_id, "affected_session_count": 1}
    assert same_json(answer, want), answer

    session = await stub.session(login.device_session_id)
    assert session["status"] == "revoked"
    assert type(session["revoked_at_ms"]) is int
    assert RFC3339_UTC.fullmatch(session["created_at"])
    record = parse_session(session)
    assert (record.revoked, record.revoked_at_ms) == (True, session["revoked_at_ms"])
    assert (await stub.session(sibling.device_session_id))["status"] == "active"


async def test_revoking_again_affects_no_session(stub: StubClient) -> None:
    login = await stub.login()
    path = f"{SESSIONS}/{login.device_session_id}/revoke"
    await stub.ok("POST", path, REVOKE_EXAMPLE)
    first_at = (await stub.session(login.device_session_id))["revoked_at_ms"]
    again = await stub.ok("POST", path, REVOKE_EXAMPLE)
    want = {"outcome": "revoked", "device_session_id": login.device_session_id, "affected_session_count": 0}
    assert same_json(again, want), again
    assert (await stub.session(login.device_session_id))["revoked_at_ms"] == first_at


async def test_user_blocks_example_by_email(stub: StubClient) -> None:
    first = await stub.login("pilot@example.com")
    second = await stub.login("pilot@example.com")
    already = await stub.login("pilot@example.com")
    await stub.ok("POST", f"{SESSIONS}/{already.device_session_id}/revoke", REVOKE_EXAMPLE)
    bystander = await stub.login("grace@example.com")

    answer = await stub.ok("POST", USER_BLOCKS, BLOCK_EXAMPLE)
    revoked_now = sorted([first.device_session_id, second.device_session_id])
    want = {
        "outcome": "blocked",
        "subject_kind": "email",
        "subject_value": "pilot@example.com",
        "affected_session_count": 2,
        "affected_device_session_ids": revoked_now,
    }
    assert same_json(answer, want), answer
    for dsid in revoked_now:
        assert (await stub.session(dsid))["status"] == "revoked"
    assert (await stub.session(bystander.device_session_id))["status"] == "active"


async def test_user_blocks_example_by_user_id(stub: StubClient) -> None:
    login = await stub.login("pilot@example.com")
    body = {"user_id": login.user_id, "reason_code": "policy_blocked", "actor": {"type": "admin", "id": "admin-1"}}
    answer = await stub.ok("POST", USER_BLOCKS, body)
    want = {
        "outcome": "blocked",
        "subject_kind": "user_id",
        "subject_value": login.user_id,
        "affected_session_count": 1,
        "affected_device_session_ids": [login.device_session_id],
    }
    assert same_json(answer, want), answer

    again = await stub.ok("POST", USER_BLOCKS, body)  # already blocked: nothing left to revoke
    assert same_json(again, {**want, "affected_session_count": 0, "affected_device_session_ids": []}), again


async def test_user_blocks_by_email_names_the_normalized_address(stub: StubClient) -> None:
    await stub.login("pilot@example.com")
    answer = await stub.ok("POST", USER_BLOCKS, {**BLOCK_EXAMPLE, "email": " Pilot@Example.COM"})
    assert (answer["subject_kind"], answer["subject_value"]) == ("email", "pilot@example.com")


@pytest.mark.parametrize(
    "actor",
    [
        pytest.param({"type": "system"}, id="system"),
        pytest.param({"type": "admin", "id": "admin-1"}, id="admin-with-id"),
        pytest.param({"type": "admin", "id": None}, id="id-null"),
        pytest.param("ops@example.com", id="older-string-form"),
    ],
)
async def test_every_actor_form_is_accepted(stub: StubClient, actor: Any) -> None:
    login = await stub.login()
    path = f"{SESSIONS}/{login.device_session_id}/revoke"
    answer = await stub.ok("POST", path, {"reason_code": "admin_revoke", "actor": actor})
    assert answer["affected_session_count"] == 1
    block = {"user_id": login.user_id, "reason_code": "policy_blocked", "actor": actor}
    blocked = await stub.ok("POST", USER_BLOCKS, block)
    assert blocked["outcome"] == "blocked"


@pytest.mark.parametrize(
    "actor",
    [
        pytest.param({}, id="no-type"),
        pytest.param({"id": "admin-1"}, id="id-without-type"),
        pytest.param({"type": ""}, id="empty-type"),
        pytest.param({"type": 5}, id="type-number"),
        pytest.param({"type": "admin", "id": ""}, id="empty-id"),
        pytest.param({"type": "admin", "id": 7}, id="id-number"),
        pytest.param({"type": "admin", "name": "Ada"}, id="unknown-member"),
        pytest.param(["system"], id="array"),
        pytest.param(5, id="number"),
        pytest.param("", id="empty-string"),
        pytest.param(False, id="false"),
    ],
)
async def test_a_bad_actor_is_400_and_the_same_body_with_a_good_one_is_not(stub: StubClient, actor: Any) -> None:
    login = await stub.login()
    revoke = f"{SESSIONS}/{login.device_session_id}/revoke"
    bodies = [
        (revoke, {"reason_code": "admin_revoke", "actor": actor}),
        (USER_BLOCKS, {"user_id": login.user_id, "reason_code": "policy_blocked", "actor": actor}),
    ]
    for path, body in bodies:
        status, answer = await stub.call("POST", path, body)
        assert_error(status, answer, 400, "invalid_request")
        assert "actor" in answer["error"]["message"]
    assert (await stub.session(login.device_session_id))["status"] == "active"
    for path, body in bodies:  # the actor was the only fault
        await stub.ok("POST", path, {**body, "actor": {"type": "admin", "id": "admin-1"}})
    assert (await stub.session(login.device_session_id))["status"] == "revoked"
