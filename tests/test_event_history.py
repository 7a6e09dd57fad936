"""The event history's Redis scripts against a real redis-server (docs/push.md, "Resuming a stream"):
one entry per event whichever gateways append it, and a gap exactly when something after the
position was trimmed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from edgeward.gateway.event_history import EventHistory, ResumePoint
from edgeward.io.redis import connect
from edgeward.io.resp import RespConnection
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RespConnection]:
    connection = RespConnection(redis_server.url)
    yield connection
    assert await connection.execute("CONFIG", "SET", "stream-node-max-entries", "100") == b"OK"
    await connection.close()


def append(history: EventHistory, event_id: str, device_session_id: str = "") -> None:
    history.append("usr_1", device_session_id, event_id, "test.event", event_id.encode(), 1_700_000_000_000, "t")


async def replayed(history: EventHistory, after: str | None, mark: str = "st") -> tuple[str, list[str]]:
    point = await history.resume_point("usr_1", after, mark, "gap")
    entries = await history.read("usr_1", point) if point.status == "ok" else []
    return point.status, [e.event_id for e in entries]


async def test_every_gateway_appends_each_event_but_it_is_recorded_once(
    redis: RespConnection, redis_server: RedisServer
) -> None:
    worker_1 = EventHistory(redis, max_len=100, max_age_ms=60_000)
    other = RespConnection(redis_server.url)  # the second worker's own connection
    worker_2 = EventHistory(other, max_len=100, max_age_ms=60_000)
    assert await replayed(worker_1, None, mark="start") == ("fresh", [])
    for event_id in ("e1", "e2", "e3"):
        append(worker_1, event_id)
        append(worker_2, event_id)
    await redis.drain()
    await other.drain()
    await worker_2.close()
    assert await redis.execute("XLEN", "edgeward:events:{usr_1}") == 3
    assert worker_1.append_failures == worker_2.append_failures == 0
    assert await replayed(worker_1, "start") == ("ok", ["e1", "e2", "e3"])
    assert await replayed(worker_1, "e1") == ("ok", ["e2", "e3"])
    assert await replayed(worker_1, "e3") == ("ok", [])
    entry = (await worker_1.read("usr_1", ResumePoint("ok", "0-0", "+")))[0]
    assert (entry.event_type, entry.payload, entry.timestamp_ms) == ("test.event", b"e1", 1_700_000_000_000)
    assert (entry.trace_id, entry.device_session_id) == ("t", "")


async def test_a_gap_is_reported_exactly_when_an_event_after_the_position_was_trimmed(redis: RespConnection) -> None:
    assert await redis.execute("CONFIG", "SET", "stream-node-max-entries", "1") == b"OK"  # exact trimming
    history = EventHistory(redis, max_len=3, max_age_ms=60_000)
    for n in range(1, 7):
        append(history, f"e{n}")
    await redis.drain()
    assert await redis.execute("XLEN", "edgeward:events:{usr_1}") == 3  # e4, e5, e6
    assert await replayed(history, "e3") == ("ok", ["e4", "e5", "e6"])  # e3 itself is gone: nothing missed
    assert await replayed(history, "e2") == ("gap", [])
    assert await replayed(history, "unknown") == ("gap", [])
    # The gap's own event is a position at the tail: what comes next is replayed from it.
    append(history, "e7")
    await redis.drain()
    assert await replayed(history, "gap") == ("ok", ["e7"])


async def test_a_resumed_stream_server_time_resumes_from_the_same_place(redis: RespConnection) -> None:
    history = EventHistory(redis, max_len=100, max_age_ms=60_000)
    append(history, "e1")
    append(history, "e2")
    await redis.drain()
    assert await replayed(history, "e1", mark="st2") == ("ok", ["e2"])
    assert await replayed(history, "st2") == ("ok", ["e2"])  # a client cut before e2 arrived


async def test_on_a_cluster_every_key_of_a_user_is_in_one_slot(cluster: RedisCluster) -> None:
    connection = connect(cluster.url)
    try:
        history = EventHistory(connection, max_len=100, max_age_ms=60_000)
        assert await replayed(history, None, mark="start") == ("fresh", [])
        append(history, "e1")
        append(history, "e2", device_session_id="dsid_1")
        for _ in range(500):  # the cluster client sends a pipeline from a task of its own
            if await connection.execute("XLEN", "edgeward:events:{usr_1}") == 2:
                break
            await asyncio.sleep(0.01)
        assert history.append_failures == 0
        assert await replayed(history, "start") == ("ok", ["e1", "e2"])
        assert await replayed(history, "e1") == ("ok", ["e2"])
        assert await replayed(history, "nope") == ("gap", [])
    finally:
        await connection.close()
