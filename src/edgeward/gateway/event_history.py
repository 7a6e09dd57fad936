"""The per-user event history in Redis that lets a SubscribeEvents stream resume (docs/push.md, "Resuming a stream").

A delivered event's ``event_id`` is its position: a client that subscribes again with
``{"resume_after": "<the last event_id it received>"}`` gets what it missed before live events.

Keys, all of one user in one Redis Cluster slot (the braces are a hash tag):

- ``edgeward:events:{<user_id>}``: a stream, one entry per client event of that user, capped at
  about ``max_len`` entries (``XADD MAXLEN ~``) and ``max_age_ms`` (``XTRIM MINID ~``, and the key
  expires that long after its last event);
- ``edgeward:events:{<user_id>}:last``: the last stream id given out (see ``_IDS``);
- ``edgeward:events:{<user_id>}:at:<event_id>``: the stream id of that event (or, for the
  gateway's own ``server_time`` and ``resume_gap`` events, the stream id a resume from them starts
  after), kept ``max_age_ms``.

Every worker and instance follows the backend push stream and receives every event, so the append
is idempotent on ``event_id``: the first gateway to run it adds the entry, the others find the
position key and add nothing. One script call per event and per gateway, whoever holds streams.

Ordering: ``append`` is queued on the connection synchronously, before the hub publishes the event
locally, and ``resume`` goes over the same connection after the stream is registered in the hub.
Redis runs one connection's commands in order, so an event this gateway published before the
registration is in the history the resume reads, and one published after is queued to the stream
(and dropped there if the history had it too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets

import hiredis
import orjson

from edgeward.clock import now_ms
from edgeward.io.redis import RedisClient
from edgeward.io.resp import Arg, Reply, RespError
from edgeward.native.crypto import Signer
from edgeward.native.envelope import encode_event

__all__ = (
    "RESUME_GAP_EVENT_TYPE",
    "EventHistory",
    "HistoryEntry",
    "ResumePoint",
    "events_before_live",
)

log = logging.getLogger(__name__)

# Stream ids are "<ms>-<n>": the Redis clock in ms (never going back), and n counting the user's
# events one by one, so a resume can tell whether anything after its position was trimmed
# (Redis 7.0's max-deleted-entry-id does not count trimming).
_IDS = """
local function parse(id)
  local ms, n = string.match(id or '0-0', '^(%d+)-(%d+)$')
  return tonumber(ms or 0), tonumber(n or 0)
end
"""

# KEYS: stream, position key of the event, last id. ARGV: max_len, ttl_ms, then the fields.
_APPEND = _IDS + """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local last_ms, last_n = parse(redis.call('GET', KEYS[3]))
if ms < last_ms then ms = last_ms end
local id = string.format('%.0f-%.0f', ms, last_n + 1)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'i', ARGV[3], 'd', ARGV[4],
           't', ARGV[5], 'p', ARGV[6], 's', ARGV[7], 'r', ARGV[8])
redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', ms - tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[3], id, 'PX', ARGV[2])
redis.call('SET', KEYS[2], id, 'PX', ARGV[2])
return 1
"""

# KEYS: stream, position key of resume_after (any key of the user's slot for a fresh stream: an
# empty one would be CROSSSLOT on a cluster), position key to set with the start (server_time),
# position key to set with the tail (resume_gap), last id. ARGV: ttl_ms, 'resume' or 'fresh'.
# Returns {status, start, tail}: status 'ok' (replay (start, tail]), 'gap' or 'fresh'.
_RESUME = _IDS + """
local tail = redis.call('GET', KEYS[5]) or '0-0'
if ARGV[2] == 'fresh' then
  redis.call('SET', KEYS[3], tail, 'PX', ARGV[1])
  return {'fresh', tail, tail}
end
local start = redis.call('GET', KEYS[2])
local gap = not start
if start then
  local start_ms, start_n = parse(start)
  local tail_ms, tail_n = parse(tail)
  if start_ms > tail_ms or (start_ms == tail_ms and start_n > tail_n) then
    gap = true
  elseif start ~= tail then
    local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
    local _, first_n = parse(first and first[1] or tail)
    gap = first == nil or first_n > start_n + 1
  end
end
if gap then
  redis.call('SET', KEYS[4], tail, 'PX', ARGV[1])
  return {'gap', tail, tail}
end
redis.call('SET', KEYS[3], start, 'PX', ARGV[1])
return {'ok', start, tail}
"""

_APPEND_SHA = hashlib.sha1(_APPEND.encode()).hexdigest()
_RESUME_SHA = hashlib.sha1(_RESUME.encode()).hexdigest()
_PAGE = 128  # entries per XRANGE while replaying


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One client event as the history keeps it: what ``encode_event`` needs, and its addressing."""

    event_id: str
    device_session_id: str  # empty: every session of the user
    event_type: str
    payload: bytes
    timestamp_ms: int
    trace_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a stream starts: ``status`` 'ok' (replay after ``start`` up to ``tail``), 'gap' or 'fresh'."""

    status: str
    start: str
    tail: str


class EventHistory:
    """Appends client events to, and reads them back from, the per-user Redis streams."""

    def __init__(self, redis: RedisClient, *, max_len: int, max_age_ms: int) -> None:
        self._redis = redis
        self._max_len = max_len
        self._max_age_ms = max_age_ms
        self._load = True  # the next append sends the script itself (EVAL), which caches it in Redis
        self.appended = 0  # append calls sent (one per client event received from push)
        self.append_failures = 0  # of those, the ones Redis did not apply (no reply, or an error)

    async def close(self) -> None:
        await self._redis.close()

    def append(
        self, user_id: str, device_session_id: str, event_id: str, event_type: str,
        payload: bytes, timestamp_ms: int, trace_id: str,
    ) -> None:
        """Record a client event, once across every gateway; never waits (the reply is checked later)."""
        args: list[Arg] = [
            3, _stream_key(user_id), _position_key(user_id, event_id), _last_key(user_id),
            self._max_len, self._max_age_ms, event_id, device_session_id, event_type, payload, timestamp_ms, trace_id,
        ]
        self.appended += 1
        command = ("EVAL", _APPEND, *args) if self._load else ("EVALSHA", _APPEND_SHA, *args)
        self._load = False
        self._redis.pipeline([command]).add_done_callback(lambda done: self._appended(done, args))

    def _appended(self, done: asyncio.Future[list[Reply]], args: list[Arg]) -> None:
        if done.cancelled():
            return
        outcome = done.exception() or done.result()[0]
        if args and isinstance(outcome, hiredis.ReplyError) and str(outcome).startswith("NOSCRIPT"):
            # A restarted or flushed Redis: EVAL loads the script again (the events already
            # sent behind this one may land before it; it happens once per Redis start).
            self._load = True
            self._redis.pipeline([("EVAL", _APPEND, *args)]).add_done_callback(lambda again: self._appended(again, []))
            return
        if isinstance(outcome, BaseException):
            self.append_failures += 1
            if self.append_failures == 1 or self.append_failures % 1000 == 0:
                log.warning("event history append failed (%d so far): %s", self.append_failures, outcome)

    async def resume_point(
        self, user_id: str, resume_after: str | None, server_time_id: str, gap_id: str
    ) -> ResumePoint:
        """Resolve ``resume_after`` (None: a fresh stream) and make the gateway's own events positions.

        ``server_time_id`` becomes a position equal to where this stream starts (a fresh stream:
        the history's tail; a resume: ``resume_after``'s), ``gap_id`` the tail (after a gap).
        Raises ``RespError`` when Redis cannot answer.
        """
        keys: list[Arg] = [
            _stream_key(user_id),
            _position_key(user_id, server_time_id if resume_after is None else resume_after),
            _position_key(user_id, server_time_id),
            _position_key(user_id, gap_id),
            _last_key(user_id),
        ]
        args: list[Arg] = [len(keys), *keys, self._max_age_ms, "fresh" if resume_after is None else "resume"]
        # The cluster client sends an append from a task of its own, started on the next loop
        # turn: one yield lets the appends issued so far reach their connection before this.
        await asyncio.sleep(0)
        reply = (await self._redis.send(("EVALSHA", _RESUME_SHA, *args)))[0]
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = (await self._redis.send(("EVAL", _RESUME, *args)))[0]
        if not (isinstance(reply, list) and len(reply) == 3 and all(isinstance(r, bytes) for r in reply)):
            raise RespError(f"unexpected reply to the resume script: {reply!r}")
        status, start, tail = (r.decode() for r in reply if isinstance(r, bytes))
        return ResumePoint(status, start, tail)

    async def read(self, user_id: str, point: ResumePoint) -> list[HistoryEntry]:
        """The entries after ``point.start`` up to ``point.tail``, oldest first. Raises ``RespError``."""
        entries: list[HistoryEntry] = []
        start = point.start
        key = _stream_key(user_id)
        while True:
            reply = await self._redis.execute("XRANGE", key, "(" + start, point.tail, "COUNT", _PAGE)
            if not isinstance(reply, list):
                raise RespError(f"unexpected reply to XRANGE: {reply!r}")
            for item in reply:
                entry_id, fields = _entry(item)
                entries.append(fields)
                start = entry_id
            if len(reply) < _PAGE:
                return entries


def _stream_key(user_id: str) -> str:
    return f"edgeward:events:{{{user_id}}}"


def _last_key(user_id: str) -> str:
    return f"edgeward:events:{{{user_id}}}:last"


def _position_key(user_id: str, event_id: str) -> str:
    return f"edgeward:events:{{{user_id}}}:at:{event_id}"


def _entry(item: Reply) -> tuple[str, HistoryEntry]:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes) and isinstance(item[1], list)):
        raise RespError(f"unexpected stream entry: {item!r}")
    raw = item[1]
    fields = {raw[n]: raw[n + 1] for n in range(0, len(raw) - 1, 2)}

    def text(name: bytes) -> str:
        value = fields.get(name)
        return value.decode() if isinstance(value, bytes) else ""

    payload = fields.get(b"p")
    return item[0].decode(), HistoryEntry(
        text(b"i"), text(b"d"), text(b"t"), payload if isinstance(payload, bytes) else b"",
        int(text(b"s") or 0), text(b"r"),
    )


RESUME_GAP_EVENT_TYPE = "gateway.resume_gap"  # "you missed events: re-read your state" (docs/push.md)


async def events_before_live(
    history: EventHistory | None,
    signer: Signer,
    user_id: str,
    device_session_id: str,
    resume_after: str | None,
    server_time_id: str,
    trace_id: str,
) -> tuple[list[bytes], set[str]]:
    """The signed events a stream gets after ``server_time`` and before its live events.

    Called once the stream is registered in the hub. Returns the events (the missed ones, oldest
    first, or one ``gateway.resume_gap``) and the ids of the replayed client events, which the
    subscriber drops from its live queue. Never raises for Redis: a history that cannot be read
    makes a resume a ``resume_gap`` (reason ``history_unavailable``), and a fresh stream just
    has no position for its ``server_time``.
    """
    gap_id = secrets.token_hex(16)
    if history is None:
        reason = "no_history"
    else:
        try:
            point = await history.resume_point(user_id, resume_after, server_time_id, gap_id)
            entries = await history.read(user_id, point) if point.status == "ok" else []
        except RespError as exc:
            log.warning("event history unavailable for a subscription of user %s: %s", user_id, exc)
            point, entries = ResumePoint("unavailable", "", ""), []
        if point.status == "ok":
            replay: list[bytes] = []
            ids: set[str] = set()
            for entry in entries:
                if entry.device_session_id and entry.device_session_id != device_session_id:
                    continue  # addressed to another session of the user
                replay.append(encode_event(
                    signer, entry.event_id, entry.event_type, entry.payload, entry.timestamp_ms, entry.trace_id
                ))
                ids.add(entry.event_id)
            return replay, ids
        reason = "not_in_history" if point.status == "gap" else "history_unavailable"
    if resume_after is None:  # a fresh stream
        return [], set()
    now = now_ms()
    body = orjson.dumps({"resume_after": resume_after, "reason": reason})
    return [encode_event(signer, gap_id, RESUME_GAP_EVENT_TYPE, body, now, trace_id)], set()
