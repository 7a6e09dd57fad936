"""The Redis limiter back-end: limits shared by every gateway instance (docs/edge-protection.md).

One Lua script (``SCRIPT``) does all the arithmetic atomically in Redis on one key and its block
key: GCRA charge, refund, failure with block, and block check. It runs with EVALSHA; a
``NOSCRIPT`` answer (a restarted or flushed Redis) is answered by sending those calls again as
EVAL, which also caches the script again. Calls go through ``edgeward.io.resp.RespConnection``,
which writes every call of one event-loop turn in one write, as the replay store's do.

Keys are ``edgeward:limit:<scope>:{<key>}`` (and ``...:block``): the braces are a Redis Cluster
hash tag, so a key and its block live in one slot and one script may touch both. A request's
budgets live in different slots, so "all or nothing" is one script call per budget in one
pipeline, followed by a refund of those that admitted a request another refused.

A second script (``GUARDED_SCRIPT``) charges one request's budgets behind a guard key, all in one
call: the replay store sends it on its own connection, with the reservation as the guard, when
it shares this limiter's single-node server (``shares_server``), so steps 6 and 7 of a request
cost one round trip (docs/replay.md). Its keys may be in different slots: never on a cluster.

Time is Redis's own ``TIME`` by default, one clock for all instances whatever their skew; tests
inject a clock, sent as an argument.

When Redis cannot answer (no connection, a timeout, an error reply), the configured failure mode
decides: ``open`` admits, ``closed`` raises ``LimiterUnavailable``, ``local`` asks this process's
``MemoryLimiter`` (limits become per instance). After a failure Redis is left alone for
``retry_ms`` (the mode decides meanwhile, at no cost), then the next call tries it again, so a
dead or silent Redis costs one timeout per ``retry_ms``, not one per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import hiredis

from edgeward.io.redis import RedisClient
from edgeward.io.resp import Arg, Reply, RespConnection, RespError
from edgeward.protection.limiter import FAILURE_MODES, Hit, Limit, LimiterUnavailable, MemoryLimiter, Rate, Verdict

__all__ = ("GUARDED_SCRIPT", "KEY_PREFIX", "SCRIPT", "RedisLimiter", "is_noscript", "limit_key", "load_script")

log = logging.getLogger(__name__)

KEY_PREFIX = "edgeward:limit:"

# Both scripts start here: ARGV[1] is the caller's clock in microseconds, or "" for Redis's own.
_NOW = """local now = tonumber(ARGV[1])
if not now then
  if redis.replicate_commands then redis.replicate_commands() end  -- TIME then writes, on Redis < 5
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

SCRIPT = """
-- KEYS[1]: the GCRA key, holding its theoretical arrival time (TAT), integer microseconds
-- KEYS[2]: optional block key, holding the end of the key's block, integer microseconds
-- ARGV: now (us, or "" for the Redis clock), interval (us), tolerance (us),
--       cost (1 charge, -1 refund, 0 none), block (us; > 0: a failure, charged now with cost 1
--       or already with cost 0, which blocks when it spends the budget or finds it spent)
-- returns {1, 0} when admitted, {0, wait_us} when refused or blocked
""" + _NOW + """local interval, tolerance = tonumber(ARGV[2]), tonumber(ARGV[3])
local cost, block = tonumber(ARGV[4]), tonumber(ARGV[5])
if KEYS[2] then
  local blocked_until = tonumber(redis.call('GET', KEYS[2]))
  if blocked_until and blocked_until > now then return {0, blocked_until - now} end
end
if cost == 0 and block == 0 then return {1, 0} end  -- a block check only
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + cost * interval
if cost > 0 and new_tat - tolerance > now then
  if block > 0 and KEYS[2] then
    redis.call('SET', KEYS[2], string.format('%d', now + block), 'PX', math.ceil(block / 1000))
    return {0, block}
  end
  return {0, new_tat - tolerance - now}
end
if cost == 0 then
  -- the charge was taken before: nothing to store
elseif new_tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
if block > 0 and KEYS[2] and new_tat + interval - tolerance > now then  -- no room left: spent
  redis.call('SET', KEYS[2], string.format('%d', now + block), 'PX', math.ceil(block / 1000))
  return {0, block}
end
return {1, 0}
"""
_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
_CHECK_ONLY = Rate(Limit(1.0, 1))  # a block check (cost 0) never reads its rate

# One request's budgets behind a guard key (the replay reservation), in one call: what lets the
# replay store reserve and charge the budgets in one round trip when both use one Redis server
# (docs/replay.md, "One round trip with the budgets"). The GCRA arithmetic is SCRIPT's with cost 1
# and no block, on the same keys, so both scripts share every budget's state; "all or nothing"
# needs no refunds here, since every key is read before any is written.
GUARDED_SCRIPT = """
-- KEYS[1]: the guard: SET <value> NX PX; when it exists already, nothing is charged
-- KEYS[2..]: the budgets' GCRA keys, holding their TAT (integer microseconds)
-- ARGV: now (us, or "" for the Redis clock), the guard's TTL (ms), then each budget's
--       interval and tolerance (us), in KEYS order, then the guard's value
-- returns {0, <the guard's value>} when the guard existed; {1, 0, 0} when admitted and charged to every budget;
--   {1, i, wait_us} when budget i (1-based; the longest wait, the last of equals) refused, and
--   none was charged
""" + _NOW + """local guard = redis.call('SET', KEYS[1], ARGV[#ARGV], 'NX', 'GET', 'PX', ARGV[2])
if guard then return {0, guard} end
local worst, worst_wait, tats = 0, 0, {}
for i = 1, #KEYS - 1 do
  local interval, tolerance = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  local tat = tonumber(redis.call('GET', KEYS[i + 1])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local wait = new_tat - tolerance - now
  if wait > 0 and wait >= worst_wait then worst, worst_wait = i, wait end
  tats[i] = new_tat
end
if worst > 0 then return {1, worst, worst_wait} end
for i = 1, #KEYS - 1 do
  redis.call('SET', KEYS[i + 1], string.format('%d', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000))
end
return {1, 0, 0}
"""
_GUARDED_SHA = hashlib.sha1(GUARDED_SCRIPT.encode()).hexdigest()


def limit_key(scope: str, key: str) -> str:
    """``edgeward:limit:<scope>:{<key>}``: the braces make the key its own Cluster hash tag."""
    return f"{KEY_PREFIX}{scope}:{{{key}}}"


class _BadReply(Exception):
    """Redis answered something other than the script's {admitted, wait}."""


class RedisLimiter:
    """Limits in Redis, shared by every gateway using it; see the module docstring."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        failure_mode: str = "open",
        retry_ms: int = 1000,
        fallback: MemoryLimiter | None = None,
        clock: Callable[[], float] | None = None,
        name: str = "limiter",
    ) -> None:
        if failure_mode not in FAILURE_MODES:
            raise ValueError(f"failure_mode must be one of {', '.join(FAILURE_MODES)}")
        self._redis = redis
        self._mode = failure_mode
        self._retry_s = retry_ms / 1000
        self._fallback = fallback or MemoryLimiter()
        self._clock = clock  # ms; None: Redis TIME
        self._name = name
        self._retry_at = 0.0  # loop time before which Redis is not asked
        self._healthy = True
        self._pending: set[asyncio.Future[list[Reply]]] = set()  # refunds in flight
        self.redis_errors = 0  # calls Redis did not answer properly
        self.fallbacks = 0  # decisions taken by the failure mode

    # -- the Limiter interface -------------------------------------------------------------

    # Each call answers at once while Redis is being left alone, else with a coroutine that the
    # caller awaits at once (the Limiter contract).

    def acquire(self, hits: Sequence[Hit]) -> Verdict | Coroutine[Any, Any, Verdict]:
        if not self._redis_usable():
            return self._fail_acquire(hits)
        return self._acquire(hits)

    def penalize(
        self, scope: str, key: str, rate: Rate, block_ms: int, *, charged: bool = False
    ) -> float | Coroutine[Any, Any, float]:
        if not self._redis_usable():
            return self._fail_wait(lambda: self._fallback.penalize(scope, key, rate, block_ms, charged=charged))
        return self._wait(scope, key, rate, 0 if charged else 1, block_ms)

    def refund(self, scope: str, key: str, rate: Rate) -> None:
        if not self._redis_usable():
            # "local": the charge was most likely this process's too. If Redis failed in between,
            # its unit there expires by itself, and this refund finds no debt here or gives back
            # one this process holds: a key is never raised above its burst either way.
            if self._mode == "local":
                self._fallback.refund(scope, key, rate)
            return
        self._send_refunds([self._args(scope, key, rate, -1, 0, False)])

    def blocked(self, scope: str, key: str) -> float | Coroutine[Any, Any, float]:
        if not self._redis_usable():
            return self._fail_wait(lambda: self._fallback.blocked(scope, key))
        return self._wait(scope, key, _CHECK_ONLY, 0, 0)

    async def close(self) -> None:
        """Let refunds in flight finish (bounded by the socket timeout); the connection is the owner's."""
        if self._pending:
            await asyncio.wait(self._pending)
        await self._fallback.close()

    # -- budgets behind a guard, on another connection to the same server -------------------

    def shares_server(self, redis: RedisClient) -> bool:
        """Whether ``redis`` reaches this limiter's keys: the same single node, database and user.

        A Redis Cluster never does here: a guard and budgets in different slots cannot be one call.
        """
        mine = self._redis
        if not isinstance(mine, RespConnection) or not isinstance(redis, RespConnection):
            return False
        return mine.endpoint == redis.endpoint

    def guarded(
        self, guard_key: str, guard_ttl_ms: int, hits: Sequence[Hit], guard_value: bytes = b"1"
    ) -> tuple[Arg, ...] | None:
        """The ``EVALSHA`` of ``GUARDED_SCRIPT`` charging ``hits`` behind ``guard_key``, for the caller
        to send on its own connection to this server (``shares_server``) and decode with
        ``guarded_answer``; ``load_script`` turns it into the ``EVAL`` a ``NOSCRIPT`` answer asks for.

        None while Redis is being left alone after a failure: the failure mode decides then, so
        the caller charges the budgets apart, through ``acquire``.
        """
        if not self._redis_usable():
            return None
        now = "" if self._clock is None else str(round(self._clock() * 1000))
        command: list[Arg] = ["EVALSHA", _GUARDED_SHA, 1 + len(hits), guard_key]
        command += [limit_key(scope, key) for scope, key, _ in hits]
        command += (now, guard_ttl_ms)
        for _, _, rate in hits:
            command += (rate.interval_us, rate.tolerance_us)
        command.append(guard_value)
        return tuple(command)

    def guarded_answer(self, reply: Reply) -> tuple[bytes | None, Verdict]:
        """(the guard's earlier value, the budgets' verdict) from ``GUARDED_SCRIPT``'s reply.

        None first: the guard was set now, and the verdict says whether the budgets admitted it. A
        guard that existed charged nothing: (its value, b"" when the script did not return one, None).
        Raises ``ValueError`` on any other reply (an error reply included); what that means is the
        caller's policy, not this limiter's.
        """
        if isinstance(reply, list) and 1 <= len(reply) <= 2 and reply[0] == 0:
            self._answered()
            previous = reply[1] if len(reply) == 2 else b""
            return (previous if isinstance(previous, bytes) else b""), None
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == 1:
            index, wait_us = reply[1], reply[2]
            if isinstance(index, int) and isinstance(wait_us, int):
                self._answered()
                return None, None if index == 0 else (index - 1, max(wait_us, 1) / 1000)
        raise ValueError(f"unexpected reply from the guarded limiter script: {reply!r}")

    # -- Redis calls -----------------------------------------------------------------------

    def _args(self, scope: str, key: str, rate: Rate, cost: int, block_ms: int, with_block: bool) -> list[Arg]:
        base = limit_key(scope, key)
        keys: list[Arg] = [base, base + ":block"] if with_block else [base]
        now = "" if self._clock is None else str(round(self._clock() * 1000))
        return [len(keys), *keys, now, rate.interval_us, rate.tolerance_us, cost, block_ms * 1000]

    async def _run(self, calls: list[list[Arg]]) -> list[tuple[int, int]]:
        """Each call's {admitted, wait_us}; EVALSHA, then EVAL for the calls Redis had no script for."""
        replies = await self._redis.pipeline([("EVALSHA", _SHA, *args) for args in calls])
        missing = [i for i, reply in enumerate(replies) if is_noscript(reply)]
        if missing:
            again = await self._redis.pipeline([("EVAL", SCRIPT, *calls[i]) for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return [_decode(reply) for reply in replies]

    async def _acquire(self, hits: Sequence[Hit]) -> Verdict:
        calls = [self._args(scope, key, rate, 1, 0, False) for scope, key, rate in hits]
        try:
            answers = await self._run(calls)
        except (RespError, _BadReply) as exc:
            self._failed(exc)
            return self._fail_acquire(hits)
        self._answered()
        worst, worst_wait = -1, 0
        for index, (admitted, wait_us) in enumerate(answers):
            if not admitted and wait_us >= worst_wait:
                worst, worst_wait = index, wait_us
        if worst < 0:
            return None
        # All or nothing: give back what the others admitted.
        self._send_refunds(
            [
                self._args(scope, key, rate, -1, 0, False)
                for (scope, key, rate), (admitted, _) in zip(hits, answers, strict=True)
                if admitted
            ]
        )
        return worst, max(worst_wait, 1) / 1000

    async def _wait(self, scope: str, key: str, rate: Rate, cost: int, block_ms: int) -> float:
        try:
            ((admitted, wait_us),) = await self._run([self._args(scope, key, rate, cost, block_ms, True)])
        except (RespError, _BadReply) as exc:
            self._failed(exc)
            if cost or block_ms:  # a failure (cost 0: charged before), else a block check
                charged = not cost
                return self._fail_wait(lambda: self._fallback.penalize(scope, key, rate, block_ms, charged=charged))
            return self._fail_wait(lambda: self._fallback.blocked(scope, key))
        self._answered()
        return 0.0 if admitted else max(wait_us, 1) / 1000

    def _send_refunds(self, calls: list[list[Arg]]) -> None:
        """Send refunds in one pipeline that nobody waits for; ``close()`` lets them finish."""
        if not calls:
            return
        future = self._redis.pipeline([("EVALSHA", _SHA, *args) for args in calls])
        self._pending.add(future)
        future.add_done_callback(self._refunded)

    def _refunded(self, future: asyncio.Future[list[Reply]]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self.redis_errors += 1  # a lost refund only ever refuses a little early; not worth a retry

    # -- failure mode ----------------------------------------------------------------------

    def _redis_usable(self) -> bool:
        return self._healthy or asyncio.get_running_loop().time() >= self._retry_at

    def _fail_acquire(self, hits: Sequence[Hit]) -> Verdict:
        self.fallbacks += 1
        if self._mode == "open":
            return None
        if self._mode == "closed":
            raise LimiterUnavailable(f"{self._name}: Redis unavailable")
        return self._fallback.acquire(hits)

    def _fail_wait(self, local: Callable[[], float]) -> float:
        self.fallbacks += 1
        if self._mode == "open":
            return 0.0
        if self._mode == "closed":
            raise LimiterUnavailable(f"{self._name}: Redis unavailable")
        return local()

    def _failed(self, exc: BaseException) -> None:
        self.redis_errors += 1
        self._retry_at = asyncio.get_running_loop().time() + self._retry_s
        if self._healthy:  # transitions only: a dead Redis fails every call
            self._healthy = False
            log.warning("%s: Redis unavailable, failing %s: %r", self._name, self._mode, exc)

    def _answered(self) -> None:
        if not self._healthy:
            self._healthy = True
            log.info("%s: Redis answers again", self._name)


def is_noscript(reply: Reply) -> bool:
    """Redis has no script of that SHA (restarted or flushed): send it again as ``load_script``."""
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")


def load_script(command: tuple[Arg, ...]) -> tuple[Arg, ...]:
    """The ``EVAL`` of a ``guarded`` command's ``EVALSHA``, which caches the script again."""
    return ("EVAL", GUARDED_SCRIPT, *command[2:])


def _decode(reply: Reply) -> tuple[int, int]:
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], int) and isinstance(reply[1], int):
        return reply[0], reply[1]
    raise _BadReply(f"unexpected reply from the limiter script: {reply!r}")
