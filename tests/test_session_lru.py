"""SessionLru: LRU order, TTL expiry, user index and revocation, on a fake clock."""

from __future__ import annotations

import pytest

from edgeward.session_lru import SessionLru
from edgeward.session_record import SessionRecord

KEY = b"k" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rec(dsid: str, user: str = "u1") -> SessionRecord:
    return SessionRecord(dsid, user, KEY, revoked=False)


def test_rejects_non_positive_capacity() -> None:
    with pytest.raises(ValueError):
        SessionLru(0, 1000)


def test_hit_miss_and_expiry() -> None:
    clock = FakeClock()
    lru = SessionLru(10, ttl_ms=100, clock=clock)
    assert lru.get("a") is None
    lru.put(rec("a"))
    assert lru.get("a") == rec("a")
    clock.now += 99
    assert lru.get("a") is not None
    clock.now += 1
    assert lru.get("a") is None and len(lru) == 0 and lru.sessions_of_user("u1") == frozenset()


def test_evicts_least_recently_used_and_unindexes_it() -> None:
    lru = SessionLru(2, ttl_ms=1000, clock=FakeClock())
    lru.put(rec("a", "u1"))
    lru.put(rec("b", "u2"))
    lru.get("a")  # b is now the least recently used
    lru.put(rec("c", "u3"))
    assert lru.get("b") is None and lru.get("a") is not None and lru.get("c") is not None
    assert lru.sessions_of_user("u2") == frozenset() and len(lru) == 2


def test_revocation_keeps_the_record_and_serves_it_revoked() -> None:
    lru = SessionLru(10, ttl_ms=1000, clock=FakeClock())
    lru.put(rec("a"))
    assert lru.mark_revoked("a", 77) is True
    got = lru.get("a")
    assert got is not None and got.revoked and got.revoked_at_ms == 77
    assert lru.mark_revoked("missing") is False


def test_user_wide_revocation_touches_only_that_user() -> None:
    lru = SessionLru(10, ttl_ms=1000, clock=FakeClock())
    for dsid, user in [("a", "u1"), ("b", "u1"), ("c", "u2")]:
        lru.put(rec(dsid, user))
    assert lru.mark_all_revoked_for_user("u1") == 2
    assert [lru.get(d).revoked for d in "abc"] == [True, True, False]  # type: ignore[union-attr]
    assert lru.mark_all_revoked_for_user("nobody") == 0


def test_replacing_a_record_moves_it_between_users() -> None:
    lru = SessionLru(10, ttl_ms=1000, clock=FakeClock())
    lru.put(rec("a", "u1"))
    lru.put(rec("a", "u2"))
    assert lru.sessions_of_user("u1") == frozenset() and lru.sessions_of_user("u2") == {"a"}
