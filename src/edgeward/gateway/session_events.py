"""Follows ``gateway:session_events`` (protocol §5) for the Redis session source: docs/sessions.md.

Each stream entry is a snapshot of one session. A revoked snapshot marks the cached session
revoked (so its commands are refused at the edge, with no lookup) and then ends its open streams
with ``session_revoked``; an active snapshot of a cached session has the record read again from
its key, the truth at the time of reading, so a changed key or a later revocation is picked up and
an out-of-date duplicate can do no harm. Revocation is final (the contract has no way back to
active): a session cached as revoked, or revoked later in the same batch, is not read again.
Snapshots of sessions this gateway does not hold need nothing: a miss reads the key. An entry
that is not a snapshot is counted and skipped.

The blocking ``XREAD`` has a connection to itself, whose reply timeout exceeds the block time:
on the shared auto-pipelining connection it would hold every command queued behind it. The first
read starts at the stream's tail as it is then (``$`` resolved to an id once, so no entry added
between two reads is missed); every later read starts after the last entry read, across
reconnections. After any failure the read is retried with capped exponential backoff and jitter
(``Backoff``), and each time it is re-established the sessions with open streams are read again:
entries may have been lost meanwhile (a Redis restarted without persistence, a stream trimmed past
our position), and the cache's TTL bounds how long any other cached record can be stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import hiredis

from edgeward.gateway.session_cache import SessionCache
from edgeward.gateway.session_source import EVENTS_STREAM, RedisCommands
from edgeward.io.resp import Reply, RespError
from edgeward.native.session_record import SessionRecord, parse_session
from edgeward.push.dispatcher import Backoff
from edgeward.push.hub import PushHub
from edgeward.push.resync import reread_sessions, stop_task
from edgeward.reasons import Reason

__all__ = ("DEFAULT_BLOCK_MS", "SessionEventConsumer")

log = logging.getLogger(__name__)

DEFAULT_BLOCK_MS = 5_000  # how long one XREAD waits for entries; a quiet stream costs one command per this
_BATCH = 512  # entries per XREAD at most


class _BadReply(Exception):
    """Redis answered something no stream read answers (an error reply, another shape)."""


class SessionEventConsumer:
    """Applies the session snapshots of the stream for the life of the gateway: ``start()``, then ``close()``."""

    def __init__(
        self,
        redis: RedisCommands,
        sessions: SessionCache,
        hub: PushHub,
        backoff: Backoff,
        *,
        block_ms: int = DEFAULT_BLOCK_MS,
    ) -> None:
        """``redis``: a connection for this consumer alone, which it closes; its reply timeout exceeds ``block_ms``."""
        self._redis = redis
        self._sessions = sessions
        self._hub = hub
        self._backoff = backoff
        self._block_ms = block_ms
        self._task: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None
        self._last_id: bytes | None = None  # the last entry read; None until the first start has read the tail
        self._read_ok = False  # an XREAD answered since the read was (re-)established
        self.connected = False
        self.connects = 0
        self.reconnects = 0  # reads re-established after a failure
        self.applied = 0  # well-formed entries, whether or not this gateway held their session
        self.malformed = 0
        self.reread_failures = 0  # sessions that could not be read again (their streams are kept)
        self.last_error = ""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="edgeward-session-events")

    async def close(self) -> None:
        """Stop reading, then close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._redis.close()

    def status(self) -> dict[str, Any]:
        """For /readyz: reported, never gating (the cache and the key reads work without it)."""
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "applied": self.applied,
            "malformed": self.malformed,
            "last_error": self.last_error,
        }

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._follow()
            except (RespError, _BadReply) as exc:
                self.last_error = str(exc)
            except Exception as exc:  # a bug in applying an entry: read again rather than go deaf
                log.exception("session events consumer failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.connected = False
                await self._stop_resync()
            if self._read_ok:  # the read worked before it broke: start the backoff sequence again
                attempt = 0
            delay = self._backoff.delay_ms(attempt) / 1000
            attempt += 1
            log.warning("session events from Redis are down (%s); retrying in %.2fs", self.last_error, delay)
            await asyncio.sleep(delay)

    async def _follow(self) -> None:
        """Establish the read, then read until something fails (it never returns otherwise)."""
        self._read_ok = False
        if self._last_id is None:
            self._last_id = await self._tail_id()
        elif not isinstance(length := await self._redis.execute("XLEN", EVENTS_STREAM), int):
            # A command on the stream's key, not PING: on a cluster it reaches the stream's node.
            raise _BadReply(f"XLEN answered {length!r}")
        self._established()
        while True:
            reply = await self._redis.execute(
                "XREAD", "COUNT", _BATCH, "BLOCK", self._block_ms, "STREAMS", EVENTS_STREAM, self._last_id
            )
            self._read_ok = True
            if reply is not None:  # None: the block time passed without entries
                await self._apply(_entries(reply))

    async def _tail_id(self) -> bytes:
        """The id of the stream's last entry now ("0-0" for an empty stream): where the first read starts."""
        reply = await self._redis.execute("XREVRANGE", EVENTS_STREAM, "+", "-", "COUNT", 1)
        if not isinstance(reply, list):
            raise _BadReply(f"XREVRANGE answered {reply!r}")
        return _entry(reply[0])[0] if reply else b"0-0"

    def _established(self) -> None:
        self.connected = True
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
            log.info("session events from Redis read again after entry %s", (self._last_id or b"").decode())
        if len(self._hub):
            self._resync = asyncio.get_running_loop().create_task(
                self._reread(self._hub.session_ids()), name="edgeward-session-events-resync"
            )

    async def _apply(self, entries: list[tuple[bytes, Reply]]) -> None:
        """Revocations at once, in stream order; then the cached sessions of active snapshots, read again."""
        refresh: dict[str, None] = {}
        for entry_id, fields in entries:
            self._last_id = entry_id
            try:
                snapshot = _snapshot(fields)
            except ValueError as exc:
                self.malformed += 1
                log.warning("session event %s is not a snapshot (%s): skipped", entry_id.decode(errors="replace"), exc)
                continue
            self.applied += 1
            dsid = snapshot.device_session_id
            if snapshot.revoked:
                # The cache first: once a stream has ended, the session's commands are refused too.
                self._sessions.mark_revoked(dsid, snapshot.revoked_at_ms)
                self._hub.end_session(dsid, Reason.SESSION_REVOKED)
                refresh.pop(dsid, None)  # an earlier active snapshot must not read the key back in after this
            elif (cached := self._sessions.cached(dsid)) is not None and not cached.revoked:
                refresh[dsid] = None  # revocation is final: a revoked record is never read back as active
        if refresh:
            await self._reread(refresh)

    async def _reread(self, device_session_ids: Iterable[str]) -> None:
        """Read sessions again from their source; end the streams of those revoked or gone."""
        await reread_sessions(device_session_ids, self._sessions.refresh, self._hub, self._count_reread_failure)

    def _count_reread_failure(self) -> None:
        self.reread_failures += 1

    async def _stop_resync(self) -> None:
        task, self._resync = self._resync, None
        await stop_task(task, "reading the sessions with open streams again")


def _entries(reply: Reply) -> list[tuple[bytes, Reply]]:
    """The (id, fields) entries of an XREAD reply on the one stream (RESP2: ``[[name, [[id, fields], ...]]]``)."""
    if isinstance(reply, hiredis.ReplyError):
        raise _BadReply(f"XREAD answered {reply}")
    if not (isinstance(reply, list) and len(reply) == 1 and isinstance(reply[0], list) and len(reply[0]) == 2):
        raise _BadReply(f"XREAD answered {reply!r:.200}")
    entries = reply[0][1]
    if not isinstance(entries, list):
        raise _BadReply(f"XREAD answered {reply!r:.200}")
    return [_entry(entry) for entry in entries]


def _entry(entry: Reply) -> tuple[bytes, Reply]:
    """One entry's id and fields; an entry without an id cannot be stepped over, so it is a bad reply."""
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], bytes)):
        raise _BadReply(f"a stream entry without an id: {entry!r:.200}")
    return entry[0], entry[1]


def _snapshot(fields: Reply) -> SessionRecord:
    """A stream entry's fields as a session record; ValueError when they are not a snapshot."""
    if not isinstance(fields, list) or len(fields) % 2 or not all(isinstance(f, bytes) for f in fields):
        raise ValueError("fields are not name/value strings")
    texts = [f.decode() for f in fields if isinstance(f, bytes)]  # UnicodeDecodeError is a ValueError
    return parse_session(dict(zip(texts[::2], texts[1::2], strict=True)))
