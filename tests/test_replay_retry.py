"""Idempotent retry in the replay stores (docs/replay.md): ``claim`` and ``finish``, in memory and in
a real redis-server: the states of a reservation, the caps, the TTL, the key, failing closed."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis.asyncio as aioredis

from edgeward.client.sdk import GatewayError, _may_retry
from edgeward.gateway.replay import MemoryReplayStore, RedisReplayStore, fingerprint, replay_key
from edgeward.reasons import Reason, Rejection
from tests.support.redis_server import RedisServer

TTL_MS = 600_000
ME = fingerprint(b"h" * 32, b"s" * 64)
OTHER_PAYLOAD = fingerprint(b"H" * 32, b"s" * 64)
OTHER_SIGNATURE = fingerprint(b"h" * 32, b"S" * 64)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def reason_of(claim: asyncio.Future[bytes | None] | object) -> Reason:
    with pytest.raises(Rejection) as caught:
        await claim  # type: ignore[misc]
    return caught.value.reason


async def test_memory_claim_in_flight_then_kept_then_served() -> None:
    store = MemoryReplayStore(10, FakeClock())
    assert await store.claim("dev", "req", TTL_MS, ME) is None
    assert await reason_of(store.claim("dev", "req", TTL_MS, ME)) is Reason.REQUEST_IN_FLIGHT
    assert await reason_of(store.claim("dev", "req", TTL_MS, OTHER_PAYLOAD)) is Reason.REPLAYED_REQUEST
    store.finish("dev", "req", ME, b"signed answer")
    assert await store.claim("dev", "req", TTL_MS, ME) == b"signed answer"
    for other in (OTHER_PAYLOAD, OTHER_SIGNATURE):
        assert await reason_of(store.claim("dev", "req", TTL_MS, other)) is Reason.REPLAYED_REQUEST
    assert await store.reserve("dev", "req", TTL_MS) is False  # still a reservation for everyone else


async def test_memory_finished_without_answer_and_plain_reservations_are_replays() -> None:
    store = MemoryReplayStore(10, FakeClock(), max_response_bytes=4)
    assert await store.claim("dev", "failed", TTL_MS, ME) is None
    store.finish("dev", "failed", ME, None)
    assert await reason_of(store.claim("dev", "failed", TTL_MS, ME)) is Reason.REPLAYED_REQUEST
    assert await store.claim("dev", "big", TTL_MS, ME) is None
    store.finish("dev", "big", ME, b"12345")  # over the cap of 4
    assert await reason_of(store.claim("dev", "big", TTL_MS, ME)) is Reason.REPLAYED_REQUEST
    assert await store.reserve("dev", "sub", TTL_MS) is True  # a subscription: nothing kept
    assert await reason_of(store.claim("dev", "sub", TTL_MS, ME)) is Reason.REPLAYED_REQUEST


async def test_memory_kept_bytes_are_bounded_and_freed_at_expiry() -> None:
    clock = FakeClock()
    store = MemoryReplayStore(10, clock, max_response_bytes=10, max_kept_bytes=15)
    for rid in ("a", "b"):
        assert await store.claim("dev", rid, 100, ME) is None
        store.finish("dev", rid, ME, b"x" * 10)
    assert await store.claim("dev", "a", 100, ME) == b"x" * 10
    assert await reason_of(store.claim("dev", "b", 100, ME)) is Reason.REPLAYED_REQUEST  # past the total
    clock.now += 100  # both expire: their bytes are free again
    assert await store.claim("dev", "c", 100, ME) is None
    store.finish("dev", "c", ME, b"y" * 10)
    assert await store.claim("dev", "c", 100, ME) == b"y" * 10
    clock.now += 100
    store.finish("dev", "c", ME, b"late")  # expired meanwhile: nothing to keep it beside
    assert len(store) == 0


async def test_redis_claim_keeps_the_answer_in_the_reservation_with_its_ttl(redis_server: RedisServer) -> None:
    store = RedisReplayStore(redis_server.url, socket_timeout_ms=30_000, max_response_bytes=64)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await store.claim("dev", "req-redis-1", TTL_MS, ME) is None
        assert await reason_of(store.claim("dev", "req-redis-1", TTL_MS, ME)) is Reason.REQUEST_IN_FLIGHT
        store.finish("dev", "req-redis-1", ME, b"signed answer")
        assert await store.claim("dev", "req-redis-1", TTL_MS, ME) == b"signed answer"
        assert await reason_of(store.claim("dev", "req-redis-1", TTL_MS, OTHER_SIGNATURE)) is Reason.REPLAYED_REQUEST
        key = replay_key("dev", "req-redis-1")  # one key, in the reservation's own hash-tag slot
        assert await raw.get(key) == b"r" + ME + b"signed answer"
        assert 0 < await raw.pttl(key) <= TTL_MS  # KEEPTTL: the reservation's TTL, not a new one
        assert await store.claim("dev", "req-redis-2", TTL_MS, ME) is None
        store.finish("dev", "req-redis-2", ME, b"z" * 65)  # over the cap
        assert await reason_of(store.claim("dev", "req-redis-2", TTL_MS, ME)) is Reason.REPLAYED_REQUEST
        assert await raw.get(replay_key("dev", "req-redis-2")) == b"x"
        store.finish("dev", "never-claimed", ME, b"a")  # XX: nothing written without a reservation
        await store.close()
        assert await raw.exists(replay_key("dev", "never-claimed")) == 0
    finally:
        await store.close()
        await raw.aclose()


async def test_redis_claim_fails_closed(redis_server: RedisServer) -> None:
    store = RedisReplayStore(redis_server.url, socket_timeout_ms=30_000)
    try:
        assert await store.claim("dev", "req-down-1", TTL_MS, ME) is None
        redis_server.stop()
        try:
            assert await reason_of(store.claim("dev", "req-down-1", TTL_MS, ME)) is Reason.REPLAY_STORE_UNAVAILABLE
            store.finish("dev", "req-down-1", ME, b"answer")  # lost: never raises
        finally:
            redis_server.start()
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("code", "reason", "retried"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", True),  # the client's own deadline
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", True),
        (grpc.StatusCode.CANCELLED, "Cancelled", True),
        (grpc.StatusCode.UNAVAILABLE, "request_in_flight", True),
        (grpc.StatusCode.UNAVAILABLE, "replay_store_unavailable", True),
        (grpc.StatusCode.UNAVAILABLE, "shutting_down", True),
        (grpc.StatusCode.UNAVAILABLE, "backend_unavailable", False),  # the gateway's verdict: known
        (grpc.StatusCode.DEADLINE_EXCEEDED, "backend_timeout", False),
        (grpc.StatusCode.ALREADY_EXISTS, "replayed_request", False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited", False),
    ],
)
def test_the_sdk_resends_only_when_the_outcome_is_unknown(code: grpc.StatusCode, reason: str, retried: bool) -> None:
    assert _may_retry(GatewayError(code, reason, {}, None)) is retried
