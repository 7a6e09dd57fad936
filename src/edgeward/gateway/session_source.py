"""The Redis session source: session-cache misses read the backend's projection, not its REST API.

docs/sessions.md. With ``EDGEWARD_SESSION_SOURCE=redis`` the session cache's fetch function is
``RedisSessionSource.fetch``: one ``GET gateway:session:{device_session_id}`` (protocol §5), the
same JSON object the backend's REST answer carries, parsed by ``parse_session``.

- A missing key falls back to backend REST (``EDGEWARD_SESSION_SOURCE_FALLBACK=backend``, the
  default) or means "unknown session" (``none``). The default is the fallback because the
  projection is best-effort: snapshots written while the backend's Redis was down are lost, keys
  may be evicted, and sessions older than the projection have none; REST is the source of truth.
- Redis failing (no connection, no reply in time, an error reply, an unreadable value) is
  ``backend_unavailable``, never a fall-back to REST: the session source is what is unavailable,
  the client retries, and a Redis outage does not turn into every gateway's misses hitting the
  backend at once (the replay store, usually in the same Redis, fails closed then anyway).

Redis is reached through ``RedisCommands``, the small interface both the single-node
``RespConnection`` and a cluster client offer, so the gateway can hand in either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import hiredis
import orjson

from edgeward.io.resp import Arg, Reply, RespError
from edgeward.native.session_record import SessionRecord, parse_session
from edgeward.reasons import Reason, Rejection

__all__ = ("EVENTS_STREAM", "SESSION_KEY_PREFIX", "RedisCommands", "RedisSessionSource", "session_key")

SESSION_KEY_PREFIX = "gateway:session:"
EVENTS_STREAM = "gateway:session_events"

Fallback = Callable[[str], Awaitable[SessionRecord | None]]


class RedisCommands(Protocol):
    """What the session source and its event consumer need of a Redis client (``RespConnection`` is one)."""

    async def execute(self, *args: Arg) -> Reply:
        """One command's reply; an error reply comes back as ``hiredis.ReplyError``; ``RespError`` when none."""
        ...

    async def close(self) -> None:
        """Fail what is pending and close the connection(s)."""
        ...


def session_key(device_session_id: str) -> str:
    return SESSION_KEY_PREFIX + device_session_id


class RedisSessionSource:
    """A ``SessionSource`` (edgeward.gateway.session_cache) over the Redis projection."""

    def __init__(self, redis: RedisCommands, fallback: Fallback | None) -> None:
        """``fallback`` answers for a missing key (the backend client's ``get_session``); None: unknown."""
        self._redis = redis
        self._fallback = fallback
        self.fallbacks = 0  # missing keys answered by the fallback: how incomplete the projection is

    async def fetch(self, device_session_id: str) -> SessionRecord | None:
        """The projected record, the fallback's answer for a missing key, or ``backend_unavailable``."""
        try:
            value = await self._redis.execute("GET", session_key(device_session_id))
        except RespError as exc:
            raise _unavailable(str(exc)) from None
        if value is None:
            if self._fallback is None:
                return None
            self.fallbacks += 1
            return await self._fallback(device_session_id)
        if isinstance(value, hiredis.ReplyError) or not isinstance(value, bytes):
            raise _unavailable(f"GET {session_key(device_session_id)} answered {value!r}")
        try:
            document = orjson.loads(value)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            record = parse_session(document)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            raise _unavailable(f"{session_key(device_session_id)} is malformed: {exc}") from None
        if record.device_session_id != device_session_id:
            raise _unavailable(f"{session_key(device_session_id)} holds another session id")
        return record

    async def close(self) -> None:
        await self._redis.close()


def _unavailable(detail: str) -> Rejection:
    return Rejection(Reason.BACKEND_UNAVAILABLE, f"session projection in Redis: {detail}")
