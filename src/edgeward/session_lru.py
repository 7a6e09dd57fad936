"""Bounded LRU + TTL store of device session records, indexed by user.

The synchronous core of the session cache: no I/O, an injected monotonic clock (ms), O(1) per
operation except the user-wide revocation, which is O(sessions of that user). The native hot
path will provide a twin of this class with the same API.

Invariant (as in uvloop's LRU): an ``OrderedDict`` keeps entries least- to most-recently used;
a hit or an insert moves the entry to the end, eviction pops from the front. Expired entries are
dropped when touched, or when they reach the front during eviction. ``_by_user`` holds exactly
the ids of the positive entries in ``_entries``.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable

from edgeward.clock import monotonic_ms
from edgeward.session_record import SessionRecord

__all__ = ("SessionLru",)


class SessionLru:
    """Positive records (active or revoked) up to ``max_entries``, each trusted for ``ttl_ms``."""

    __slots__ = ("_by_user", "_clock", "_entries", "max_entries", "ttl_ms")

    def __init__(self, max_entries: int, ttl_ms: float, clock: Callable[[], float] = monotonic_ms) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self.ttl_ms = ttl_ms
        self._clock = clock
        self._entries: OrderedDict[str, tuple[SessionRecord, float]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}

    def __len__(self) -> int:
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
        old = self._entries.get(dsid)
        if old is not None and old[0].user_id != record.user_id:
            self._unindex(dsid, old[0].user_id)
        self._entries[dsid] = (record, self._clock() + self.ttl_ms)
        self._entries.move_to_end(dsid)
        self._by_user.setdefault(record.user_id, set()).add(dsid)
        while len(self._entries) > self.max_entries:
            self._remove(next(iter(self._entries)))

    def mark_revoked(self, device_session_id: str, revoked_at_ms: int | None = None) -> bool:
        """Turn a cached record into a revoked one (kept, so revoked traffic stops at the edge)."""
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
