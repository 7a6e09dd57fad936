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

Idempotent retry (docs/replay.md, "Idempotent retry"): a command's reservation goes through
``claim`` with the request's fingerprint (its payload hash and signature), and its answer is kept
with ``finish`` beside the reservation, same key and same TTL, up to ``max_response_bytes``. The
reservation's value says where the request is: ``1`` a plain reservation (subscriptions),
``p<fingerprint>`` in flight, ``r<fingerprint><response>`` answered and kept, ``x`` finished with
nothing kept. A retry of the very same signed request gets the kept response; while the first is
in flight it is told ``request_in_flight``; anything else is ``replayed_request``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import hiredis

from edgeward.clock import monotonic_ms
from edgeward.io.redis import RedisClient, connect
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
    "fingerprint",
    "open_replay_store",
    "replay_key",
)

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "edgeward:replay:"
DEFAULT_MAX_RESPONSE_BYTES = 65_536  # a kept response's cap: larger answers are not kept
DEFAULT_MEMORY_MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # all responses the embedded store keeps at once
IN_FLIGHT_RETRY_MS = 250  # the RetryInfo of request_in_flight

_PLAIN = b"1"  # a reservation whose answer is not kept (subscriptions, ``reserve``)
_IN_FLIGHT = b"p"  # + fingerprint: reserved, the first call still running
_ANSWERED = b"r"  # + fingerprint + the signed response bytes
_DONE = b"x"  # finished, nothing kept (refused, failed, cut, or over the cap)
_FINGERPRINT_BYTES = 32 + 64  # payload hash + Ed25519 signature


def fingerprint(payload_hash: bytes, signature: bytes) -> bytes:
    """What makes a retry "the very same signed request": its payload hash and its signature.

    The signature covers the whole envelope (request id, timestamp, payload hash, trace id), and
    Ed25519 is deterministic, so a client resending its request has the same one; a request signed
    again (a new timestamp) is a different request and gets ``replayed_request``.
    """
    return payload_hash + signature


def settle(previous: bytes, request_fingerprint: bytes) -> bytes:
    """The kept response a retry gets, from the reservation's value; else the rejection it gets.

    Raises ``Rejection(REQUEST_IN_FLIGHT)`` (with RetryInfo) while the very same request is still
    running, ``Rejection(REPLAYED_REQUEST)`` for everything else: another payload or signature
    under the same id, a finished request whose answer was not kept, a plain reservation.
    """
    kind, body = previous[:1], previous[1:]
    if kind == _ANSWERED and body[:_FINGERPRINT_BYTES] == request_fingerprint:
        return body[_FINGERPRINT_BYTES:]
    if kind == _IN_FLIGHT and body == request_fingerprint:
        raise Rejection(
            Reason.REQUEST_IN_FLIGHT, "the first call of this request is still running",
            retry_after_ms=IN_FLIGHT_RETRY_MS,
        )
    raise Rejection(Reason.REPLAYED_REQUEST)


class ReplayStore(Protocol):
    async def reserve(self, device_session_id: str, request_id: str, ttl_ms: int) -> bool:
        """True: newly reserved. False: already reserved (a replay).

        Raises ``Rejection(Reason.REPLAY_STORE_UNAVAILABLE)`` when the store cannot answer:
        never a pass.
        """
        ...

    def reserve_charging(
        self, device_session_id: str, request_id: str, ttl_ms: int, client_ip: str, user_id: str, message_type: str,
        request_fingerprint: bytes | None = None,
    ) -> Awaitable[tuple[bool | bytes, Rejection | None]] | None:
        """Steps 6 and 7 in one Redis round trip, when the store shares its server with the budgets.

        None when it cannot now: the caller runs ``reserve`` (or ``claim``) and then the budgets'
        ``charge``. Otherwise an awaitable of (first seen, budget refusal): a replay is (False, None)
        and charged nothing; a request the budgets refuse keeps its reservation, as with two steps.
        With ``request_fingerprint`` it reserves as ``claim`` does: a retry of the very same request
        is (its kept response, None), charged nothing, and one without a kept answer raises as
        ``settle`` does. Raises as ``reserve`` does.
        """
        ...

    async def claim(
        self, device_session_id: str, request_id: str, ttl_ms: int, request_fingerprint: bytes
    ) -> bytes | None:
        """``reserve`` for a command whose answer may be kept: None when newly reserved (the caller
        must ``finish`` it), else the kept response of the very same request.

        Raises as ``settle`` does for a retry without a kept answer, and as ``reserve`` does.
        """
        ...

    def finish(
        self, device_session_id: str, request_id: str, request_fingerprint: bytes, response: bytes | None
    ) -> None:
        """Keep ``response`` (None, or over the cap: keep only "finished") beside a claimed
        reservation, for the rest of its TTL. Best effort and not awaited: a write that fails
        leaves the request "in flight" until its TTL ends, never lets it run twice."""
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

    ``_values`` holds the state of the claimed ones (``claim``; a plain reservation has none), and
    kept responses count against ``max_kept_bytes`` in all: a response that would pass it is not
    kept (its retry gets ``replayed_request``, as without this store), never a reason to refuse.
    """

    __slots__ = (
        "_clock", "_closed", "_expiries", "_heap", "_kept_bytes", "_values", "max_entries", "max_kept_bytes",
        "max_response_bytes",
    )

    def __init__(
        self,
        max_entries: int,
        clock: Callable[[], float] = monotonic_ms,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_kept_bytes: int = DEFAULT_MEMORY_MAX_RESPONSE_BYTES,
    ) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        if max_response_bytes < 0 or max_kept_bytes < 0:
            raise ValueError("response caps must not be negative")
        self.max_entries = max_entries
        self.max_response_bytes = max_response_bytes
        self.max_kept_bytes = max_kept_bytes
        self._clock = clock
        self._expiries: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._values: dict[tuple[str, str], bytes] = {}
        self._kept_bytes = 0
        self._closed = False

    def __len__(self) -> int:
        """Live reservations (expired ones are dropped first)."""
        self._purge(self._clock())
        return len(self._expiries)

    async def reserve(self, device_session_id: str, request_id: str, ttl_ms: int) -> bool:
        """Reserve for ``ttl_ms``; a full store refuses rather than evicting a live reservation."""
        return self._reserve(device_session_id, request_id, ttl_ms)

    async def claim(
        self, device_session_id: str, request_id: str, ttl_ms: int, request_fingerprint: bytes
    ) -> bytes | None:
        key = (device_session_id, request_id)
        if self._reserve(device_session_id, request_id, ttl_ms):
            self._values[key] = _IN_FLIGHT + request_fingerprint
            return None
        return settle(self._values.get(key, _PLAIN), request_fingerprint)

    def finish(
        self, device_session_id: str, request_id: str, request_fingerprint: bytes, response: bytes | None
    ) -> None:
        key = (device_session_id, request_id)
        if self._closed or self._values.get(key) != _IN_FLIGHT + request_fingerprint:
            return  # expired meanwhile, or the store closed: nothing to keep it beside
        if response is None or len(response) > self.max_response_bytes or (
            self._kept_bytes + len(response) > self.max_kept_bytes
        ):
            self._values[key] = _DONE
            return
        self._values[key] = _ANSWERED + request_fingerprint + response
        self._kept_bytes += len(response)

    def _reserve(self, device_session_id: str, request_id: str, ttl_ms: int) -> bool:
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
        self, device_session_id: str, request_id: str, ttl_ms: int, client_ip: str, user_id: str, message_type: str,
        request_fingerprint: bytes | None = None,
    ) -> Awaitable[tuple[bool | bytes, Rejection | None]] | None:
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
        self._values.clear()
        self._kept_bytes = 0

    def _purge(self, now: float) -> None:
        heap, values = self._heap, self._values
        while heap and heap[0][0] <= now:
            key = heapq.heappop(heap)[1]
            del self._expiries[key]
            if values:
                value = values.pop(key, None)
                if value is not None and value[:1] == _ANSWERED:
                    self._kept_bytes -= len(value) - 1 - _FINGERPRINT_BYTES


@dataclasses.dataclass(frozen=True, slots=True)
class RedisReplayStats:
    """Counters since the store opened, for tests and metrics."""

    pipelines: int  # writes to Redis: one per event-loop turn that sent anything
    commands: int  # SET commands in those writes, retries included
    errors: int  # reservations that failed (no answer, or Redis answered with an error)


class RedisReplayStore:
    """Reservations in Redis (``SET key 1 NX PX ttl``; ``claim``: ``SET key p… NX GET PX ttl``), shared
    by every gateway using it.

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
        self,
        url: str,
        *,
        socket_timeout_ms: int = 1000,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if socket_timeout_ms <= 0:
            raise ValueError("socket_timeout_ms must be positive")
        if max_response_bytes < 0:
            raise ValueError("max_response_bytes must not be negative")
        self.max_response_bytes = max_response_bytes
        self._redis: RedisClient = connect(url, socket_timeout_ms=socket_timeout_ms)  # a node, or redis+cluster://
        self._prefix = key_prefix
        self._errors = 0
        self._closed = False
        self._healthy = True
        self._budgets: CommandBudgets | None = None  # charged with the reservations (share_round_trip)
        self._limiter: RedisLimiter | None = None  # their limiter, on this store's server
        self._finishing: set[asyncio.Future[list[Reply]]] = set()  # answers being kept (``finish``)

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

    async def claim(
        self, device_session_id: str, request_id: str, ttl_ms: int, request_fingerprint: bytes
    ) -> bytes | None:
        """``SET key p<fingerprint> NX GET PX ttl``: one command, which also reads what a retry needs."""
        _check_ttl(ttl_ms)
        if self._closed:
            raise _unavailable("replay store closed")
        key = replay_key(device_session_id, request_id, self._prefix)
        reply = await self._call(("SET", key, _IN_FLIGHT + request_fingerprint, b"NX", b"GET", b"PX", ttl_ms))
        if reply is None:
            self._set_healthy(True)
            return None
        if isinstance(reply, bytes):
            self._set_healthy(True)
            return settle(reply, request_fingerprint)
        raise self._failed(reply)

    def finish(
        self, device_session_id: str, request_id: str, request_fingerprint: bytes, response: bytes | None
    ) -> None:
        """``SET key r<fingerprint><response> XX KEEPTTL``, or ``x``: written with this turn's
        reservations and not awaited. ``XX`` writes nothing once the reservation expired; a write that
        fails leaves the value in flight (a retry is told request_in_flight until the request is stale)."""
        if self._closed:
            return
        if response is None or len(response) > self.max_response_bytes:
            value = _DONE
        else:
            value = _ANSWERED + request_fingerprint + response
        try:
            key = replay_key(device_session_id, request_id, self._prefix)
            future = asyncio.ensure_future(self._redis.send(("SET", key, value, b"XX", b"KEEPTTL")))
        except (RespError, UnicodeEncodeError) as exc:
            log.debug("replay store: answer not kept: %r", exc)
            return
        self._finishing.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: asyncio.Future[list[Reply]]) -> None:
        self._finishing.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.debug("replay store: answer not kept: %r", exc)
        elif isinstance(future.result()[0], hiredis.ReplyError):
            log.debug("replay store: answer not kept: %r", future.result()[0])

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
        self, device_session_id: str, request_id: str, ttl_ms: int, client_ip: str, user_id: str, message_type: str,
        request_fingerprint: bytes | None = None,
    ) -> Awaitable[tuple[bool | bytes, Rejection | None]] | None:
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
        key = replay_key(device_session_id, request_id, self._prefix)
        value = _PLAIN if request_fingerprint is None else _IN_FLIGHT + request_fingerprint
        command = limiter.guarded(key, ttl_ms, hits, value)
        if command is None:
            return None
        return self._reserve_charging(command, limiter, hits, request_fingerprint)

    async def _reserve_charging(
        self, command: tuple[Arg, ...], limiter: RedisLimiter, hits: Sequence[Hit], request_fingerprint: bytes | None
    ) -> tuple[bool | bytes, Rejection | None]:
        reply = await self._call(command)
        if is_noscript(reply):  # a restarted or flushed Redis: once more as EVAL, which caches it
            reply = await self._call(load_script(command))
        try:
            previous, verdict = limiter.guarded_answer(reply)
        except ValueError:  # an error reply (OOM at maxmemory, say): no reservation to vouch for
            raise self._failed(reply) from None
        self._set_healthy(True)
        if previous is None:
            return True, None if verdict is None else refusal(hits, verdict)
        if request_fingerprint is None:
            return False, None
        return settle(previous, request_fingerprint), None

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
        if self._finishing:
            await asyncio.wait(list(self._finishing))
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


def open_replay_store(
    redis_url: str | None,
    memory_max_entries: int,
    *,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    memory_max_kept_bytes: int = DEFAULT_MEMORY_MAX_RESPONSE_BYTES,
) -> ReplayStore:
    """Redis when a URL is configured (shared by all gateways), else the embedded store."""
    if redis_url:
        return RedisReplayStore(redis_url, max_response_bytes=max_response_bytes)
    return MemoryReplayStore(
        memory_max_entries, max_response_bytes=max_response_bytes, max_kept_bytes=memory_max_kept_bytes
    )
