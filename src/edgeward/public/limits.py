"""Rate limits of the public auth routes: per client IP, per e-mail address, per challenge.

Two checkpoints, so that each refusal costs as little as possible:

1. ``admit_ip`` on arrival, before the body is read: every request counts against its client
   IP's budget on that route (``EDGEWARD_PUBLIC_LIMIT_IP``), well-formed or not;
2. ``admit`` after the body passed its checks: ``send-email-code`` against the e-mail address
   (``EDGEWARD_PUBLIC_LIMIT_EMAIL``; no mailbox flooded with codes), ``confirm-email-code``
   against the challenge (``EDGEWARD_PUBLIC_LIMIT_CHALLENGE``: a handful of guesses per code,
   so a 6-digit code cannot be brute-forced).

A refusal is 429 ``rate_limited`` with ``Retry-After`` (whole seconds, rounded up). When the
limiter cannot decide and its failure mode is "closed", the answer is 503 ``limiter_unavailable``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable

from edgeward.protection.client_address import ip_limit_key
from edgeward.protection.limiter import Hit, Limit, Limiter, LimiterUnavailable, MemoryLimiter, Rate, Verdict
from edgeward.public.checks import PublicError, PublicRequest

__all__ = ("PublicLimits",)

_MESSAGES = {
    "ip": "too many requests from this address",
    "email": "too many codes requested for this e-mail address",
    "challenge": "too many attempts for this challenge",
}


class PublicLimits:
    """The public routes' limits over one limiter back-end; a limit given as None is off."""

    def __init__(
        self,
        limiter: Limiter | None = None,
        *,
        ip: Limit | None = None,
        email: Limit | None = None,
        challenge: Limit | None = None,
        ipv6_prefix: int = 64,
    ) -> None:
        self._limiter: Limiter = limiter or MemoryLimiter()
        self._ip = Rate(ip) if ip else None
        self._email = Rate(email) if email else None
        self._challenge = Rate(challenge) if challenge else None
        self._ipv6_prefix = ipv6_prefix
        self.refused: dict[str, int] = {"ip": 0, "email": 0, "challenge": 0}  # 429s by limit, for metrics

    async def admit_ip(self, route: str, client_ip: str) -> None:
        """Charge one request on ``route`` to the client IP; ``PublicError`` 429 when over its limit."""
        if self._ip is not None:
            await self._charge("ip", (f"public_ip.{route}", ip_limit_key(client_ip, self._ipv6_prefix), self._ip))

    async def admit(self, request: PublicRequest) -> None:
        """Charge a checked request to its e-mail address or its challenge."""
        if request.email is not None and self._email is not None:
            await self._charge("email", ("public_email", request.email, self._email))
        if request.challenge_id is not None and self._challenge is not None:
            await self._charge("challenge", ("public_challenge", request.challenge_id, self._challenge))

    async def _charge(self, limit: str, hit: Hit) -> None:
        try:
            verdict: Verdict | Awaitable[Verdict] = self._limiter.acquire((hit,))
            if verdict is not None and not isinstance(verdict, tuple):
                verdict = await verdict
        except LimiterUnavailable:
            raise PublicError(503, "limiter_unavailable", "rate limits cannot be checked; try again later") from None
        if verdict is not None:
            self.refused[limit] += 1
            raise PublicError(
                429, "rate_limited", _MESSAGES[limit], retry_after_s=max(1, math.ceil(verdict[1] / 1000))
            )
