"""Differential tests: the native SessionLru against its pure-Python twin (the reference).

A hypothesis state machine drives one cache of each twin through the same operations, on one
shared fake clock, and requires every observable result to be equal after each step: what each
call returns, ``len()``, every user's sessions, and how many times each cache read the clock.
The native twin is imported when a test runs (not at collection), so ``--no-native`` deselects
these tests on a pure build instead of failing to import them.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from edgeward.clock import monotonic_ms
from edgeward.native import _session_lru_py
from edgeward.native.session_lru import SessionLru
from edgeward.native.session_record import SessionRecord

pytestmark = pytest.mark.native

KEY = b"k" * 32
IDS = st.sampled_from([f"s{i}" for i in range(8)])
USERS = st.sampled_from(["u0", "u1", "u2"])
REVOKED_AT = st.none() | st.integers(0, 2**53)
# Integers and floats, so the int/float arithmetic of the reference is compared too.
MILLIS = st.integers(0, 40) | st.floats(0, 40, allow_nan=False, allow_infinity=False)


def native_twin() -> ModuleType:
    return importlib.import_module("edgeward.native._session_lru_c")


class SharedClock:
    """One fake time source; each cache reads it through its own counting reader."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.reads: dict[str, int] = {}

    def reader(self, name: str) -> Callable[[], float]:
        self.reads[name] = 0

        def read() -> float:
            self.reads[name] += 1
            return self.now

        return read


class TwinLru(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = SharedClock(0)
        self.c: SessionLru = native_twin().SessionLru(1, 0)
        self.py: SessionLru = _session_lru_py.SessionLru(1, 0)

    @initialize(
        max_entries=st.integers(1, 6),
        ttl_ms=st.integers(-2, 50) | st.floats(0, 50, allow_nan=False),
        start=st.integers(0, 10**12) | st.floats(0, 1e12, allow_nan=False),
    )
    def build(self, max_entries: int, ttl_ms: float, start: float) -> None:
        self.clock = SharedClock(start)
        self.c = native_twin().SessionLru(max_entries, ttl_ms, self.clock.reader("c"))
        self.py = _session_lru_py.SessionLru(max_entries, ttl_ms, self.clock.reader("py"))

    @rule(dsid=IDS, user=USERS, revoked=st.booleans(), revoked_at=REVOKED_AT)
    def put(self, dsid: str, user: str, revoked: bool, revoked_at: int | None) -> None:
        record = SessionRecord(dsid, user, KEY, revoked, revoked_at if revoked else None)
        assert self.c.put(record) is None
        self.py.put(record)

    @rule(dsid=IDS)
    def get(self, dsid: str) -> None:
        got = self.c.get(dsid)
        assert got == self.py.get(dsid)

    @rule(dsid=IDS, revoked_at=REVOKED_AT)
    def mark_revoked(self, dsid: str, revoked_at: int | None) -> None:
        assert self.c.mark_revoked(dsid, revoked_at) is self.py.mark_revoked(dsid, revoked_at)

    @rule(user=USERS, revoked_at=REVOKED_AT)
    def mark_all_revoked_for_user(self, user: str, revoked_at: int | None) -> None:
        assert self.c.mark_all_revoked_for_user(user, revoked_at) == self.py.mark_all_revoked_for_user(user, revoked_at)

    @rule(ms=MILLIS)
    def advance(self, ms: float) -> None:
        self.clock.now += ms

    @rule(user=USERS)
    def sessions_of_user(self, user: str) -> None:
        assert self.c.sessions_of_user(user) == self.py.sessions_of_user(user)

    @rule()
    def length(self) -> None:
        assert len(self.c) == len(self.py)

    @invariant()
    def same_observable_state(self) -> None:
        assert len(self.c) == len(self.py)
        for user in ("u0", "u1", "u2"):
            assert self.c.sessions_of_user(user) == self.py.sessions_of_user(user)
        assert self.clock.reads.get("c") == self.clock.reads.get("py")
        assert (self.c.max_entries, self.c.ttl_ms) == (self.py.max_entries, self.py.ttl_ms)


TwinLru.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestTwinLru = TwinLru.TestCase


def test_native_default_clock_reads_what_monotonic_ms_reads() -> None:
    """The native twin's default clock is CLOCK_MONOTONIC converted as CPython converts it.

    Not a timing test: it checks order only. A native read taken between two monotonic_ms calls
    must lie between them; a different clock source (another epoch or rate) would not.
    """
    read_native = native_twin()._monotonic_ms
    if time.get_clock_info("monotonic").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        pytest.skip("CPython's time.monotonic has another source here; the native twin calls it")
    for _ in range(10_000):
        before = monotonic_ms()
        native = read_native()
        after = monotonic_ms()
        assert before <= native <= after
