"""The replay store: step 6 of the request flow (docs/protocol.md §3, docs/replay.md).

A request reserves (device_session_id, request_id) for twice the freshness window; a reservation
that already exists means the request is a replay. The store fails closed: whenever it cannot
answer, ``reserve`` raises ``Rejection(Reason.REPLAY_STORE_UNAVAILABLE)`` and never reports a
pass, and it never forgets a live reservation before its TTL ends.

``MemoryReplayStore`` is the embedded default for a single gateway. ``RedisReplayStore`` shares
reservations across gateway instances; it batches the reservations of one event-loop turn into
a single pipeline so a busy gateway pays one round trip per turn, not one per request, over the
auto-pipelining connection of ``edgeward.io.resp``. When the command budgets' Redis limiter uses
the same single-node server (``share_round_trip``), ``reserve_charging`` does steps 6 and 7 in
one script call, so a request pays one round trip for both, with the store's fail-closed rules.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from edgeward.clock import monotonic_ms
from edgeward.io.redis import connect
from edgeward.io.resp import Arg, ConnectionLost, Reply, RespError
from edgeward.protection.budgets import CommandBudgets, refusal
from edgeward.protection.limiter import Hit
from edgeward.protection.redis_limiter import RedisLimiter, is_noscript, load_script
from edgeward.reasons import Reason, Rejection

__all__ = (
    "MemoryReplayStore",
    "RedisReplayStats",
    "RedisReplayStore",
    "ReplayStore",
    "open_replay_store",
    "replay_key",
)

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "edgeward:replay:"


class ReplayStore(Protocol):
    async def reserve(self, device_session_id: str, request_id: str, ttl_ms: int) -> bool:
        """True: newly reserved. False: already reserved (a replay).

        Raises ``Rejection(Reason.REPLAY_STORE_UNAVAILABLE)`` when the store cannot answer:
        never a pass.
        """
        ...

    def reserve_charging(
        self, device_session_id: str, request_id: str, ttl_ms: int, client_ip: str, user_id: str, message_type: str
    ) -> Awaitable[tuple[bool, Rejection | None]] | None:
        """Steps 6 and 7 in one Redis round trip, when the store shares its server with the budgets.

        None when it cannot now: the caller runs ``reserve`` and then the budgets' ``charge``.
        Otherwise an awaitable of (first seen, budget refusal): a replay is (False, None) and
        charged nothing; a request the budgets refuse keeps its reservation, as with two steps.
        Raises as ``reserve`` does.
        """
        ...

    async def ping(self) -> bool:
        """Readiness: True when the store can take reservations now."""
        ...

    async def close(self) -> None:
        """Answer or reject every pending reservation, then release resources."""
        ...


def _unavailable(detail: str) -> Rejection:
    return Rejection(Reason.REPLAY_STORE_UNAVAILABLE, detail)


def _check_ttl(ttl_ms: int) -> None:
    if ttl_ms <= 0:
        raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")


def replay_key(device_session_id: str, request_id: str, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    """``<prefix>{<device_session_id>}:<request_id>``.

    The braces are a Redis Cluster hash tag: all reservations of one device session live in one
    slot. They also make the key unambiguous (the first ``}`` ends the session id), which is why
    a session id holding a brace is refused rather than allowed to collide with another key.
    """
    if "{" in device_session_id or "}" in device_session_id:
        raise ValueError("device_session_id must not contain braces")
    return f"{prefix}{{{device_session_id}}}:{request_id}"


class MemoryReplayStore:
    """Reservations in this process, at most ``max_entries`` live at once.

    ``_expiries`` maps each reservation to its deadline on ``clock`` (ms); ``_heap`` holds one
    (deadline, key) entry per reservation, so expired ones leave from the top in deadline order
    whatever mix of TTLs was used: O(log n) amortized per reservation. Both always hold the
    same keys, because a key is only reserved again after its expired entry was purged.
    """

    __slots__ = ("_clock", "_closed", "_expiries", "_heap", "max_entries")

    def __init__(self, max_entries: int, clock: Callable[[], float] = monotonic_ms) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._clock = clock
        self._expiries: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._closed = False

    def __len__(self) -> int:
        """Live reservations (expired ones are dropped first)."""
        self._purge(self._clock())
        return len(self._expiries)

    async def reserve(self, device_session_id: str, request_id: str, ttl_ms: int) -> bool:
        """Reserve for ``ttl_ms``; a full store refuses rather than evicting a live reservation."""
        _check_ttl(ttl_ms)
        if self._closed:
            raise _unavailable("replay store closed")
        now = self._clock()
        self._purge(now)
        key = (device_session_id, request_id)
        if key in self._expiries:
            return False
        if len(self._expiries) >= self.max_entries:
            raise _unavailable("replay store full")
        deadline = now + ttl_ms
        self._expiries[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        return True

    def reserve_charging(
        self, device_session_id: str, request_id: str, ttl_ms: int, client_ip: str, user_id: str, message_type: str
    ) -> Awaitable[tuple[bool, Rejection | None]] | None:
        """Never: no round trip to save."""
        return None

    async def ping(self) -> bool:
        """Ready while open and not full: a full store rejects every new request."""
        return not self._closed and len(self) < self.max_entries

    async def close(self) -> None:
        """Nothing is pending (reservations are synchronous); free the memory."""
        self._closed = True
        self._expiries.clear()
        self._heap.clear()

    def _purge(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            del self._expiries[heapq.heappop(heap)[1]]


@dataclasses.dataclass(frozen=True, slots=True)
class RedisReplayStats:
    """Counters since the store opened, for tests and metrics."""

    pipelines: int  # writes to Redis: one per event-loop turn that sent anything
    commands: int  # SET commands in those writes, retries included
    errors: int  # reservations that failed (no answer, or Redis answered with an error)


class RedisReplayStore:
    """Reservations in Redis (``SET key 1 NX PX ttl``), shared by every gateway using it.

    Each reservation is one command on the auto-pipelining connection of ``edgeward.io.resp``
    (chosen over redis-py by ``bench/test_replay_client.py``): the reservations of one event-loop
    turn go out in one write and share one round trip, with no timer and no task per batch, so
    batching adds no latency. The reservation awaits the connection's own future for its reply:
    no second future, no callback in between.

    The connection fails fast: connect and reply timeouts of ``socket_timeout_ms``, reconnection
    on the next command. A reservation whose connection broke after it was written
    (``ConnectionLost``) is sent once more at once, on a fresh connection, together with the
    others of its batch: that hides a Redis restart racing a batch. A timeout is never retried,
    so a silent Redis costs one timeout per batch. A retried ``SET NX`` whose first try did
    reach Redis answers "already reserved": a false replay, never a false pass.
    """

    def __init__(
        self, url: str, *, socket_timeout_ms: int = 1000, key_prefix: str = DEFAULT_KEY_PREFIX
    ) -> None:
        if socket_timeout_ms <= 0:
            raise ValueError("socket_timeout_ms must be positive")
        self._redis = connect(url, socket_timeout_ms=socket_timeout_ms)  # one node, or a redis+cluster:// URL
        self._prefix = key_prefix
        self._errors = 0
        self._closed = False
        self._healthy = True
        self._budgets: CommandBudgets | None = None  # charged with the reservations (share_round_trip)
        self._limiter: RedisLimiter | None = None  # their limiter, on this store's server

    @property
    def stats(self) -> RedisReplayStats:
        return RedisReplayStats(self._redis.writes, self._redis.commands_written, self._errors)

    async def reserve(self, device_session_id: str, request_id: str, ttl_ms: int) -> bool:
        _check_ttl(ttl_ms)
        if self._closed:
            raise _unavailable("replay store closed")
        command = ("SET", replay_key(device_session_id, request_id, self._prefix), b"1", b"NX", b"PX", ttl_ms)
        reply = await self._call(command)
        if reply is None or reply == b"OK":  # SET NX: OK reserved, nil already reserved
            self._set_healthy(True)
            return reply is not None
        raise self._failed(reply)  # Redis refused this command, e.g. OOM at maxmemory

    def share_round_trip(self, budgets: CommandBudgets) -> bool:
        """Charge ``budgets`` in each reservation's round trip from now on, when their limiter is a
        Redis one on this store's own single-node server (same endpoint, database and user).
        False, and nothing changes, otherwise: in-process budgets, another server, a cluster."""
        limiter = budgets.limiter
        if not isinstance(limiter, RedisLimiter) or not limiter.shares_server(self._redis):
            return False
        self._budgets, self._limiter = budgets, limiter
        return True

    def reserve_charging(
        self, device_session_id: str, request_id: str, ttl_ms: int, client_ip: str, user_id: str, message_type: str
    ) -> Awaitable[tuple[bool, Rejection | None]] | None:
        """See ``ReplayStore.reserve_charging``: one ``GUARDED_SCRIPT`` call, the reservation its guard.

        None when the budgets are not shared, none applies to the request, the store is closed
        (``reserve`` refuses then), or the limiter is leaving Redis alone after a failure (its
        failure mode decides the budgets, at no cost, while the reservation goes alone).
        """
        budgets, limiter = self._budgets, self._limiter
        if budgets is None or limiter is None or self._closed:
            return None
        _check_ttl(ttl_ms)
        hits = budgets.hits(client_ip, device_session_id, user_id, message_type)
        if not hits:
            return None
        command = limiter.guarded(replay_key(device_session_id, request_id, self._prefix), ttl_ms, hits)
        if command is None:
            return None
        return self._reserve_charging(command, limiter, hits)

    async def _reserve_charging(
        self, command: tuple[Arg, ...], limiter: RedisLimiter, hits: Sequence[Hit]
    ) -> tuple[bool, Rejection | None]:
        reply = await self._call(command)
        if is_noscript(reply):  # a restarted or flushed Redis: once more as EVAL, which caches it
            reply = await self._call(load_script(command))
        try:
            first_seen, verdict = limiter.guarded_answer(reply)
        except ValueError:  # an error reply (OOM at maxmemory, say): no reservation to vouch for
            raise self._failed(reply) from None
        self._set_healthy(True)
        return first_seen, None if verdict is None else refusal(hits, verdict)

    async def _call(self, command: Sequence[Arg]) -> Reply:
        """``reserve``'s sending and failure rules, for any command: its reply, or the rejection."""
        try:
            try:
                (reply,) = await self._redis.send(command)
            except ConnectionLost:
                if self._closed:
                    raise
                (reply,) = await self._redis.send(command)  # once more, on a fresh connection
        except (RespError, UnicodeEncodeError) as exc:  # no connection, lost twice, timeout, closed; a bad key
            if self._closed:
                raise _unavailable("replay store closed") from None
            raise self._failed(exc) from None
        return reply

    async def ping(self) -> bool:
        if self._closed:
            return False
        return await self._redis.ping()  # any failure means "not ready", never an error of the probe

    async def close(self) -> None:
        """Let the reservations already made have their answer, then close; later ones are rejected.

        Each is answered or fails within the connect and socket timeouts, so closing is bounded.
        """
        if self._closed:
            return
        self._closed = True
        await self._redis.drain()
        await self._redis.close()

    def _failed(self, why: object) -> Rejection:
        self._errors += 1
        self._set_healthy(False, why)
        return _unavailable("redis failed" if isinstance(why, RespError) else repr(why))

    def _set_healthy(self, healthy: bool, why: object = None) -> None:
        """Log transitions only: a dead Redis fails every batch, and one line per batch would flood."""
        if healthy != self._healthy:
            self._healthy = healthy
            if healthy:
                log.info("replay store: Redis answers again")
            else:
                log.warning("replay store: Redis unavailable, rejecting requests: %r", why)


def open_replay_store(redis_url: str | None, memory_max_entries: int) -> ReplayStore:
    """Redis when a URL is configured (shared by all gateways), else the embedded store."""
    if redis_url:
        return RedisReplayStore(redis_url)
    return MemoryReplayStore(memory_max_entries)
