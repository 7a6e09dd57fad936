"""SessionCache: single flight, negative caching, revocation and races with invalidations."""

from __future__ import annotations

import asyncio

import pytest

from edgeward.gateway.session_cache import SessionCache
from edgeward.native.session_record import SessionRecord
from edgeward.reasons import Reason, Rejection

KEY = b"k" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A session source whose answers the test controls; it counts its calls."""

    def __init__(self, records: dict[str, SessionRecord]) -> None:
        self.records = records
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail: Rejection | None = None

    async def __call__(self, dsid: str) -> SessionRecord | None:
        self.calls.append(dsid)
        answer = self.records.get(dsid)  # what the backend knew when the call reached it
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return answer


async def until_called(source: Source, times: int = 1) -> None:
    for _ in range(100):
        if len(source.calls) >= times:
            return
        await asyncio.sleep(0)
    raise AssertionError("the session source was never called")


def make(source: Source, clock: FakeClock | None = None) -> SessionCache:
    return SessionCache(source, max_entries=100, ttl_ms=1000, negative_ttl_ms=500, clock=clock or FakeClock())


async def test_concurrent_misses_share_one_backend_call() -> None:
    source = Source({"a": SessionRecord("a", "u1", KEY, False)})
    source.gate = asyncio.Event()
    cache = make(source)
    waiters = [asyncio.ensure_future(cache.lookup("a")) for _ in range(50)]
    await asyncio.sleep(0)
    source.gate.set()
    results = await asyncio.gather(*waiters)
    assert source.calls == ["a"] and all(r is not None and r.user_id == "u1" for r in results)
    await cache.lookup("a")
    assert source.calls == ["a"]


async def test_unknown_id_is_negatively_cached_for_its_ttl() -> None:
    clock = FakeClock()
    source = Source({})
    cache = make(source, clock)
    assert await cache.lookup("nope") is None
    assert await cache.lookup("nope") is None
    assert source.calls == ["nope"]
    clock.now += 500
    assert await cache.lookup("nope") is None
    assert source.calls == ["nope", "nope"]


async def test_expired_record_is_fetched_again() -> None:
    clock = FakeClock()
    source = Source({"a": SessionRecord("a", "u1", KEY, False)})
    cache = make(source, clock)
    await cache.lookup("a")
    clock.now += 1000
    await cache.lookup("a")
    assert source.calls == ["a", "a"]


async def test_backend_failure_is_not_cached() -> None:
    source = Source({"a": SessionRecord("a", "u1", KEY, False)})
    source.fail = Rejection(Reason.BACKEND_UNAVAILABLE)
    cache = make(source)
    with pytest.raises(Rejection):
        await cache.lookup("a")
    source.fail = None
    assert await cache.lookup("a") is not None


async def test_a_cancelled_caller_does_not_cancel_the_fetch_for_others() -> None:
    source = Source({"a": SessionRecord("a", "u1", KEY, False)})
    source.gate = asyncio.Event()
    cache = make(source)
    first = asyncio.ensure_future(cache.lookup("a"))
    second = asyncio.ensure_future(cache.lookup("a"))
    await asyncio.sleep(0)
    first.cancel()
    source.gate.set()
    assert (await second) is not None and source.calls == ["a"]


async def test_revoked_records_are_served_from_the_cache() -> None:
    source = Source({"a": SessionRecord("a", "u1", KEY, False), "b": SessionRecord("b", "u1", KEY, False)})
    cache = make(source)
    await cache.lookup("a")
    await cache.lookup("b")
    cache.mark_revoked("a")
    assert (await cache.lookup("a")).revoked  # type: ignore[union-attr]
    assert not (await cache.lookup("b")).revoked  # type: ignore[union-attr]
    assert cache.mark_all_revoked_for_user("u1") == 2
    assert (await cache.lookup("b")).revoked  # type: ignore[union-attr]
    assert source.calls == ["a", "b"]


async def test_invalidation_during_a_fetch_makes_it_fetch_again() -> None:
    source = Source({"a": SessionRecord("a", "u1", KEY, False)})
    source.gate = asyncio.Event()
    cache = make(source)
    pending = asyncio.ensure_future(cache.lookup("a"))
    await until_called(source)
    # The backend revokes the session and pushes the invalidation while our fetch is in flight.
    source.records["a"] = SessionRecord("a", "u1", KEY, True, 5)
    cache.mark_revoked("a")
    source.gate.set()
    record = await pending
    assert record is not None and record.revoked and source.calls == ["a", "a"]


async def test_close_cancels_fetches_in_flight() -> None:
    source = Source({})
    source.gate = asyncio.Event()
    cache = make(source)
    pending = asyncio.ensure_future(cache.lookup("a"))
    await asyncio.sleep(0)
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_refresh_asks_the_backend_again_whatever_is_cached() -> None:
    source = Source({"a": SessionRecord("a", "u1", KEY, False)})
    cache = make(source)
    assert (await cache.lookup("a")) is not None
    source.records["a"] = SessionRecord("a", "u1", KEY, True, 9)  # revoked while nobody told the cache
    assert not (await cache.lookup("a")).revoked  # type: ignore[union-attr]
    refreshed = await cache.refresh("a")
    assert refreshed is not None and refreshed.revoked
    assert (await cache.lookup("a")).revoked  # type: ignore[union-attr]
    assert source.calls == ["a", "a"]


async def test_refresh_waits_out_a_fetch_that_started_before_it() -> None:
    source = Source({"a": SessionRecord("a", "u1", KEY, False)})
    source.gate = asyncio.Event()
    cache = make(source)
    early = asyncio.ensure_future(cache.lookup("a"))
    await until_called(source)
    source.records["a"] = SessionRecord("a", "u1", KEY, True)  # the early fetch already has its answer
    late = asyncio.ensure_future(cache.refresh("a"))
    await asyncio.sleep(0)
    source.gate.set()
    assert not (await early).revoked  # type: ignore[union-attr]
    assert (await late).revoked  # type: ignore[union-attr]
    assert len(source.calls) == 2 and (await cache.lookup("a")).revoked  # type: ignore[union-attr]
