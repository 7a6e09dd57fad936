"""The stub backend's Redis projection, in a private redis-server (tests/support/redis_server.py).

An HTTP answer waits for its snapshot's write attempt, so the keys and stream entries can be
read as soon as the answer arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio

from edgeward.native.session_record import parse_session
from edgeward.stub.projection import EVENTS_STREAM, SESSION_KEY_PREFIX
from tests.support.redis_server import RedisServer
from tests.test_stub_backend import USER_BLOCKS, WAIT_S, Login, running_stub

SNAPSHOT_FIELDS = {"device_session_id", "user_id", "client_public_key", "status"}


@contextlib.asynccontextmanager
async def redis_client(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.from_url(server.url, decode_responses=True, socket_timeout=WAIT_S)
    try:
        yield client
    finally:
        await client.aclose()


async def snapshot(client: redis.asyncio.Redis, device_session_id: str) -> Any:
    raw = await asyncio.wait_for(client.get(SESSION_KEY_PREFIX + device_session_id), WAIT_S)
    return None if raw is None else orjson.loads(raw)


async def stream_entries(client: redis.asyncio.Redis) -> list[dict[str, str]]:
    entries = await asyncio.wait_for(client.xrange(EVENTS_STREAM), WAIT_S)
    return [fields for _entry_id, fields in entries]


def active(login: Login) -> dict[str, Any]:
    return {
        "device_session_id": login.device_session_id,
        "user_id": login.user_id,
        "client_public_key": login.signer.public_key_b64,
        "status": "active",
    }


def as_stream_fields(snapshot: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in snapshot.items()}


async def test_a_login_projects_an_active_snapshot(redis_server: RedisServer) -> None:
    async with running_stub(redis_url=redis_server.url) as stub, redis_client(redis_server) as client:
        login = await stub.login()
        assert await snapshot(client, login.device_session_id) == active(login)
        assert await stream_entries(client) == [as_stream_fields(active(login))]


async def test_a_revocation_projects_a_revoked_snapshot(redis_server: RedisServer) -> None:
    async with running_stub(redis_url=redis_server.url) as stub, redis_client(redis_server) as client:
        login = await stub.login()
        revoked_at_ms = (await stub.revoke(login.device_session_id))["revoked_at_ms"]
        revoked = {**active(login), "status": "revoked", "revoked_at_ms": revoked_at_ms}
        assert await snapshot(client, login.device_session_id) == revoked
        entries = await stream_entries(client)
        assert entries == [as_stream_fields(active(login)), as_stream_fields(revoked)]
        assert entries[1]["revoked_at_ms"] == str(revoked_at_ms)
        # The gateway reads either form back as the same record.
        assert parse_session(entries[1]) == parse_session(revoked)
        assert parse_session(entries[1]).revoked_at_ms == revoked_at_ms


async def test_stream_entries_have_string_fields_and_revoked_at_only_when_revoked(
    redis_server: RedisServer,
) -> None:
    async with running_stub(redis_url=redis_server.url) as stub:
        login = await stub.login()
        await stub.revoke(login.device_session_id)
        await stub.revoke(login.device_session_id)  # a duplicate snapshot is normal
    # Read raw bytes, not decoded text, so the check is on what Redis holds.
    raw = redis.asyncio.from_url(redis_server.url, socket_timeout=WAIT_S)
    try:
        entries = await asyncio.wait_for(raw.xrange(EVENTS_STREAM), WAIT_S)
    finally:
        await raw.aclose()
    assert len(entries) == 3
    for _entry_id, fields in entries:
        values = {name.decode(): value.decode() for name, value in fields.items()}
        if values["status"] == "revoked":
            assert set(values) == SNAPSHOT_FIELDS | {"revoked_at_ms"}
            assert values["revoked_at_ms"].isdigit()
        else:
            assert values["status"] == "active"
            assert set(values) == SNAPSHOT_FIELDS
    assert entries[1][1] == entries[2][1]


async def test_a_user_block_projects_every_revoked_session(redis_server: RedisServer) -> None:
    async with running_stub(redis_url=redis_server.url) as stub, redis_client(redis_server) as client:
        first = await stub.login("ada@example.com")
        second = await stub.login("ada@example.com")
        bystander = await stub.login("grace@example.com")
        await stub.ok("POST", USER_BLOCKS, {"user_id": first.user_id, "reason_code": "abuse", "actor": "ops"})
        at_ms = (await stub.session(first.device_session_id))["revoked_at_ms"]
        for login in (first, second):
            assert await snapshot(client, login.device_session_id) == {
                **active(login),
                "status": "revoked",
                "revoked_at_ms": at_ms,
            }
        assert await snapshot(client, bystander.device_session_id) == active(bystander)
        revoked_entries = [e for e in await stream_entries(client) if e["status"] == "revoked"]
        assert sorted(e["device_session_id"] for e in revoked_entries) == sorted(
            [first.device_session_id, second.device_session_id]
        )
        assert {e["revoked_at_ms"] for e in revoked_entries} == {str(at_ms)}


async def test_a_forgotten_session_loses_its_key(redis_server: RedisServer) -> None:
    async with (
        running_stub(redis_url=redis_server.url, stub_max_sessions=1) as stub,
        redis_client(redis_server) as client,
    ):
        old = await stub.login()
        new = await stub.login()
        assert await snapshot(client, old.device_session_id) is None
        assert await snapshot(client, new.device_session_id) == active(new)


async def test_the_stub_serves_through_a_redis_outage(redis_server: RedisServer) -> None:
    async with running_stub(redis_url=redis_server.url) as stub:
        await stub.login()
        redis_server.stop()
        try:
            during = await stub.login()
            assert (await stub.session(during.device_session_id))["status"] == "active"
            assert stub.backend.projection is not None
            assert stub.backend.projection.failed_writes >= 1
        finally:
            redis_server.start()
        # Snapshots of the outage are lost, not replayed; new ones are written again.
        after = await stub.login()
        async with redis_client(redis_server) as client:
            assert await snapshot(client, during.device_session_id) is None
            assert await snapshot(client, after.device_session_id) == active(after)


async def test_without_redis_nothing_is_projected(redis_server: RedisServer) -> None:
    async with running_stub() as stub, redis_client(redis_server) as client:
        assert stub.backend.projection is None
        login = await stub.login()
        assert await snapshot(client, login.device_session_id) is None
        assert await asyncio.wait_for(client.exists(EVENTS_STREAM), WAIT_S) == 0
