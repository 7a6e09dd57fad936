"""The push hub: every open SubscribeEvents stream, indexed by user and by device session.

docs/protocol.md §4, docs/push.md. What it guarantees:

- an event is encoded and signed once (``envelope.encode_event``) and the same bytes are queued
  to every stream it reaches; an event that reaches no stream is not signed at all;
- an event addressed to a user reaches all of that user's streams; one with a device session id
  only that session's streams, and only if the session belongs to the event's user;
- publishing never waits for a stream. Each stream has a bounded queue; a stream whose queue is
  full is ended with ``slow_consumer`` and nobody else is slowed;
- an ended stream gets nothing more, not even what was already queued for it, so nothing reaches
  a session once its revocation has been applied;
- a stream is ended at once even when its gRPC write is blocked (its client stopped reading and
  the flow-control windows are full): the writing task is interrupted, so a stalled client holds
  neither a handler nor a queue.

Caps on concurrent streams per device session and per user are checked at registration, which
happens before the stream's first event is written: a refused subscription gets
``too_many_streams`` and no event at all.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Awaitable, Callable
from typing import NoReturn

from edgeward.native.crypto import Signer
from edgeward.native.envelope import encode_event
from edgeward.reasons import Reason, Rejection

__all__ = ("HubStats", "PushHub", "Subscriber")

CLIENT_CLOSED = "cancelled"
"""``HubStats.streams_ended`` key of streams that ended from the client side (or a handler fault)."""


@dataclasses.dataclass(slots=True)
class HubStats:
    """Counters since start: plain ints, cheap on the hot path; edgeward.gateway.metrics exports them."""

    events_published: int = 0  # client events handed to the hub
    events_signed: int = 0  # of those, the ones that reached a stream (each signed once)
    events_queued: int = 0  # (event, stream) pairs queued
    events_delivered: int = 0  # (event, stream) pairs written to gRPC, server_time events included
    streams_opened: int = 0
    streams_refused: int = 0  # too_many_streams, or shutting_down at registration
    streams_ended: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


class Subscriber:
    """One registered stream: its bounded queue and, once it has ended, why."""

    __slots__ = (
        "_end",
        "_held",
        "_hub",
        "_interrupted",
        "_items",
        "_limit",
        "_replay",
        "_task",
        "_waiter",
        "_writing",
        "device_session_id",
        "user_id",
    )

    def __init__(self, hub: PushHub, user_id: str, device_session_id: str, limit: int) -> None:
        self.user_id = user_id
        self.device_session_id = device_session_id
        self._hub = hub
        self._limit = limit
        self._items: collections.deque[bytes] = collections.deque()
        self._held: collections.deque[str] | None = None  # while held: the event_id of each queued item
        self._replay: collections.deque[bytes] = collections.deque()  # written before the queue
        self._end: Reason | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[object] | None = None  # the pump's task, while it runs
        self._writing = False
        self._interrupted = False  # the hub cancelled the pump's task to end a blocked write

    @property
    def ended(self) -> Reason | None:
        """Why the stream ended (session_revoked, slow_consumer, shutting_down), or None."""
        return self._end

    @property
    def queued(self) -> int:
        return len(self._items)

    async def pump(self, write: Callable[[bytes], Awaitable[None]], first: bytes) -> NoReturn:
        """Write ``first``, then every queued event in order, until the hub ends the stream.

        Raises ``Rejection`` with the reason the stream ended. A cancellation that does not come
        from the hub (the client went away) propagates as it is.
        """
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        try:
            if self._end is None:
                await self._write(write, first)
            while self._end is None:
                if self._replay:
                    await self._write(write, self._replay.popleft())
                    continue
                if self._items:
                    await self._write(write, self._items.popleft())
                    continue
                self._waiter = task.get_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        except asyncio.CancelledError:
            if not self._interrupted:
                raise
            self._interrupted = False
            task.uncancel()
        finally:
            self._task = None
        assert self._end is not None
        raise Rejection(self._end)

    def hold(self) -> None:
        """Remember the event id of every event queued from now on, until ``resume``."""
        self._held = collections.deque(maxlen=self._limit)

    def resume(self, replay: list[bytes], replayed_ids: set[str]) -> None:
        """Write ``replay`` (history, oldest first) after the first event and before the queue,
        and drop the queued events whose id is in ``replayed_ids`` (they are in the replay)."""
        held, self._held = self._held, None
        if held is not None and replayed_ids:
            kept = [data for data, event_id in zip(self._items, held, strict=True) if event_id not in replayed_ids]
            self._items = collections.deque(kept)
        self._replay.extend(replay)

    def close(self) -> None:
        """Unregister (the handler is done); a stream that had not ended counts as closed by its client."""
        self._hub._finish(self, None)

    async def _write(self, write: Callable[[bytes], Awaitable[None]], data: bytes) -> None:
        self._writing = True
        try:
            await write(data)
        finally:
            self._writing = False
        self._hub.stats.events_delivered += 1

    def _offer(self, data: bytes, event_id: str) -> bool:
        """Queue ``data``; False when the queue is full (the hub then ends the stream)."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(data)
        if self._held is not None:
            self._held.append(event_id)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def _stop(self, reason: Reason) -> None:
        self._end = reason
        self._items.clear()
        self._replay.clear()
        self._held = None
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self._writing and self._task is not None and self._task is not asyncio.current_task():
            self._interrupted = True
            self._task.cancel()


class PushHub:
    """Open SubscribeEvents streams; ``publish`` fans an event out, ``end_*`` and ``close`` end streams.

    ``queue_size`` bounds each stream's queue (events), ``max_per_session`` and ``max_per_user``
    the concurrent streams of one device session and of one user.
    """

    def __init__(self, signer: Signer, *, queue_size: int, max_per_session: int, max_per_user: int) -> None:
        self._signer = signer
        self._queue_size = queue_size
        self._max_per_session = max_per_session
        self._max_per_user = max_per_user
        self._by_user: dict[str, set[Subscriber]] = {}
        self._by_session: dict[str, set[Subscriber]] = {}
        self._open = 0
        self._closed = False
        self.stats = HubStats()

    def __len__(self) -> int:
        """Open streams."""
        return self._open

    @property
    def closed(self) -> bool:
        return self._closed

    def register(self, user_id: str, device_session_id: str) -> Subscriber:
        """A new stream of ``device_session_id`` (of ``user_id``); it receives events published from now on.

        Raises ``Rejection``: shutting_down once the hub is closed, too_many_streams (metadata
        ``scope`` = device_session or user, and ``max_streams``) beyond a cap.
        """
        if self._closed:
            self.stats.streams_refused += 1
            raise Rejection(Reason.SHUTTING_DOWN)
        if len(self._by_session.get(device_session_id, ())) >= self._max_per_session:
            raise self._refuse("device_session", self._max_per_session)
        if len(self._by_user.get(user_id, ())) >= self._max_per_user:
            raise self._refuse("user", self._max_per_user)
        sub = Subscriber(self, user_id, device_session_id, self._queue_size)
        self._by_session.setdefault(device_session_id, set()).add(sub)
        self._by_user.setdefault(user_id, set()).add(sub)
        self._open += 1
        self.stats.streams_opened += 1
        return sub

    def publish(
        self,
        user_id: str,
        device_session_id: str,
        event_id: str,
        event_type: str,
        payload: bytes,
        timestamp_ms: int,
        trace_id: str = "",
    ) -> int:
        """Sign the event once and queue it to the streams it is addressed to; returns how many.

        ``device_session_id`` empty: every stream of ``user_id``; set: that session's streams.
        """
        self.stats.events_published += 1
        if device_session_id:
            targets = [s for s in self._by_session.get(device_session_id, ()) if s.user_id == user_id]
        else:
            targets = list(self._by_user.get(user_id, ()))
        if not targets:
            return 0
        data = encode_event(self._signer, event_id, event_type, payload, timestamp_ms, trace_id)
        self.stats.events_signed += 1
        queued = 0
        for sub in targets:
            if sub._offer(data, event_id):
                queued += 1
            else:
                self._finish(sub, Reason.SLOW_CONSUMER)
        self.stats.events_queued += queued
        return queued

    def end_session(self, device_session_id: str, reason: Reason) -> int:
        """End every stream of one device session; returns how many."""
        subs = tuple(self._by_session.get(device_session_id, ()))
        for sub in subs:
            self._finish(sub, reason)
        return len(subs)

    def end_user(self, user_id: str, reason: Reason) -> int:
        """End every stream of ``user_id``, all devices; returns how many."""
        subs = tuple(self._by_user.get(user_id, ()))
        for sub in subs:
            self._finish(sub, reason)
        return len(subs)

    def close(self) -> int:
        """End every stream with shutting_down and refuse new ones; returns how many were open."""
        self._closed = True
        subs = [sub for group in self._by_session.values() for sub in group]
        for sub in subs:
            self._finish(sub, Reason.SHUTTING_DOWN)
        return len(subs)

    def session_ids(self) -> list[str]:
        """Device sessions with at least one open stream."""
        return list(self._by_session)

    def _refuse(self, scope: str, limit: int) -> Rejection:
        self.stats.streams_refused += 1
        return Rejection(
            Reason.TOO_MANY_STREAMS,
            f"at most {limit} concurrent streams per {scope.replace('_', ' ')}",
            metadata={"scope": scope, "max_streams": str(limit)},
        )

    def _finish(self, sub: Subscriber, reason: Reason | None) -> None:
        """Unregister ``sub`` and, with a reason, end it; nothing happens to a stream already finished."""
        session_subs = self._by_session.get(sub.device_session_id)
        if session_subs is None or sub not in session_subs:
            return
        _discard(self._by_session, sub.device_session_id, sub)
        _discard(self._by_user, sub.user_id, sub)
        self._open -= 1
        self.stats.streams_ended[CLIENT_CLOSED if reason is None else reason.wire] += 1
        if reason is not None:
            sub._stop(reason)


def _discard(index: dict[str, set[Subscriber]], key: str, sub: Subscriber) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(sub)
        if not group:
            del index[key]
