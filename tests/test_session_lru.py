"""SessionLru: LRU order, TTL expiry, user index and revocation, on a fake clock, for both twins."""

from __future__ import annotations

import dataclasses
import gc
import time
import weakref
from types import ModuleType

import pytest

from edgeward.native import loader
from edgeward.native.session_lru import SessionLru
from edgeward.native.session_record import SessionRecord

KEY = b"k" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


def rec(dsid: str, user: str = "u1") -> SessionRecord:
    return SessionRecord(dsid, user, KEY, revoked=False)


def lru_of(impl: ModuleType, max_entries: int = 10, ttl_ms: float = 1000, clock: object = None) -> SessionLru:
    lru: SessionLru = impl.SessionLru(max_entries, ttl_ms, FakeClock() if clock is None else clock)
    return lru


def test_dispatcher_exports_the_active_twin() -> None:
    assert SessionLru.__module__ == f"edgeward.native._session_lru_{loader.ACTIVE['session_lru']}"


def test_rejects_non_positive_capacity(session_lru_impl: ModuleType) -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_entries must be positive"):
            session_lru_impl.SessionLru(bad, 1000)


def test_rejects_arguments_of_the_wrong_type(session_lru_impl: ModuleType) -> None:
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        session_lru_impl.SessionLru(2.0, 1000)
    with pytest.raises(TypeError, match="ttl_ms must be a number, got str"):
        session_lru_impl.SessionLru(2, "1000")


def test_parameters_are_read_only(session_lru_impl: ModuleType) -> None:
    lru = session_lru_impl.SessionLru(3, 250)
    assert (lru.max_entries, lru.ttl_ms) == (3, 250)
    assert type(lru.ttl_ms) is int
    assert session_lru_impl.SessionLru(10**30, 0.5).max_entries == 10**30
    with pytest.raises(AttributeError):
        lru.max_entries = 4
    with pytest.raises(AttributeError):
        lru.ttl_ms = 1


def test_hit_miss_and_expiry(session_lru_impl: ModuleType) -> None:
    clock = FakeClock()
    lru = lru_of(session_lru_impl, ttl_ms=100, clock=clock)
    assert lru.get("a") is None
    lru.put(rec("a"))
    assert lru.get("a") == rec("a")
    clock.now += 99
    assert lru.get("a") is not None
    clock.now += 1
    assert lru.get("a") is None and len(lru) == 0 and lru.sessions_of_user("u1") == frozenset()


def test_get_returns_the_stored_object(session_lru_impl: ModuleType) -> None:
    lru = lru_of(session_lru_impl)
    record = rec("a")
    lru.put(record)
    assert lru.get("a") is record
    assert lru.get(device_session_id="a") is record


def test_clock_is_called_once_per_put_and_per_found_get(session_lru_impl: ModuleType) -> None:
    clock = FakeClock()
    lru = lru_of(session_lru_impl, clock=clock)
    lru.get("missing")
    lru.mark_revoked("missing")
    assert clock.calls == 0
    lru.put(rec("a"))
    assert clock.calls == 1
    lru.get("a")
    lru.get("b")
    assert clock.calls == 2
    lru.mark_revoked("a")
    lru.mark_all_revoked_for_user("u1")
    lru.sessions_of_user("u1")
    assert len(lru) == 1 and clock.calls == 2


def test_zero_ttl_expires_at_once_and_floats_work(session_lru_impl: ModuleType) -> None:
    clock = FakeClock()
    lru = lru_of(session_lru_impl, ttl_ms=0, clock=clock)
    lru.put(rec("a"))
    assert lru.get("a") is None and len(lru) == 0
    lru = lru_of(session_lru_impl, ttl_ms=0.5, clock=clock)
    lru.put(rec("a"))
    clock.now += 0.25
    assert lru.get("a") is not None
    clock.now += 0.25
    assert lru.get("a") is None


def test_integer_clock(session_lru_impl: ModuleType) -> None:
    now = [5]
    lru = session_lru_impl.SessionLru(4, 10, lambda: now[0])
    lru.put(rec("a"))
    now[0] = 14
    assert lru.get("a") is not None
    now[0] = 15
    assert lru.get("a") is None


def test_evicts_least_recently_used_and_unindexes_it(session_lru_impl: ModuleType) -> None:
    lru = lru_of(session_lru_impl, max_entries=2)
    lru.put(rec("a", "u1"))
    lru.put(rec("b", "u2"))
    lru.get("a")  # b is now the least recently used
    lru.put(rec("c", "u3"))
    assert lru.get("b") is None and lru.get("a") is not None and lru.get("c") is not None
    assert lru.sessions_of_user("u2") == frozenset() and len(lru) == 2


def test_replacing_a_record_makes_it_most_recently_used(session_lru_impl: ModuleType) -> None:
    clock = FakeClock()
    lru = lru_of(session_lru_impl, max_entries=2, ttl_ms=100, clock=clock)
    lru.put(rec("a"))
    lru.put(rec("b"))
    clock.now += 50
    lru.put(rec("a"))  # refreshed: b is now the least recently used, a expires later
    lru.put(rec("c"))
    assert lru.sessions_of_user("u1") == {"a", "c"}
    clock.now += 99
    assert lru.get("a") is not None


def test_capacity_of_one(session_lru_impl: ModuleType) -> None:
    lru = lru_of(session_lru_impl, max_entries=1)
    lru.put(rec("a"))
    lru.put(rec("a"))
    assert len(lru) == 1
    lru.put(rec("b", "u2"))
    assert len(lru) == 1 and lru.get("a") is None and lru.get("b") is not None
    assert lru.sessions_of_user("u1") == frozenset()


def test_expired_entries_stay_until_touched_or_evicted(session_lru_impl: ModuleType) -> None:
    clock = FakeClock()
    lru = lru_of(session_lru_impl, max_entries=2, ttl_ms=10, clock=clock)
    lru.put(rec("a"))
    clock.now += 10
    assert len(lru) == 1 and lru.sessions_of_user("u1") == {"a"}
    assert lru.mark_revoked("a") is True  # held, though expired
    assert lru.mark_all_revoked_for_user("u1") == 1
    lru.put(rec("b"))
    lru.put(rec("c"))  # evicts a from the front
    assert lru.sessions_of_user("u1") == {"b", "c"}


def test_revocation_keeps_the_record_and_serves_it_revoked(session_lru_impl: ModuleType) -> None:
    lru = lru_of(session_lru_impl)
    lru.put(rec("a"))
    assert lru.mark_revoked("a", 77) is True
    got = lru.get("a")
    assert got is not None and got.revoked and got.revoked_at_ms == 77
    assert lru.mark_revoked("missing") is False
    assert lru.mark_revoked("a", 99) is True  # already revoked: kept as it is
    assert lru.get("a") is got


def test_revocation_keeps_position_and_expiry(session_lru_impl: ModuleType) -> None:
    clock = FakeClock()
    lru = lru_of(session_lru_impl, max_entries=2, ttl_ms=100, clock=clock)
    lru.put(rec("a"))
    clock.now += 60
    lru.put(rec("b"))
    lru.mark_revoked("a")  # neither refreshes a nor makes it most recently used
    lru.put(rec("c"))
    assert lru.sessions_of_user("u1") == {"b", "c"}
    lru = lru_of(session_lru_impl, ttl_ms=100, clock=clock)
    lru.put(rec("a"))
    clock.now += 99
    lru.mark_revoked("a", None)
    clock.now += 1
    assert lru.get("a") is None


def test_user_wide_revocation_touches_only_that_user(session_lru_impl: ModuleType) -> None:
    lru = lru_of(session_lru_impl)
    for dsid, user in [("a", "u1"), ("b", "u1"), ("c", "u2")]:
        lru.put(rec(dsid, user))
    assert lru.mark_all_revoked_for_user("u1", revoked_at_ms=5) == 2
    assert [lru.get(d).revoked for d in "abc"] == [True, True, False]  # type: ignore[union-attr]
    assert lru.get("a").revoked_at_ms == 5  # type: ignore[union-attr]
    assert lru.mark_all_revoked_for_user("nobody") == 0


def test_replacing_a_record_moves_it_between_users(session_lru_impl: ModuleType) -> None:
    lru = lru_of(session_lru_impl)
    lru.put(rec("a", "u1"))
    lru.put(rec("a", "u2"))
    assert lru.sessions_of_user("u1") == frozenset() and lru.sessions_of_user("u2") == {"a"}
    assert len(lru) == 1


def test_unhashable_ids_raise_type_error(session_lru_impl: ModuleType) -> None:
    lru = lru_of(session_lru_impl)
    for call in (lru.get, lru.mark_revoked, lru.sessions_of_user, lru.mark_all_revoked_for_user):
        with pytest.raises(TypeError):
            call([])  # type: ignore[arg-type]


def test_clock_errors_propagate(session_lru_impl: ModuleType) -> None:
    def broken() -> float:
        raise RuntimeError("clock")

    lru = session_lru_impl.SessionLru(4, 10, broken)
    with pytest.raises(RuntimeError, match="clock"):
        lru.put(rec("a"))
    assert len(lru) == 0 and lru.sessions_of_user("u1") == frozenset()
    lru = session_lru_impl.SessionLru(4, 10, lambda: "soon")
    with pytest.raises(TypeError):
        lru.put(rec("a"))


def test_default_clock_is_the_monotonic_clock(session_lru_impl: ModuleType) -> None:
    lru = session_lru_impl.SessionLru(4, 60_000)
    lru.put(rec("a"))
    assert lru.get("a") is not None
    lru = session_lru_impl.SessionLru(4, -1)  # expired before it was stored
    lru.put(rec("a"))
    assert lru.get("a") is None


def test_default_clock_honours_a_patched_time_monotonic(
    session_lru_impl: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    lru = session_lru_impl.SessionLru(4, 1000)
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    lru.put(rec("a"))  # expires at 100 s + 1000 ms
    now[0] = 100.999
    assert lru.get("a") is not None
    now[0] = 101.0
    assert lru.get("a") is None


def test_dropping_the_cache_releases_its_records_at_once(session_lru_impl: ModuleType) -> None:
    @dataclasses.dataclass(frozen=True)
    class Record:  # SessionRecord has slots and no __weakref__
        device_session_id: str
        user_id: str
        revoked: bool = False
        revoked_at_ms: int | None = None

    lru = session_lru_impl.SessionLru(4, 1000, FakeClock())
    records = [Record(f"s{i}", "u1") for i in range(6)]
    for record in records:
        lru.put(record)
    lru.get("s3")
    lru.mark_revoked("s4")
    refs = [weakref.ref(record) for record in records]
    del records, record
    gc.disable()
    try:
        assert [ref() is None for ref in refs] == [True, True, False, False, True, False]
        del lru
        assert all(ref() is None for ref in refs)
    finally:
        gc.enable()


def test_a_cache_in_a_reference_cycle_is_collected(session_lru_impl: ModuleType) -> None:
    class Owner:
        def __init__(self) -> None:
            self.lru = session_lru_impl.SessionLru(4, 1000, self.clock)

        def clock(self) -> float:
            return 0.0

    owner = Owner()
    for i in range(20):
        owner.lru.put(rec(f"s{i}"))
    owner.lru.get("s3")
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None


def test_init_again_starts_empty(session_lru_impl: ModuleType) -> None:
    lru = lru_of(session_lru_impl)
    lru.put(rec("a"))
    lru.__init__(2, 5)  # type: ignore[misc]
    assert (len(lru), lru.max_entries, lru.ttl_ms, lru.sessions_of_user("u1")) == (0, 2, 5, frozenset())
    lru.put(rec("b"))
    assert lru.get("b") is not None


@pytest.mark.parametrize("expired", [False, True])
def test_a_clock_that_evicts_the_entry_being_read(session_lru_impl: ModuleType, expired: bool) -> None:
    def clock() -> float:
        if armed:
            armed.clear()
            lru.put(rec("b"))  # capacity 1: evicts "a" while get("a") reads the clock
        return 100.0 if expired else 0.0

    armed: list[bool] = []
    lru = session_lru_impl.SessionLru(1, 10, clock)
    lru.put(rec("a"))
    armed.append(True)
    with pytest.raises(KeyError, match="'a'"):
        lru.get("a")
    assert len(lru) == 1 and lru.sessions_of_user("u1") == {"b"}
    assert lru.get("b") is not None
