"""The Redis limiter against a real redis-server: parity with the in-process back-end, the script
cache, hash-tagged keys, all-or-nothing refunds, and each failure mode with recovery.

The connection's timeout is generous (``HEALTHY_TIMEOUT_MS``): a loaded machine must never turn a
slow answer into a failure. The failure modes are made by stopping Redis, which refuses at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest

from edgeward.io.resp import RespConnection
from edgeward.protection.limiter import Hit, Limit, LimiterUnavailable, MemoryLimiter, Rate, Verdict
from edgeward.protection.redis_limiter import SCRIPT, RedisLimiter, limit_key
from tests.support.redis_server import RedisServer

T = TypeVar("T")
HEALTHY_TIMEOUT_MS = 30_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def settle(value: T | Awaitable[T]) -> T:
    if isinstance(value, Awaitable):
        return await value
    return value


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[RespConnection]:
    connection = RespConnection(redis_server.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    yield connection
    await connection.close()


def limiter(redis: RespConnection, clock: FakeClock | None = None, **kw: object) -> RedisLimiter:
    return RedisLimiter(redis, clock=clock, **kw)  # type: ignore[arg-type]


async def test_the_redis_back_end_decides_as_the_in_process_one(redis: RespConnection) -> None:
    clock = FakeClock()
    shared, local = limiter(redis, clock), MemoryLimiter(clock)
    rates = [Rate(Limit(10, 3)), Rate(Limit(1, 1)), Rate(Limit(1 / 60, 5))]
    rng = random.Random(5)
    for step in range(300):
        hits: list[Hit] = [
            (f"scope{i}", rng.choice("ab"), rates[i]) for i in sorted(rng.sample(range(3), rng.randint(1, 3)))
        ]
        expected = local.acquire(hits)
        got = await settle(shared.acquire(hits))
        await asyncio.sleep(0)  # refunds of the previous refusal are written before the next call
        assert (got is None) == (expected is None), step
        if got is not None and expected is not None:
            assert got[0] == expected[0] and got[1] == pytest.approx(expected[1], abs=1.0)
        clock.now += rng.choice([0, 0, 10, 100, 1000, 30_000])


async def test_penalize_and_blocked_as_the_in_process_one(redis: RespConnection) -> None:
    clock = FakeClock()
    shared, local = limiter(redis, clock), MemoryLimiter(clock)
    rate = Rate(Limit(1 / 60, 3))
    for _ in range(5):
        assert await settle(shared.penalize("g", "ip", rate, 30_000)) == local.penalize("g", "ip", rate, 30_000)
    clock.now += 10_000
    assert await settle(shared.blocked("g", "ip")) == pytest.approx(20_000.0)
    assert await settle(shared.blocked("g", "other")) == 0.0
    clock.now += 20_000
    assert await settle(shared.blocked("g", "ip")) == 0.0


async def test_refunds_and_charged_failures_as_the_in_process_one(redis: RespConnection) -> None:
    """The pre-auth guard's calls: a charge before the work, then a refund or the failure it became."""
    clock = FakeClock()
    shared, local = limiter(redis, clock), MemoryLimiter(clock)
    rate = Rate(Limit(1 / 60, 3))
    rng = random.Random(7)
    for step in range(300):
        op = rng.choice(["acquire", "acquire", "refund", "penalize", "charged", "blocked"])
        if op == "acquire":
            expected: object = local.acquire([("g", "ip", rate)])
            got: object = await settle(shared.acquire([("g", "ip", rate)]))
        elif op == "refund":  # sent without waiting; the next call on the connection runs after it
            local.refund("g", "ip", rate)
            shared.refund("g", "ip", rate)
            expected = got = None
        elif op == "blocked":
            expected, got = local.blocked("g", "ip"), await settle(shared.blocked("g", "ip"))
        else:
            charged = op == "charged"
            expected = local.penalize("g", "ip", rate, 30_000, charged=charged)
            got = await settle(shared.penalize("g", "ip", rate, 30_000, charged=charged))
        assert got == pytest.approx(expected, abs=1.0), (step, op)
        clock.now += rng.choice([0, 0, 1000, 20_000, 60_000])


async def test_a_refund_never_raises_a_key_above_its_burst(redis: RespConnection) -> None:
    shared = limiter(redis, FakeClock())
    hit: Hit = ("s", "k", Rate(Limit(1 / 3600, 3)))
    assert await settle(shared.acquire([hit])) is None
    for _ in range(3):  # one more than was charged, and a key never charged
        shared.refund(*hit)
    shared.refund("s", "never", hit[2])
    assert await redis.execute("KEYS", "edgeward:limit:*") == []  # a key at rest is no key at all
    assert [await settle(shared.acquire([hit])) is None for _ in range(4)] == [True, True, True, False]


async def test_a_refund_while_redis_is_left_alone_follows_the_charges(
    redis: RespConnection, redis_server: RedisServer
) -> None:
    shared = limiter(redis, FakeClock(), failure_mode="local", retry_ms=60_000)
    hit: Hit = ("s", "k", Rate(Limit(1 / 3600, 1)))
    redis_server.stop()
    try:
        assert await settle(shared.acquire([hit])) is None  # Redis fails: this process charges
        assert shared.acquire([hit]) is not None
        shared.refund(*hit)  # Redis is left alone: the refund goes to this process too
        assert shared.acquire([hit]) is None
    finally:
        redis_server.start()


async def test_redis_time_is_the_default_clock(redis: RespConnection) -> None:
    shared = limiter(redis)
    hit: Hit = ("s", "k", Rate(Limit(1 / 3600, 2)))
    assert [await settle(shared.acquire([hit])) for _ in range(3)][:2] == [None, None]
    verdict = await settle(shared.acquire([hit]))
    assert verdict is not None and 3_590_000 < verdict[1] <= 3_600_000  # the third waits one interval


async def test_keys_are_hash_tagged_and_expire(redis: RespConnection) -> None:
    shared = limiter(redis, FakeClock())
    rate = Rate(Limit(1, 5))
    await settle(shared.acquire([("budget.ip", "192.0.2.1", rate)]))
    await settle(shared.penalize("preauth", "192.0.2.1", Rate(Limit(1, 1)), 5000))
    await settle(shared.penalize("preauth", "192.0.2.1", Rate(Limit(1, 1)), 5000))
    keys = sorted(await redis.execute("KEYS", "edgeward:limit:*"))  # type: ignore[arg-type]
    assert keys == [
        b"edgeward:limit:budget.ip:{192.0.2.1}",
        b"edgeward:limit:preauth:{192.0.2.1}",
        b"edgeward:limit:preauth:{192.0.2.1}:block",
    ]
    assert limit_key("budget.ip", "192.0.2.1") == keys[0].decode()
    for key in keys:
        ttl = await redis.execute("PTTL", key)
        assert isinstance(ttl, int) and ttl > 0  # every key expires by itself


async def test_a_flushed_script_cache_is_refilled_through_eval(redis: RespConnection) -> None:
    shared = limiter(redis, FakeClock())
    hit: Hit = ("s", "k", Rate(Limit(1, 5)))
    assert await settle(shared.acquire([hit])) is None
    assert await redis.execute("SCRIPT", "FLUSH") == b"OK"
    assert await settle(shared.acquire([hit, ("s", "j", hit[2])])) is None  # NOSCRIPT, then EVAL
    sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
    assert await redis.execute("SCRIPT", "EXISTS", sha) == [1]
    assert shared.redis_errors == 0 and shared.fallbacks == 0


async def test_a_refusal_refunds_the_budgets_that_admitted(redis: RespConnection) -> None:
    clock = FakeClock()
    shared = limiter(redis, clock)
    loose: Hit = ("loose", "k", Rate(Limit(1, 3)))
    tight: Hit = ("tight", "k", Rate(Limit(1, 1)))
    assert await settle(shared.acquire([loose, tight])) is None
    for _ in range(5):
        verdict = await settle(shared.acquire([loose, tight]))
        assert verdict is not None and verdict[0] == 1
    await shared.close()  # waits for the refunds in flight
    assert [await settle(shared.acquire([loose])) for _ in range(3)] == [None, None, (0, pytest.approx(1000.0))]


async def test_calls_of_one_loop_turn_share_one_round_trip(redis: RespConnection, redis_server: RedisServer) -> None:
    shared = limiter(redis, FakeClock())
    rate = Rate(Limit(1000, 1000))
    await settle(shared.acquire([("s", "warm", rate)]))
    before = await redis.execute("INFO", "stats")
    results = await asyncio.gather(*(settle(shared.acquire([("s", f"k{i}", rate)])) for i in range(50)))
    after = await redis.execute("INFO", "stats")
    assert results == [None] * 50

    def read(info: object, field: str) -> int:
        assert isinstance(info, bytes)
        return int(info.split(f"{field}:".encode())[1].split(b"\r\n")[0])

    # 50 scripts (and the INFO) arrived in a few socket reads, not one read per script.
    assert read(after, "total_reads_processed") - read(before, "total_reads_processed") < 10


@pytest.mark.parametrize("mode", ["open", "closed", "local"])
async def test_each_failure_mode_then_recovery(redis: RespConnection, redis_server: RedisServer, mode: str) -> None:
    clock = FakeClock()
    shared = limiter(redis, clock, failure_mode=mode, retry_ms=0)
    hit: Hit = ("s", "k", Rate(Limit(1 / 3600, 1)))
    assert await settle(shared.acquire([hit])) is None
    redis_server.stop()
    try:
        outcomes: list[Verdict | str] = []
        for _ in range(2):
            try:
                outcomes.append(await settle(shared.acquire([hit])))
            except LimiterUnavailable:
                outcomes.append("unavailable")
        expected: dict[str, list[Verdict | str]] = {
            "open": [None, None],
            "closed": ["unavailable", "unavailable"],
            "local": [None, (0, pytest.approx(3_600_000.0))],  # this process's own count starts afresh
        }
        assert outcomes == expected[mode]
        assert shared.redis_errors >= 2 and shared.fallbacks == 2
        blocked = "unavailable"
        with contextlib.suppress(LimiterUnavailable):
            blocked = str(await settle(shared.blocked("g", "ip")))
        assert blocked == ("unavailable" if mode == "closed" else "0.0")
    finally:
        redis_server.start()
    # Redis is asked again (retry_ms=0: at once); the test server keeps no data over a restart.
    fallbacks = shared.fallbacks
    assert await settle(shared.acquire([hit])) is None
    assert (await settle(shared.acquire([hit])))[0] == 0  # type: ignore[index]
    assert shared.fallbacks == fallbacks


async def test_a_failed_redis_is_left_alone_for_retry_ms(redis: RespConnection, redis_server: RedisServer) -> None:
    shared = limiter(redis, FakeClock(), failure_mode="open", retry_ms=60_000)
    hit: Hit = ("s", "k", Rate(Limit(1, 1)))
    redis_server.stop()
    try:
        assert await settle(shared.acquire([hit])) is None
        errors = shared.redis_errors
        for _ in range(20):
            assert shared.acquire([hit]) is None  # decided at once, Redis not asked
        assert shared.redis_errors == errors and shared.fallbacks == 21
    finally:
        redis_server.start()
