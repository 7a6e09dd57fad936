"""Steps 6 and 7 in one Redis round trip (docs/replay.md, "One round trip with the budgets"): the
replay store's reservation and the command budgets in one script call when both use one
single-node server, against a real redis-server.

Covered: one write and one command per request (the connection's counters and Redis's own
INFO commandstats), a replay charged nothing, a budget refusal, decisions equal to the two-step
Redis limiter's, the script cache lost, failing closed (Redis down, an error reply), and the
fallback to two steps (another server or database, a cluster URL, the limiter leaving Redis alone).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from edgeward.gateway.replay import MemoryReplayStore, RedisReplayStore, replay_key
from edgeward.io.redis import connect
from edgeward.io.resp import RespConnection
from edgeward.protection.budgets import CommandBudgets
from edgeward.protection.limiter import Limit
from edgeward.protection.redis_limiter import RedisLimiter, limit_key
from edgeward.reasons import Reason, Rejection
from tests.support.redis_server import RedisServer

T = TypeVar("T")
TTL_MS = 600_000
HEALTHY_TIMEOUT_MS = 30_000
HOUR = 1 / 3600


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def settle(value: T | Awaitable[T]) -> T:
    if isinstance(value, Awaitable):
        return await value
    return value


class Stack:
    """A Redis replay store and Redis budgets, each on its own connection, as the gateway has them."""

    def __init__(self, store_url: str, limiter_url: str, clock: FakeClock | None = None, **limits: Any) -> None:
        self.store = RedisReplayStore(store_url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
        self.limiter_redis = connect(limiter_url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
        self.limiter = RedisLimiter(self.limiter_redis, clock=clock, failure_mode="open", retry_ms=60_000)
        budgets = {"ip": None, "session": None, "user": None, "message_type": None, **limits}
        self.budgets = CommandBudgets(limiter=self.limiter, **budgets)
        self.shared = self.store.share_round_trip(self.budgets)

    async def request(self, request_id: str, session: str = "dev", ip: str = "10.0.0.1", user: str = "usr") -> str:
        """Steps 6 and 7 as the pipeline runs them: 'ok', or the rejection's reason (and budget)."""
        try:
            both = self.store.reserve_charging(session, request_id, TTL_MS, ip, user, "user.echo")
            if both is None:
                if not await self.store.reserve(session, request_id, TTL_MS):
                    return Reason.REPLAYED_REQUEST.wire
                await settle(self.budgets.charge(ip, session, user, "user.echo"))
                return "ok"
            first_seen, refusal = await both
            if not first_seen:
                return Reason.REPLAYED_REQUEST.wire
            if refusal is not None:
                raise refusal
        except Rejection as exc:
            return f"{exc.reason.wire}:{exc.metadata['budget']}" if exc.metadata else exc.reason.wire
        return "ok"

    async def close(self) -> None:
        await self.store.close()
        await self.limiter.close()
        await self.limiter_redis.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def stacks() -> AsyncIterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for stack in made:
        await stack.close()


def stack(stacks: list[Stack], store_url: str, limiter_url: str | None = None, **kw: Any) -> Stack:
    made = Stack(store_url, limiter_url or store_url, **kw)
    stacks.append(made)
    return made


async def commandstats(raw: aioredis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in (await raw.info("commandstats")).items()}


async def test_one_write_and_one_command_per_request(
    redis_server: RedisServer, raw: aioredis.Redis, stacks: list[Stack]
) -> None:
    s = stack(stacks, redis_server.url, session=Limit(HOUR, 100), user=Limit(HOUR, 100), ip=Limit(HOUR, 100))
    assert s.shared
    assert await s.request("warm-up") == "ok"  # NOSCRIPT, then EVAL: the script is cached
    await raw.config_resetstat()
    before = s.store.stats
    assert await s.request("r-1") == "ok"
    after = s.store.stats
    assert (after.pipelines - before.pipelines, after.commands - before.commands) == (1, 1)
    results = await asyncio.gather(*(s.request(f"c-{i}", f"dev-{i}") for i in range(32)))
    assert results == ["ok"] * 32
    assert (s.store.stats.pipelines - after.pipelines, s.store.stats.commands - after.commands) == (1, 32)
    assert (s.limiter_redis.writes, s.limiter_redis.commands_written) == (0, 0)  # the limiter sent nothing
    stats = await commandstats(raw)
    assert stats["evalsha"] == 33 and "eval" not in stats  # one script call per request, on Redis's side too
    assert await raw.get(replay_key("dev", "r-1")) == b"1"
    assert 0 < await raw.pttl(replay_key("dev", "r-1")) <= TTL_MS
    assert await raw.exists(limit_key("budget.session", "dev"), limit_key("budget.ip", "10.0.0.1")) == 2


async def test_two_steps_cost_two_writes(redis_server: RedisServer, stacks: list[Stack]) -> None:
    """The baseline the combination removes: a reservation, then the budgets on the limiter's connection."""
    s = stack(stacks, redis_server.url, session=Limit(HOUR, 100))
    s.store._budgets = None  # as before share_round_trip
    assert await s.request("warm-up") == "ok"
    before = (s.store.stats.pipelines, s.limiter_redis.writes)
    assert await s.request("r-1") == "ok"
    assert (s.store.stats.pipelines - before[0], s.limiter_redis.writes - before[1]) == (1, 1)


async def test_a_replay_is_refused_first_and_charged_nothing(
    redis_server: RedisServer, raw: aioredis.Redis, stacks: list[Stack]
) -> None:
    s = stack(stacks, redis_server.url, session=Limit(HOUR, 3))
    assert await s.request("a") == "ok"
    tat = await raw.get(limit_key("budget.session", "dev"))
    for _ in range(5):
        assert await s.request("a") == "replayed_request"
    assert await raw.get(limit_key("budget.session", "dev")) == tat  # untouched by the replays
    assert [await s.request(r) for r in "bcd"] == ["ok", "ok", "rate_limited:session"]
    # A refused request keeps its reservation, as with two steps: sent again, it is a replay.
    assert await s.request("d") == "replayed_request"


async def test_a_budget_refusal_names_the_budget_and_charges_none(
    redis_server: RedisServer, raw: aioredis.Redis, stacks: list[Stack]
) -> None:
    s = stack(stacks, redis_server.url, session=Limit(HOUR, 1), user=Limit(HOUR, 5))
    assert await s.request("a") == "ok"
    user_tat = await raw.get(limit_key("budget.user", "usr"))
    both = s.store.reserve_charging("dev", "b", TTL_MS, "10.0.0.1", "usr", "user.echo")
    assert both is not None
    first_seen, refusal = await both
    assert first_seen is True and refusal is not None
    assert (refusal.reason, refusal.metadata) == (Reason.RATE_LIMITED, {"budget": "session"})
    assert refusal.retry_after_ms is not None and 3_500_000 < refusal.retry_after_ms <= 3_600_000
    assert await raw.get(limit_key("budget.user", "usr")) == user_tat  # all or nothing: the user budget kept its unit


async def test_decisions_equal_the_two_step_redis_limiter(redis_server: RedisServer, stacks: list[Stack]) -> None:
    """Same keys, same arithmetic: the script and the limiter's own calls agree, and share state."""
    clock = FakeClock()
    limits: dict[str, Any] = {"ip": Limit(10, 3), "session": Limit(1, 2), "user": Limit(HOUR * 60, 4)}
    one = stack(stacks, redis_server.url, clock=clock, **limits)
    two = stack(stacks, redis_server.url, clock=clock, **limits)
    two.store._budgets = None
    rng = random.Random(7)
    for step in range(200):
        session, ip = rng.choice(["s1", "s2"]), rng.choice(["10.0.0.1", "10.0.0.2"])
        left, right = await asyncio.gather(
            one.request(f"one-{step}", session, ip), two.request(f"two-{step}", session + "'", ip + "'", "usr'")
        )
        await asyncio.sleep(0)  # the two-step limiter's refunds are written before the next step
        assert left == right, step
        clock.now += rng.choice([0, 0, 50, 300, 1000, 20_000])
    # And they share the budgets' state: the limiter's own acquire sees what the script charged.
    fresh = stack(stacks, redis_server.url, clock=clock, session=Limit(HOUR, 1))
    assert await fresh.request("x", "shared") == "ok"
    fresh.store._budgets = None
    assert await fresh.request("y", "shared") == "rate_limited:session"


async def test_the_script_cache_lost_costs_one_more_round_trip(
    redis_server: RedisServer, raw: aioredis.Redis, stacks: list[Stack]
) -> None:
    s = stack(stacks, redis_server.url, session=Limit(HOUR, 10))
    assert await s.request("a") == "ok"
    await raw.script_flush()
    assert await s.request("b") == "ok"
    assert await s.request("b") == "replayed_request"  # the EVALSHA that found no script reserved nothing


async def test_redis_down_fails_closed_with_replay_store_unavailable(
    redis_server: RedisServer, stacks: list[Stack]
) -> None:
    s = stack(stacks, redis_server.url, session=Limit(HOUR, 10))
    assert await s.request("a") == "ok"
    redis_server.stop()
    try:
        assert await s.request("b") == "replay_store_unavailable"
        assert s.store.stats.errors == 1
    finally:
        redis_server.start()
    assert await s.request("c") == "ok"  # a new connection, no call needed


async def test_an_error_reply_fails_closed(raw: aioredis.Redis, redis_server: RedisServer, stacks: list[Stack]) -> None:
    s = stack(stacks, redis_server.url, session=Limit(HOUR, 10))
    assert await s.request("a") == "ok"
    await raw.config_set("maxmemory", 1)  # noeviction: the script's writes are refused with OOM
    try:
        assert await s.request("b") == "replay_store_unavailable"
    finally:
        await raw.config_set("maxmemory", 0)
    assert await s.request("b") == "ok"


async def test_other_servers_databases_and_clusters_keep_two_steps(
    redis_server: RedisServer, stacks: list[Stack]
) -> None:
    other = RedisServer()
    other.start()
    try:
        db1 = redis_server.url.removesuffix("/0") + "/1"
        for dev, limiter_url in [("dev-1", other.url), ("dev-2", db1)]:
            s = stack(stacks, redis_server.url, limiter_url, session=Limit(HOUR, 1))
            assert not s.shared
            assert s.store.reserve_charging(dev, "a", TTL_MS, "10.0.0.1", "usr", "user.echo") is None
            assert [await s.request("a", dev), await s.request("a", dev), await s.request("b", dev)] == [
                "ok", "replayed_request", "rate_limited:session"
            ]
            assert s.store.stats.commands == 3  # three SETs; the budgets went on the limiter's connection
            assert s.limiter_redis.writes >= 2
    finally:
        other.close()
    # A cluster never combines (keys in different slots); nothing connects to decide that.
    cluster = "redis+cluster://127.0.0.1:1"
    s = stack(stacks, cluster, cluster, session=Limit(HOUR, 1))
    assert not s.shared
    assert s.store.reserve_charging("dev", "a", TTL_MS, "10.0.0.1", "usr", "user.echo") is None
    # The same server under another name is not recognised: two steps, never a wrong combination.
    assert not stack(stacks, redis_server.url, f"redis://localhost:{redis_server.port}/0").shared


async def test_while_the_limiter_leaves_redis_alone_the_reservation_goes_alone(
    redis_server: RedisServer, stacks: list[Stack]
) -> None:
    s = stack(stacks, redis_server.url, session=Limit(HOUR, 1))
    assert await s.request("a") == "ok"
    redis_server.stop()
    try:
        assert await settle(s.limiter.acquire(s.budgets.hits("10.0.0.1", "dev", "usr", "user.echo"))) is None
    finally:
        redis_server.start()  # the limiter failed ("open" admitted) and leaves Redis alone for a minute
    assert s.store.reserve_charging("dev", "b", TTL_MS, "10.0.0.1", "usr", "user.echo") is None
    assert await s.request("b") == "ok"  # reserved in Redis; budgets by the failure mode (open)
    assert await s.request("b") == "replayed_request"
    assert s.limiter.fallbacks == 2


async def test_memory_store_never_combines() -> None:
    assert MemoryReplayStore(10).reserve_charging("dev", "a", TTL_MS, "ip", "usr", "mt") is None


async def test_budgets_off_keep_the_plain_reservation(redis_server: RedisServer, stacks: list[Stack]) -> None:
    s = stack(stacks, redis_server.url)
    assert s.shared
    assert s.store.reserve_charging("dev", "a", TTL_MS, "10.0.0.1", "usr", "user.echo") is None
    assert isinstance(s.limiter_redis, RespConnection)
