"""Replay store: reservation semantics, the memory bound, Redis batching, fail-closed and recovery.

Timeouts never decide a test by the machine's speed. A store talking to a Redis that answers gets
``HEALTHY_TIMEOUT_MS``, which a loaded machine cannot miss (the default 1 s once failed these tests
under load). The test about the timeout stops Redis (SIGSTOP), so its short timeout fires whatever
the speed. ``GUARD_S`` only turns a hang into a clean failure; it is no assertion of speed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from edgeward.gateway.replay import (
    MemoryReplayStore,
    RedisReplayStore,
    open_replay_store,
    replay_key,
)
from edgeward.reasons import Reason, Rejection
from tests.support.redis_server import RedisServer

TTL_MS = 600_000
HEALTHY_TIMEOUT_MS = 30_000
GUARD_S = 60


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# --- memory store --------------------------------------------------------------------------


async def test_memory_first_reserve_wins_second_is_replay() -> None:
    store = MemoryReplayStore(10, FakeClock())
    assert await store.reserve("dev-1", "req-1", TTL_MS) is True
    assert await store.reserve("dev-1", "req-1", TTL_MS) is False
    assert await store.reserve("dev-2", "req-1", TTL_MS) is True
    assert await store.reserve("dev-1", "req-2", TTL_MS) is True
    assert len(store) == 3


async def test_memory_expiry_frees_key_and_slot() -> None:
    clock = FakeClock()
    store = MemoryReplayStore(2, clock)
    assert await store.reserve("dev", "long", 100)
    assert await store.reserve("dev", "short", 10)
    clock.now += 9.9
    assert await store.reserve("dev", "short", 10) is False
    clock.now += 0.1  # "short" ends here; "long" (a different TTL, pushed earlier) does not
    assert len(store) == 1
    assert await store.reserve("dev", "short", 10) is True
    assert await store.reserve("dev", "long", 100) is False
    clock.now += 100
    assert len(store) == 0


async def test_memory_full_store_rejects_and_keeps_live_reservations() -> None:
    clock = FakeClock()
    store = MemoryReplayStore(2, clock)
    assert await store.reserve("dev", "a", 100)
    assert await store.reserve("dev", "b", 200)
    assert await store.ping() is False
    with pytest.raises(Rejection) as info:
        await store.reserve("dev", "c", 100)
    assert info.value.reason is Reason.REPLAY_STORE_UNAVAILABLE
    assert info.value.detail == "replay store full"
    # Nothing was evicted: both are still replays, even while full.
    assert await store.reserve("dev", "a", 100) is False
    assert await store.reserve("dev", "b", 100) is False
    assert len(store) == 2
    clock.now += 100  # "a" expires, its slot is free again
    assert await store.ping() is True
    assert await store.reserve("dev", "c", 100) is True
    assert await store.reserve("dev", "b", 100) is False


async def test_memory_close_rejects_later_reservations() -> None:
    store = MemoryReplayStore(2, FakeClock())
    assert await store.reserve("dev", "a", 100)
    await store.close()
    assert await store.ping() is False
    with pytest.raises(Rejection) as info:
        await store.reserve("dev", "b", 100)
    assert info.value.reason is Reason.REPLAY_STORE_UNAVAILABLE


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        MemoryReplayStore(0)
    with pytest.raises(ValueError):
        await MemoryReplayStore(1).reserve("dev", "a", 0)
    with pytest.raises(ValueError):
        replay_key("dev}", "a")


async def test_open_replay_store(redis_server: RedisServer) -> None:
    memory = open_replay_store(None, 5)
    assert isinstance(memory, MemoryReplayStore)
    assert memory.max_entries == 5
    remote = open_replay_store(redis_server.url, 5)  # the product's default timeout: nothing is sent
    assert isinstance(remote, RedisReplayStore)
    await memory.close()
    await remote.close()


# --- Redis store ---------------------------------------------------------------------------


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisReplayStore]:
    s = RedisReplayStore(redis_server.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    yield s
    await s.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def reserve_outcome(store: RedisReplayStore, request_id: str) -> bool | Reason:
    try:
        return await store.reserve("dev", request_id, TTL_MS)
    except Rejection as exc:
        return exc.reason


def test_replay_key_has_a_hash_tag_on_the_session() -> None:
    assert replay_key("dev.1:a-B_", "req-1") == "edgeward:replay:{dev.1:a-B_}:req-1"
    assert replay_key("d", "r", "p:") == "p:{d}:r"


async def test_redis_reserve_then_replay(store: RedisReplayStore, raw: aioredis.Redis) -> None:
    assert await store.reserve("dev-1", "req-1", 5_000) is True
    assert await store.reserve("dev-1", "req-1", 5_000) is False
    assert await store.reserve("dev-2", "req-1", 5_000) is True
    key = "edgeward:replay:{dev-1}:req-1"
    assert await raw.get(key) == b"1"
    assert 0 < await raw.pttl(key) <= 5_000
    assert sorted(await raw.keys("*")) == [key.encode(), b"edgeward:replay:{dev-2}:req-1"]
    assert await store.ping() is True


async def test_redis_batches_one_turn_into_one_pipeline(store: RedisReplayStore) -> None:
    ids = [f"req-{i}" for i in range(150)] + [f"req-{i}" for i in range(0, 150, 3)]
    assert len(ids) == 200
    results = await asyncio.gather(*(store.reserve("dev", rid, TTL_MS) for rid in ids))
    assert store.stats.pipelines == 1
    assert store.stats.commands == 200
    assert store.stats.errors == 0
    wins: dict[str, int] = {}
    for rid, won in zip(ids, results, strict=True):
        wins[rid] = wins.get(rid, 0) + won
    assert wins == {f"req-{i}": 1 for i in range(150)}


async def test_two_stores_share_reservations(redis_server: RedisServer, store: RedisReplayStore) -> None:
    other = RedisReplayStore(redis_server.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    try:
        assert await store.reserve("dev", "shared", TTL_MS) is True
        assert await other.reserve("dev", "shared", TTL_MS) is False
        assert await other.reserve("dev", "other", TTL_MS) is True
        assert await store.reserve("dev", "other", TTL_MS) is False
    finally:
        await other.close()


async def test_redis_cancelled_waiter_does_not_break_its_batch(store: RedisReplayStore) -> None:
    tasks = [asyncio.create_task(store.reserve("dev", f"c-{i}", TTL_MS)) for i in range(3)]
    await asyncio.sleep(0)  # all three are queued, the flush has not run yet
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], asyncio.CancelledError)
    assert store.stats.commands == 2  # the cancelled one was left out of the pipeline
    # Cancelled while the pipeline is in flight: the others still get their answer.
    tasks = [asyncio.create_task(store.reserve("dev", f"d-{i}", TTL_MS)) for i in range(3)]
    for _ in range(3):
        await asyncio.sleep(0)  # queued, flushed, the pipeline task started
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [True, True]
    assert (store.stats.pipelines, store.stats.commands, store.stats.errors) == (2, 5, 0)


async def test_redis_key_that_cannot_be_encoded_is_rejected_not_raised(store: RedisReplayStore) -> None:
    assert await reserve_outcome(store, "bad-\udc80") is Reason.REPLAY_STORE_UNAVAILABLE
    assert await store.reserve("dev", "after-bad-key", TTL_MS) is True  # the store still works


async def test_redis_command_error_fails_closed(store: RedisReplayStore, raw: aioredis.Redis) -> None:
    await raw.config_set("maxmemory", 1)  # noeviction: every write is refused with OOM
    try:
        assert await reserve_outcome(store, "oom") is Reason.REPLAY_STORE_UNAVAILABLE
    finally:
        await raw.config_set("maxmemory", 0)
    assert store.stats.errors == 1
    assert await store.reserve("dev", "oom", TTL_MS) is True


async def overlapping_reservations(store: RedisReplayStore, count: int) -> None:
    """One pipeline per reservation, each written while the previous one waits for its reply."""
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(store.reserve("dev", f"warm-{i}", TTL_MS)))
        for _ in range(3):
            await asyncio.sleep(0)  # queued, flushed, the pipeline task started
    assert await asyncio.gather(*tasks) == [True] * count


async def test_redis_down_fails_closed_then_recovers(
    redis_server: RedisServer, store: RedisReplayStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgeward.gateway.replay")
    await overlapping_reservations(store, 4)
    redis_server.stop()
    async with asyncio.timeout(GUARD_S):
        assert await reserve_outcome(store, "while-down") is Reason.REPLAY_STORE_UNAVAILABLE
        outcomes = await asyncio.gather(*(reserve_outcome(store, f"down-{i}") for i in range(10)))
        assert outcomes == [Reason.REPLAY_STORE_UNAVAILABLE] * 10
        assert await store.ping() is False
    assert store.stats.errors >= 2

    redis_server.start()  # same port, empty, and it has answered PING: the next reservation connects anew
    assert await reserve_outcome(store, "after-restart") is True
    assert await store.ping() is True
    outcomes = await asyncio.gather(*(reserve_outcome(store, f"up-{i}") for i in range(10)))
    assert outcomes == [True] * 10
    assert await store.reserve("dev", "after-restart", TTL_MS) is False
    # One line when Redis goes, one when it is back: not one per failed batch.
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]


async def reserve_a_fresh_id(store: RedisReplayStore, label: str, tries: int = 50) -> None:
    """Reserve through a store whose short timeout a loaded machine may miss although Redis answers:
    a timed-out try is made again with a new id (it may have been reserved), at most ``tries`` times."""
    for attempt in range(tries):
        if await reserve_outcome(store, f"{label}-{attempt}") is True:
            return
    pytest.fail(f"{label}: no reservation in {tries} tries")


async def test_redis_hung_fails_closed_on_the_socket_timeout(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that accepts but never answers (SIGSTOP) fails closed on the timeout, then recovers."""
    assert redis_server.proc is not None
    caplog.set_level(logging.WARNING, logger="edgeward.gateway.replay")
    s = RedisReplayStore(redis_server.url, socket_timeout_ms=200)
    try:
        await reserve_a_fresh_id(s, "before")  # connected: the hang meets a working connection
        caplog.clear()
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            async with asyncio.timeout(GUARD_S):
                assert await reserve_outcome(s, "hung") is Reason.REPLAY_STORE_UNAVAILABLE
                assert await s.ping() is False
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        [warning] = caplog.records
        assert "CommandTimeout" in warning.getMessage()  # failed by the timeout, nothing else
        await reserve_a_fresh_id(s, "after")
    finally:
        await s.close()


async def test_redis_restart_without_a_failed_request(
    redis_server: RedisServer, store: RedisReplayStore
) -> None:
    """Pooled connections the old server closed are retried on fresh ones, not failed on."""
    await overlapping_reservations(store, 4)
    redis_server.stop()
    redis_server.start()
    async with asyncio.timeout(GUARD_S):
        assert await store.reserve("dev", "probe", TTL_MS) is True
    assert store.stats.errors == 0


async def test_redis_close_answers_queued_and_rejects_later_reservations(redis_server: RedisServer) -> None:
    s = RedisReplayStore(redis_server.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    assert await s.reserve("dev", "a", TTL_MS) is True
    queued = asyncio.create_task(s.reserve("dev", "b", TTL_MS))
    await asyncio.sleep(0)  # queued; its flush is scheduled but has not run
    await s.close()
    assert await queued is True  # submitted before close: answered, not dropped
    with pytest.raises(Rejection) as info:
        await s.reserve("dev", "c", TTL_MS)
    assert info.value.reason is Reason.REPLAY_STORE_UNAVAILABLE
    assert await s.ping() is False
    await s.close()  # idempotent


async def test_redis_close_lets_sent_pipelines_answer(redis_server: RedisServer) -> None:
    s = RedisReplayStore(redis_server.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    sent = asyncio.create_task(s.reserve("dev", "a", TTL_MS))
    for _ in range(3):
        await asyncio.sleep(0)  # queued, flushed, the pipeline task started
    await s.close()
    assert await sent is True
