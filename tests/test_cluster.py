"""edgeward.io.cluster against a real Redis Cluster (3 masters, 3 replicas; tests/support/redis_cluster.py):
slots as Redis computes them, routing to every master, pipelines split per node and reassembled,
ASK during a slot migration and MOVED after it, the replay store and the Redis limiter on the
cluster, and fail-closed replay while a killed master's replica takes over.

Connections get generous timeouts (``HEALTHY_TIMEOUT_MS``): a loaded machine must not turn a slow
answer into a failure. Waits (failover) poll with a deadline that only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest

from edgeward.config import load
from edgeward.gateway.replay import RedisReplayStore, replay_key
from edgeward.gateway.settings import GatewaySettings
from edgeward.io.cluster import ClusterConnection, command_key, key_slot, parse_cluster_url
from edgeward.io.redis import connect
from edgeward.io.resp import RespConnection
from edgeward.protection.limiter import Limit, Rate
from edgeward.protection.redis_limiter import SCRIPT, RedisLimiter, limit_key
from edgeward.reasons import Reason, Rejection
from tests.support.redis_cluster import RedisCluster, command

T = TypeVar("T")
HEALTHY_TIMEOUT_MS = 30_000
TTL_MS = 600_000
FAILOVER_DEADLINE_S = 60.0


@pytest.fixture
async def client(cluster: RedisCluster) -> AsyncIterator[ClusterConnection]:
    conn = ClusterConnection(cluster.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    yield conn
    await conn.close()


def owner(cluster: RedisCluster, slot: int) -> int:
    """The port of the master serving ``slot`` now."""
    for port, ranges in cluster.masters().items():
        if any(start <= slot <= end for start, end in ranges):
            return port
    raise AssertionError(f"slot {slot} has no master")


def names_on_each_master(cluster: RedisCluster, key: str = "{name}") -> dict[int, str]:
    """A name per master: ``key`` with ``name`` replaced lands in a slot that master serves."""
    found: dict[int, str] = {}
    for i in itertools.count():
        name = f"s{i}"
        found.setdefault(owner(cluster, key_slot(key.replace("name", name))), name)
        if len(found) == 3:
            return found
    raise AssertionError("unreachable")


async def settle(value: T | Awaitable[T]) -> T:
    if isinstance(value, Awaitable):
        return await value
    return value


def key_in_slot(slot: int, prefix: str) -> str:
    for i in itertools.count():
        if key_slot(key := f"{prefix}{i}") == slot:
            return key
    raise AssertionError("unreachable")


# --- pure parts --------------------------------------------------------------------------------


def test_key_positions_of_the_commands_edgeward_sends() -> None:
    assert command_key(("SET", "k", b"1", b"NX", b"PX", 5)) == "k"
    assert command_key((b"get", b"k")) == b"k"
    assert command_key(("EVALSHA", "sha", 2, "a", "b", "now")) == "a"
    assert command_key(("EVAL", "script", "1", "a")) == "a"
    assert command_key(("XREAD", "COUNT", 10, "BLOCK", 0, "streams", "gateway:session_events", "$")) == (
        "gateway:session_events"
    )
    for refused in (("KEYS", "*"), ("EVAL", "s", 0), ("FLUSHALL",), ("SET",), ("XREAD", "COUNT", 1)):
        with pytest.raises(ValueError):
            command_key(refused)


def test_cluster_urls() -> None:
    assert parse_cluster_url("redis+cluster://a:7000,b:7001,[::1]:7002") == (
        [("a", 7000), ("b", 7001), ("::1", 7002)], None, None
    )
    assert parse_cluster_url("redis+cluster://u:p%40w@h") == ([("h", 6379)], "u", "p@w")
    for bad in ("redis://h:1", "redis+cluster://h:1/2", "redis+cluster://h:1?db=0", "redis+cluster://h:x",
                "redis+cluster://"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)
    assert isinstance(connect("redis+cluster://h:1"), ClusterConnection)
    assert isinstance(connect("redis://h:1"), RespConnection)
    url = "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
    settings = load(GatewaySettings, {"EDGEWARD_REDIS_URL": url, "EDGEWARD_LIMITER_REDIS_URL": url})
    assert settings.redis_url == settings.limiter_redis_url == url


# --- against the cluster -----------------------------------------------------------------------


async def test_slots_are_the_ones_redis_computes(cluster: RedisCluster) -> None:
    keys: list[str | bytes] = [f"key:{i}" for i in range(2000)]
    keys += ["{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "{}", "{", "}{x}", "a{b",
             "edgeward:replay:{dsn_1}:req", "édge{wärd}", b"\xff\x00{\x01}"]
    conn = RespConnection(f"redis://127.0.0.1:{cluster.ports[0]}", socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    try:
        answers = await conn.pipeline([("CLUSTER", "KEYSLOT", key) for key in keys])
    finally:
        await conn.close()
    assert [key_slot(key) for key in keys] == answers


async def test_commands_reach_every_master(cluster: RedisCluster, client: ClusterConnection) -> None:
    names = names_on_each_master(cluster, "route:{name}")
    for port, name in names.items():
        assert await client.execute("SET", f"route:{{{name}}}", port) == b"OK"
        assert await client.execute("GET", f"route:{{{name}}}") == str(port).encode()
        assert command(port, "GET", f"route:{{{name}}}") == str(port).encode()  # it is on that master
    assert client.redirects == 0


async def test_a_pipeline_across_nodes_is_split_per_node_and_answered_in_order(
    cluster: RedisCluster, client: ClusterConnection
) -> None:
    await client.refresh()
    keys = [f"pipe:{i}" for i in range(60)]
    assert len({owner(cluster, key_slot(key)) for key in keys}) == 3
    before = client.writes
    commands = [("SET", key, i) for i, key in enumerate(keys)] + [("GET", key) for key in keys]
    replies = await client.pipeline(commands)
    assert replies == [b"OK"] * 60 + [str(i).encode() for i in range(60)]
    assert client.writes - before == 3  # one write per master, in one loop turn
    # Concurrent single commands of one turn share those per-node writes too.
    before = client.writes
    assert await asyncio.gather(*(client.execute("GET", key) for key in keys)) == [str(i).encode() for i in range(60)]
    assert client.writes - before == 3


def node_id(port: int) -> str:
    answer = command(port, "CLUSTER", "MYID")
    assert isinstance(answer, bytes)
    return answer.decode()


def assign(cluster: RedisCluster, slot: int, port: int) -> None:
    """Finish a slot move: the new owner first (it bumps its epoch), then every master."""
    target = node_id(port)
    assert command(port, "CLUSTER", "SETSLOT", slot, "NODE", target) == b"OK"
    for other in cluster.masters():
        assert command(other, "CLUSTER", "SETSLOT", slot, "NODE", target) == b"OK"


async def wait_owner(cluster: RedisCluster, slot: int, port: int) -> None:
    """Until every running node names ``port`` as the slot's master (gossip spreads it)."""
    views: dict[int, set[int]] = {}
    try:
        async with asyncio.timeout(FAILOVER_DEADLINE_S):
            while True:
                for node in cluster.running():
                    ranges = command(node, "CLUSTER", "SLOTS")
                    assert isinstance(ranges, list), ranges
                    views[node] = {master for start, end, (_, master, *_), *_ in ranges if start <= slot <= end}
                if set().union(*views.values()) == {port}:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"slot {slot}: not all nodes name {port} its master; node -> master: {views}") from None


def cluster_info(port: int) -> dict[str, str]:
    answer = command(port, "CLUSTER", "INFO")
    assert isinstance(answer, bytes)
    return dict(line.split(":", 1) for line in answer.decode().split() if ":" in line)


async def wait_epoch_known(port: int, other: int) -> None:
    """Until the node on ``port`` has learnt the config epoch of the node on ``other``."""
    async with asyncio.timeout(FAILOVER_DEADLINE_S):
        while True:
            if int(cluster_info(port)["cluster_current_epoch"]) >= int(cluster_info(other)["cluster_my_epoch"]):
                return
            await asyncio.sleep(0.05)


class SlotMove:
    """A slot MIGRATING from its master to another, IMPORTING there, until ``finish()`` assigns it."""

    def __init__(self, cluster: RedisCluster, slot: int) -> None:
        self.cluster, self.slot = cluster, slot
        self.source = owner(cluster, slot)
        self.target = next(port for port in cluster.masters() if port != self.source)
        self.finished = False

    def start(self, source: int, target: int) -> None:
        assert command(target, "CLUSTER", "SETSLOT", self.slot, "IMPORTING", node_id(source)) == b"OK"
        assert command(source, "CLUSTER", "SETSLOT", self.slot, "MIGRATING", node_id(target)) == b"OK"

    def finish(self) -> None:
        assign(self.cluster, self.slot, self.target)
        self.finished = True


@contextlib.asynccontextmanager
async def moving_slot(cluster: RedisCluster, slot: int) -> AsyncIterator[SlotMove]:
    """A slot move, undone afterwards the same way (its keys deleted), so other tests see the old map."""
    move = SlotMove(cluster, slot)
    move.start(move.source, move.target)
    try:
        yield move
    finally:
        for port in (move.source, move.target):
            keys = command(port, "CLUSTER", "GETKEYSINSLOT", slot, 1000)
            for key in keys if isinstance(keys, list) else []:
                command(port, "DEL", key)
        if move.finished:  # back through IMPORTING, so the old owner bumps its epoch and wins
            # Once it knows the new owner's epoch: a bump from an older current epoch can end on the
            # same epoch as the new owner's, and the replicas, which learn owners by gossip, keep a
            # slot's owner against a claim of an equal epoch (seen once: wait_owner timed out).
            await wait_epoch_known(move.source, move.target)
            move.start(move.target, move.source)
            assign(cluster, slot, move.source)
        else:
            for port in (move.source, move.target):
                command(port, "CLUSTER", "SETSLOT", slot, "STABLE")
        await wait_owner(cluster, slot, move.source)


async def test_ask_is_followed_without_changing_the_map_and_moved_updates_it(
    cluster: RedisCluster, client: ClusterConnection
) -> None:
    slot = 1234
    first, second = key_in_slot(slot, "ask:a"), key_in_slot(slot, "ask:b")
    await client.refresh()
    async with moving_slot(cluster, slot) as move:
        # The key is not on the source: it answers ASK, and the client asks the target.
        assert await client.execute("SET", first, "1") == b"OK"
        assert client.redirects == 1
        assert str(command(move.source, "GET", first)).startswith("ASK ")  # not on the source
        # The map still names the source: the next key of the slot goes there first again.
        assert await client.execute("SET", second, "2") == b"OK"
        assert client.redirects == 2
        # The move ends: the source answers MOVED, the client retries at the target and keeps it.
        move.finish()
        assert await client.execute("GET", first) == b"1"
        assert client.redirects == 3
        assert await client.execute("GET", second) == b"2"
        assert client.redirects == 3
        assert command(move.target, "GET", first) == b"1"


async def test_a_stale_map_is_corrected_by_moved_in_a_pipeline(
    cluster: RedisCluster, client: ClusterConnection
) -> None:
    slot = 4321
    key = key_in_slot(slot, "moved:")
    await client.refresh()
    async with moving_slot(cluster, slot) as move:
        move.finish()  # an empty slot moves at once; the client's map is now stale
        replies = await client.pipeline([("SET", key, "x"), ("SET", "pipe:other", "y"), ("GET", key)])
        assert replies == [b"OK", b"OK", b"x"]
        assert client.redirects == 2
        assert command(move.target, "GET", key) == b"x"


async def test_unrouted_commands_are_refused_before_anything_is_sent(client: ClusterConnection) -> None:
    with pytest.raises(ValueError):
        await client.execute("KEYS", "*")
    with pytest.raises(ValueError):
        client.pipeline([("GET", "a"), ("FLUSHALL",)])
    assert client.writes == 0


# --- the replay store and the limiter on the cluster ------------------------------------------


async def test_replay_reservations_on_every_master(cluster: RedisCluster) -> None:
    store = RedisReplayStore(cluster.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    try:
        sessions = names_on_each_master(cluster, replay_key("name", "r"))
        for port, session in sessions.items():
            # Twenty concurrent tries of one request: exactly one reservation.
            results = await asyncio.gather(*(store.reserve(session, "req-1", TTL_MS) for _ in range(20)))
            assert sorted(results) == [False] * 19 + [True]
            assert await store.reserve(session, "req-1", TTL_MS) is False
            assert await store.reserve(session, "req-2", TTL_MS) is True
            assert command(port, "EXISTS", replay_key(session, "req-1")) == 1
        assert await store.ping() is True
        assert store.stats.errors == 0
    finally:
        await store.close()


async def test_the_limiter_trips_at_its_count_on_every_master(cluster: RedisCluster) -> None:
    client = ClusterConnection(cluster.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    limiter = RedisLimiter(client, failure_mode="closed")
    rate = Rate(Limit(1 / 3600, 3))
    try:
        for port in cluster.masters():  # every master answers NOSCRIPT first, then gets EVAL
            assert command(port, "SCRIPT", "FLUSH") == b"OK"
        keys = names_on_each_master(cluster, limit_key("budget", "name"))
        assert len({owner(cluster, key_slot(limit_key("budget", key))) for key in keys.values()}) == 3
        hits = [("budget", key, rate) for key in keys.values()]
        for _ in range(3):  # one call charges three keys on three masters: one pipeline per node
            assert await settle(limiter.acquire(hits)) is None
        verdict = await settle(limiter.acquire(hits))
        assert verdict is not None and verdict[1] > 60_000  # ms: about an hour
        for key in keys.values():
            assert await settle(limiter.acquire([("budget", key, rate)])) is not None
        assert await settle(limiter.acquire([("budget", "fresh", rate)])) is None
        assert limiter.redis_errors == 0
        for port in cluster.masters():
            assert command(port, "SCRIPT", "EXISTS", hashlib.sha1(SCRIPT.encode()).hexdigest()) == [1]
    finally:
        await limiter.close()
        await client.close()


async def test_a_killed_master_fails_its_slots_closed_until_its_replica_takes_over(cluster: RedisCluster) -> None:
    store = RedisReplayStore(cluster.url, socket_timeout_ms=HEALTHY_TIMEOUT_MS)
    sessions = names_on_each_master(cluster, replay_key("name", "r"))
    victim = next(iter(sessions))
    lost, kept = sessions[victim], [s for port, s in sessions.items() if port != victim]
    try:
        for session in sessions.values():
            assert await store.reserve(session, "before", TTL_MS) is True
        cluster.kill(victim)
        assert await store.ping() is False  # /readyz: not every slot can be reserved
        with pytest.raises(Rejection) as info:
            await store.reserve(lost, "during", TTL_MS)
        assert info.value.reason is Reason.REPLAY_STORE_UNAVAILABLE
        for session in kept:  # the other masters' slots keep working meanwhile
            assert await store.reserve(session, "during", TTL_MS) is True
            assert await store.reserve(session, "before", TTL_MS) is False
        # Nobody calls refresh(): the client finds the promoted replica by itself.
        attempt = 0
        async with asyncio.timeout(FAILOVER_DEADLINE_S):
            while True:
                attempt += 1
                try:
                    assert await store.reserve(lost, f"after-{attempt}", TTL_MS) is True
                    break
                except Rejection as exc:
                    assert exc.reason is Reason.REPLAY_STORE_UNAVAILABLE
                    await asyncio.sleep(0.1)
        assert await store.reserve(lost, f"after-{attempt}", TTL_MS) is False
        assert owner(cluster, key_slot(replay_key(lost, "x"))) != victim
        assert await store.ping() is True
    finally:
        await store.close()
        if victim not in cluster.running():
            cluster.restart(victim)
