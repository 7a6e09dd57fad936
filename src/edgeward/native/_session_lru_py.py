"""Bounded LRU + TTL store of device session records, indexed by user: pure-Python twin.

This is the reference for ``edgeward.native._session_lru_c`` (ext/edgeward/native/_session_lru_c.pyx): same
names, signatures, docstrings, results, exceptions and clock calls. Import ``edgeward.native.session_lru``,
which picks the active twin.

The synchronous core of the session cache: no I/O, an injected monotonic clock (ms), O(1) per
operation except the user-wide revocation, which is O(sessions of that user). The clock is called
exactly once per ``put`` and once per ``get`` that finds an entry, never elsewhere.

Invariant (as in uvloop's LRU): an ``OrderedDict`` keeps entries least- to most-recently used;
a hit or an insert moves the entry to the end, eviction pops from the front. Expiry is lazy: an
expired entry is dropped when ``get`` touches it, or when it reaches the front during eviction;
until then it counts in ``len()``, in ``sessions_of_user`` and for ``mark_revoked``. ``_by_user``
holds exactly the ids of the entries in ``_entries``.
"""

from __future__ import annotations

import dataclasses
import operator
from collections import OrderedDict
from collections.abc import Callable

from edgeward.clock import monotonic_ms
from edgeward.native.session_record import SessionRecord

__all__ = ("SessionLru",)


def _check_number(name: str, value: object) -> None:
    if not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")


class SessionLru:
    """Positive records (active or revoked) up to ``max_entries``, each trusted for ``ttl_ms``.

    ``max_entries`` is an int (TypeError otherwise) and must be positive (ValueError); ``ttl_ms``
    is an int or a float (TypeError otherwise). Both are fixed for the life of the cache.
    """

    __slots__ = ("_by_user", "_clock", "_entries", "_max_entries", "_ttl_ms")

    def __init__(self, max_entries: int, ttl_ms: float, clock: Callable[[], float] = monotonic_ms) -> None:
        max_entries = operator.index(max_entries)
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        _check_number("ttl_ms", ttl_ms)
        self._max_entries = max_entries
        self._ttl_ms = ttl_ms
        self._clock = clock
        self._entries: OrderedDict[str, tuple[SessionRecord, float]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}

    @property
    def max_entries(self) -> int:
        """The most records kept; a ``put`` beyond it evicts the least recently used."""
        return self._max_entries

    @property
    def ttl_ms(self) -> float:
        """How long a record is trusted after its ``put``, in clock milliseconds."""
        return self._ttl_ms

    def __len__(self) -> int:
        """How many records are held, expired ones not yet dropped included."""
        return len(self._entries)

    def get(self, device_session_id: str) -> SessionRecord | None:
        """The cached record, or None when absent or expired."""
        entry = self._entries.get(device_session_id)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._remove(device_session_id)
            return None
        self._entries.move_to_end(device_session_id)
        return entry[0]

    def put(self, record: SessionRecord) -> None:
        """Insert or replace ``record``, trusted for ``ttl_ms`` from now."""
        dsid = record.device_session_id
        user_id = record.user_id
        expires = self._clock() + self._ttl_ms
        old = self._entries.get(dsid)
        if old is not None and old[0].user_id != user_id:
            self._unindex(dsid, old[0].user_id)
        self._entries[dsid] = (record, expires)
        self._entries.move_to_end(dsid)
        self._by_user.setdefault(user_id, set()).add(dsid)
        while len(self._entries) > self._max_entries:
            self._remove(next(iter(self._entries)))

    def mark_revoked(self, device_session_id: str, revoked_at_ms: int | None = None) -> bool:
        """Turn a cached record into a revoked one (kept, so revoked traffic stops at the edge).

        True when the id is held (even expired, not yet dropped); its LRU position and expiry do not
        change, and a record that is already revoked is kept as it is.
        """
        entry = self._entries.get(device_session_id)
        if entry is None:
            return False
        record, expires = entry
        if not record.revoked:
            revoked = dataclasses.replace(record, revoked=True, revoked_at_ms=revoked_at_ms)
            self._entries[device_session_id] = (revoked, expires)
        return True

    def mark_all_revoked_for_user(self, user_id: str, revoked_at_ms: int | None = None) -> int:
        """Revoke every cached session of ``user_id``; returns how many were cached."""
        ids = self._by_user.get(user_id, ())
        for dsid in tuple(ids):
            self.mark_revoked(dsid, revoked_at_ms)
        return len(ids)

    def sessions_of_user(self, user_id: str) -> frozenset[str]:
        """The ids of the records held for ``user_id``, expired ones not yet dropped included."""
        return frozenset(self._by_user.get(user_id, ()))

    def _remove(self, device_session_id: str) -> None:
        record, _ = self._entries.pop(device_session_id)
        self._unindex(device_session_id, record.user_id)

    def _unindex(self, device_session_id: str, user_id: str) -> None:
        ids = self._by_user.get(user_id)
        if ids is not None:
            ids.discard(device_session_id)
            if not ids:
                del self._by_user[user_id]
