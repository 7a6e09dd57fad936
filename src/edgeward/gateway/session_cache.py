"""Device session lookup: the LRU + TTL cache in front of the backend's session API.

Request-flow step 2 (docs/protocol.md §3). What it adds to ``SessionLru``:

- a miss calls the session source once, however many requests are waiting for that id
  (single flight); the call runs as its own task, so a caller that gives up does not cancel
  it for the others;
- an unknown id is remembered in a separate, smaller LRU for ``negative_ttl_ms``, so a flood
  of bogus ids reaches the backend once per id and per TTL and cannot evict real sessions;
- a revoked record stays cached and is served, so revoked traffic is refused at the edge;
- an invalidation that arrives while a fetch is in flight makes that fetch run again, so an
  answer the backend gave before the revocation cannot overwrite it;
- ``refresh`` asks the backend again whatever is cached: after a gap in the invalidation feed
  (the push stream was down, docs/push.md) a cached record may be stale.

Backend failures are not cached: the caller gets the ``Rejection`` (backend_unavailable or
backend_timeout) and the next request tries again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from edgeward.clock import monotonic_ms
from edgeward.native.session_lru import SessionLru
from edgeward.native.session_record import SessionRecord

__all__ = ("SessionCache", "SessionSource")

SessionSource = Callable[[str], Awaitable[SessionRecord | None]]
"""Fetches one session: the record, or None when the backend does not know the id."""

_MAX_FETCH_ROUNDS = 3


class SessionCache:
    def __init__(
        self,
        source: SessionSource,
        *,
        max_entries: int,
        ttl_ms: float,
        negative_ttl_ms: float,
        clock: Callable[[], float] = monotonic_ms,
    ) -> None:
        self._source = source
        self._lru = SessionLru(max_entries, ttl_ms, clock)
        self._clock = clock
        self._negative_ttl_ms = negative_ttl_ms
        self._negative_max = max(1024, max_entries // 4)
        self._negative: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[SessionRecord | None]] = {}
        self._invalidations = 0
        self.backend_fetches = 0

    def __len__(self) -> int:
        return len(self._lru)

    def cached(self, device_session_id: str) -> SessionRecord | None:
        """The cached record (possibly revoked), or None: ``lookup`` would have to ask or wait.

        For the pre-auth guard, which charges a client for the lookups that may reach the backend.
        """
        return self._lru.get(device_session_id)

    async def lookup(self, device_session_id: str) -> SessionRecord | None:
        """The session record (possibly revoked), or None when the session does not exist."""
        record = self._lru.get(device_session_id)
        if record is not None:
            return record
        if self._is_known_missing(device_session_id):
            return None
        return await asyncio.shield(self._fetching(device_session_id))

    async def refresh(self, device_session_id: str) -> SessionRecord | None:
        """Like ``lookup``, but the answer comes from a backend call that starts after this call.

        A fetch already in flight may have been answered before the gap this refresh is for, so it
        is waited out, not joined; a fetch another caller starts meanwhile is as fresh and is joined.
        """
        earlier = self._inflight.get(device_session_id)
        if earlier is not None:
            await asyncio.wait((earlier,))
        return await asyncio.shield(self._fetching(device_session_id))

    def _fetching(self, device_session_id: str) -> asyncio.Task[SessionRecord | None]:
        """The fetch of ``device_session_id`` in flight, started now if there is none."""
        task = self._inflight.get(device_session_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(device_session_id))
            self._inflight[device_session_id] = task
            task.add_done_callback(lambda t: self._forget_fetch(device_session_id, t))
        return task

    def _forget_fetch(self, device_session_id: str, task: asyncio.Task[SessionRecord | None]) -> None:
        if self._inflight.get(device_session_id) is task:  # not a newer fetch of the same id
            del self._inflight[device_session_id]

    def mark_revoked(self, device_session_id: str, revoked_at_ms: int | None = None) -> bool:
        self._invalidations += 1
        return self._lru.mark_revoked(device_session_id, revoked_at_ms)

    def mark_all_revoked_for_user(self, user_id: str, revoked_at_ms: int | None = None) -> int:
        self._invalidations += 1
        return self._lru.mark_all_revoked_for_user(user_id, revoked_at_ms)

    def sessions_of_user(self, user_id: str) -> frozenset[str]:
        return self._lru.sessions_of_user(user_id)

    async def close(self) -> None:
        """Cancel fetches still in flight (at shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch(self, device_session_id: str) -> SessionRecord | None:
        for _ in range(_MAX_FETCH_ROUNDS):
            seen = self._invalidations
            self.backend_fetches += 1
            record = await self._source(device_session_id)
            if self._invalidations == seen:
                break
        if record is None:
            self._remember_missing(device_session_id)
        else:
            self._lru.put(record)
        return record

    def _is_known_missing(self, device_session_id: str) -> bool:
        expires = self._negative.get(device_session_id)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._negative[device_session_id]
            return False
        return True

    def _remember_missing(self, device_session_id: str) -> None:
        if self._negative_ttl_ms <= 0:
            return
        self._negative[device_session_id] = self._clock() + self._negative_ttl_ms
        self._negative.move_to_end(device_session_id)
        while len(self._negative) > self._negative_max:
            self._negative.popitem(last=False)
