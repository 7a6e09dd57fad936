"""Command budgets, request-flow step 7: per client IP, device session, user, and
(user, message type).

Each budget is a GCRA limit (``edgeward.protection.limiter``): ``rate`` requests per second sustained,
``burst`` at once. A request is charged to all of them only when all admit it, so a refused
request costs nothing; the refusal is ``rate_limited`` naming the tightest budget, with the
longest wait as ``retry_after_ms`` (sent as ``google.rpc.RetryInfo``). The (user, message type)
budget can be set per message type in the routes file (docs/routes.md), ``off`` included.

``charge`` answers at once with the in-process limiter (it returns None or raises), and returns
an awaitable with the Redis limiter: the hot path costs no coroutine unless Redis is in use.
When the limiter cannot decide and its failure mode is "closed", the request is refused with
``limiter_unavailable``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from edgeward.clock import monotonic_ms
from edgeward.protection.client_address import ip_limit_key
from edgeward.protection.limiter import (
    Hit,
    Limit,
    Limiter,
    LimiterUnavailable,
    MemoryLimiter,
    Rate,
    Verdict,
    parse_limit,
)
from edgeward.reasons import Reason, Rejection

__all__ = ("CommandBudgets", "Limit", "parse_limit", "refusal")

_SCOPE_PREFIX = "budget."  # limiter scopes are budget.ip, budget.session, ...: ErrorInfo says "ip", ...


class CommandBudgets:
    def __init__(
        self,
        *,
        ip: Limit | None,
        session: Limit | None,
        user: Limit | None,
        message_type: Limit | None,
        overrides: Mapping[str, Limit | None] | None = None,
        limiter: Limiter | None = None,
        ipv6_prefix: int = 64,
        clock: Callable[[], float] = monotonic_ms,
    ) -> None:
        """``overrides`` maps a message type to its own (user, message type) limit (None: off)."""
        self._limiter: Limiter = limiter if limiter is not None else MemoryLimiter(clock)
        self._ip = Rate(ip) if ip else None
        self._session = Rate(session) if session else None
        self._user = Rate(user) if user else None
        self._message_type = Rate(message_type) if message_type else None
        self._overrides = {mt: Rate(limit) if limit else None for mt, limit in (overrides or {}).items()}
        self._ipv6_prefix = ipv6_prefix
        self._off = not (ip or session or user or message_type or any(self._overrides.values()))

    @property
    def limiter(self) -> Limiter:
        return self._limiter

    def charge(
        self, client_ip: str, device_session_id: str, user_id: str, message_type: str
    ) -> Awaitable[None] | None:
        """Admit the request against every budget, or raise rate_limited naming the tightest one.

        None when decided at once; otherwise an awaitable to await at once, which does the same.
        """
        hits = self.hits(client_ip, device_session_id, user_id, message_type)
        if not hits:
            return None
        try:
            verdict = self._limiter.acquire(hits)
        except LimiterUnavailable:
            raise Rejection(Reason.LIMITER_UNAVAILABLE, "command budgets cannot be checked") from None
        if verdict is None:
            return None
        if isinstance(verdict, tuple):
            raise refusal(hits, verdict)
        return _settle(hits, verdict)

    def hits(self, client_ip: str, device_session_id: str, user_id: str, message_type: str) -> list[Hit]:
        """What ``charge`` charges the request to, in the limiter's terms; empty when no budget applies.

        For a caller that has the limiter decide in another way (the replay store's one round
        trip, docs/replay.md); ``refusal`` turns that decision's verdict into the same answer.
        """
        if self._off:
            return []
        hits: list[Hit] = []
        if self._ip is not None:
            if ":" in client_ip:
                client_ip = ip_limit_key(client_ip, self._ipv6_prefix)
            hits.append(("budget.ip", client_ip, self._ip))
        if self._session is not None:
            hits.append(("budget.session", device_session_id, self._session))
        if self._user is not None:
            hits.append(("budget.user", user_id, self._user))
        rate = self._overrides.get(message_type, self._message_type) if self._overrides else self._message_type
        if rate is not None:
            hits.append(("budget.message_type", f"{user_id}\x00{message_type}", rate))
        return hits


def refusal(hits: Sequence[Hit], verdict: tuple[int, float]) -> Rejection:
    """The rate_limited answer to a refusing ``verdict`` of ``hits`` (from ``CommandBudgets.hits``)."""
    index, wait_ms = verdict
    name = hits[index][0].removeprefix(_SCOPE_PREFIX)
    return Rejection(
        Reason.RATE_LIMITED,
        f"{name} budget exhausted",
        metadata={"budget": name},
        retry_after_ms=max(1, int(wait_ms + 0.999)),
    )


async def _settle(hits: Sequence[Hit], pending: Awaitable[Verdict]) -> None:
    try:
        verdict = await pending
    except LimiterUnavailable:
        raise Rejection(Reason.LIMITER_UNAVAILABLE, "command budgets cannot be checked") from None
    if verdict is not None:
        raise refusal(hits, verdict)
