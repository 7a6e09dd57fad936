"""The pre-auth guard: failures counted per IP, a block for the cool-down, refusals before signature work."""

from __future__ import annotations

import asyncio

import pytest

from edgeward.io.resp import RespConnection
from edgeward.protection.limiter import Limit, MemoryLimiter
from edgeward.protection.preauth_guard import FAILURE_REASONS, PreAuthGuard
from edgeward.protection.redis_limiter import RedisLimiter
from edgeward.reasons import Reason, Rejection
from tests.support.redis_server import RedisServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


THREE_A_MINUTE = Limit(1 / 60, 3)


def guard(clock: FakeClock, limit: Limit | None = THREE_A_MINUTE, cooldown_ms: int = 30_000) -> PreAuthGuard:
    return PreAuthGuard(MemoryLimiter(clock), limit, cooldown_ms=cooldown_ms, clock=clock)


async def fail(g: PreAuthGuard, ip: str = "198.51.100.1", reason: Reason = Reason.INVALID_SIGNATURE) -> None:
    rejection = await g.failed(ip, reason)
    assert rejection.reason is reason  # the failing request keeps its own answer


def refusal(g: PreAuthGuard, ip: str = "198.51.100.1") -> Rejection | None:
    try:
        assert g.check(ip) is None  # the in-process limiter decides at once
    except Rejection as rejection:
        return rejection
    return None


def test_the_counted_reasons() -> None:
    assert {r.wire for r in FAILURE_REASONS} == {"invalid_signature", "session_not_found", "payload_hash_mismatch"}


@pytest.mark.parametrize("reason", sorted(FAILURE_REASONS, key=lambda r: r.wire))
async def test_the_failure_that_spends_the_budget_blocks_the_ip_for_the_cool_down(reason: Reason) -> None:
    clock = FakeClock()
    g = guard(clock)
    for _ in range(2):
        await fail(g, reason=reason)
        assert refusal(g) is None
    await fail(g, reason=reason)  # the third failure leaves no room for another
    rejection = refusal(g)
    assert rejection is not None and rejection.reason is Reason.RATE_LIMITED
    assert rejection.metadata == {"budget": "preauth"} and rejection.retry_after_ms == 30_000
    assert refusal(g, "198.51.100.2") is None  # other addresses are not concerned
    clock.now += 20_000
    left = refusal(g)
    assert left is not None and left.retry_after_ms == 10_000
    clock.now += 10_000
    assert refusal(g) is None  # cool-down over
    assert (g.failures, g.blocks, g.refusals) == (3, 1, 2)


async def test_other_rejections_are_not_counted() -> None:
    g = guard(FakeClock())
    for reason in (Reason.STALE_REQUEST, Reason.REPLAYED_REQUEST, Reason.SESSION_REVOKED, Reason.INVALID_ENVELOPE):
        for _ in range(10):
            await fail(g, reason=reason)
    assert refusal(g) is None and g.failures == 0


async def test_off_counts_nothing() -> None:
    g = guard(FakeClock(), limit=None)
    for _ in range(100):
        await fail(g)
    assert refusal(g) is None and g.failures == 0


async def test_ipv6_failures_count_per_prefix() -> None:
    clock = FakeClock()
    g = PreAuthGuard(MemoryLimiter(clock), Limit(1 / 60, 1), cooldown_ms=1000, clock=clock, ipv6_prefix=64)
    await fail(g, "2001:db8:1:2::1")
    await fail(g, "2001:db8:1:2::99")  # another address of the same /64
    assert refusal(g, "2001:db8:1:2::abc") is not None
    assert refusal(g, "2001:db8:1:3::1") is None


async def test_a_block_set_by_another_instance_is_seen_through_the_shared_limiter() -> None:
    clock = FakeClock()
    shared = MemoryLimiter(clock)  # stands for Redis: both guards use it
    one = PreAuthGuard(shared, Limit(1 / 60, 1), cooldown_ms=5000, clock=clock)
    two = PreAuthGuard(shared, Limit(1 / 60, 1), cooldown_ms=5000, clock=clock)
    await fail(one)
    await fail(one)
    rejection = refusal(two)
    assert rejection is not None and rejection.retry_after_ms == 5000
    assert two.refusals == 1 and two.blocks == 0


# ---- lookups: charged before they start, so concurrency cannot overrun the budget ----


class Source:
    """A session source whose answers wait for ``gate``; it counts its calls and its answers."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.answered = asyncio.Event()  # set as the first answer is given (the guard settles at once)
        self.fail: Rejection | None = None

    async def __call__(self, dsid: str) -> str | None:
        self.calls.append(dsid)
        await self.gate.wait()
        self.answered.set()
        if self.fail is not None:
            raise self.fail
        return f"record of {dsid}" if dsid in self.known else None


async def until_called(source: Source, times: int) -> None:
    for _ in range(100):
        if len(source.calls) >= times:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the session source was called {len(source.calls)} times, not {times}")


def lookups(g: PreAuthGuard, source: Source, ids: list[str], ip: str = "198.51.100.1") -> list[asyncio.Task[str]]:
    return [asyncio.ensure_future(g.lookup(ip, dsid, source)) for dsid in ids]


async def lookup_error(g: PreAuthGuard, source: Source, dsid: str, ip: str = "198.51.100.1") -> Rejection:
    with pytest.raises(Rejection) as caught:
        await g.lookup(ip, dsid, source)
    return caught.value


async def test_lookups_in_flight_take_the_budget_and_get_it_back_when_the_session_exists() -> None:
    g, source = guard(FakeClock()), Source({"a", "b", "c", "d"})
    first = lookups(g, source, ["a", "b", "c"])
    await until_called(source, 3)
    spent = await lookup_error(g, source, "d")  # three lookups in flight: no unit left for a fourth
    assert (spent.reason, spent.metadata, spent.retry_after_ms) == (Reason.RATE_LIMITED, {"budget": "preauth"}, 60_000)
    assert source.calls == ["a", "b", "c"] and refusal(g) is None  # refused before any work, not blocked
    source.gate.set()
    assert await asyncio.gather(*first) == ["record of a", "record of b", "record of c"]
    assert await g.lookup("198.51.100.1", "d", source) == "record of d"  # the units came back
    assert (g.failures, g.blocks, g.refusals) == (0, 0, 1)


async def test_requests_of_one_ip_for_one_session_share_its_lookup_and_its_unit() -> None:
    g, source = guard(FakeClock()), Source({"a"})
    same = lookups(g, source, ["a"] * 50) + lookups(g, source, ["a"], ip="198.51.100.2")
    others = lookups(g, source, ["x", "y"])  # the second and third units of 198.51.100.1
    await until_called(source, 4)
    assert source.calls == ["a", "a", "x", "y"]  # one lookup per IP and id
    source.gate.set()
    assert set(await asyncio.gather(*same)) == {"record of a"}
    for task in others:
        with pytest.raises(Rejection) as caught:
            await task
        assert caught.value.reason is Reason.SESSION_NOT_FOUND
    assert (g.failures, g.blocks) == (2, 0)


async def test_a_lookup_that_finds_nothing_is_the_failure_and_in_flight_ones_count_toward_the_block() -> None:
    g, source = guard(FakeClock()), Source(set())
    ghosts = lookups(g, source, ["x", "y", "z"])
    await until_called(source, 3)
    source.gate.set()
    for task in ghosts:  # the first failure already finds the budget spent: the other two are in flight
        with pytest.raises(Rejection) as caught:
            await task
        assert caught.value.reason is Reason.SESSION_NOT_FOUND  # each keeps its own answer
    blocked = refusal(g)
    assert blocked is not None and blocked.retry_after_ms == 30_000
    assert (g.failures, g.blocks) == (3, 1)


async def test_a_cancelled_request_leaves_its_lookup_to_settle_the_unit() -> None:
    g, source = guard(FakeClock(), limit=Limit(1 / 60, 1)), Source({"a", "b"})
    (request,) = lookups(g, source, ["a"])
    await until_called(source, 1)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    # The lookup goes on, and so does its charge: cancelling does not buy another lookup.
    assert (await lookup_error(g, source, "b")).reason is Reason.RATE_LIMITED
    source.gate.set()
    await source.answered.wait()  # "a" exists: its lookup gives the unit back
    assert await g.lookup("198.51.100.1", "b", source) == "record of b"


async def test_a_backend_failure_gives_the_unit_back() -> None:
    g, source = guard(FakeClock(), limit=Limit(1 / 60, 1)), Source({"b"})
    source.gate.set()
    source.fail = Rejection(Reason.BACKEND_UNAVAILABLE)
    assert (await lookup_error(g, source, "a")).reason is Reason.BACKEND_UNAVAILABLE
    source.fail = None
    assert await g.lookup("198.51.100.1", "b", source) == "record of b"
    assert g.failures == 0


async def test_off_lookups_are_not_charged() -> None:
    g, source = guard(FakeClock(), limit=None), Source({"a"})
    source.gate.set()
    assert [await g.lookup("198.51.100.1", "a", source) for _ in range(5)] == ["record of a"] * 5
    assert (await lookup_error(g, source, "x")).reason is Reason.SESSION_NOT_FOUND
    assert (g.failures, g.refusals) == (0, 0)


async def test_before_signature_check_applies_a_block_met_since_the_check() -> None:
    g = guard(FakeClock())
    assert refusal(g) is None  # this request passed the check, then waited for its session...
    for _ in range(3):  # ...while other requests of its IP spent the budget
        await fail(g)
    with pytest.raises(Rejection) as caught:
        g.before_signature_check("198.51.100.1")
    assert (caught.value.metadata, caught.value.retry_after_ms) == ({"budget": "preauth"}, 30_000)
    g.before_signature_check("198.51.100.2")


async def test_with_a_shared_limiter_failures_block_here_before_it_answers(redis_server: RedisServer) -> None:
    connection = RespConnection(redis_server.url, socket_timeout_ms=30_000)
    try:
        shared = RedisLimiter(connection)
        g = PreAuthGuard(shared, THREE_A_MINUTE, cooldown_ms=30_000)
        pending = [asyncio.ensure_future(fail(g)) for _ in range(3)]
        await asyncio.sleep(0)  # each failure is counted here; Redis has not answered any yet
        assert not any(task.done() for task in pending)
        with pytest.raises(Rejection):
            g.before_signature_check("198.51.100.1")
        await asyncio.gather(*pending)
        assert (g.failures, g.blocks) == (3, 1)
        other = PreAuthGuard(shared, THREE_A_MINUTE, cooldown_ms=30_000)  # another instance: Redis blocks it there
        checking = other.check("198.51.100.1")
        assert checking is not None
        with pytest.raises(Rejection):
            await checking
    finally:
        await connection.close()
