"""Reading sessions with open streams again, after a feed of revocations may have had a gap.

Both feeds of revocations (the backend push stream, and the Redis session events of the Redis
session source) can lose entries while they are down. Each time one is established again, the
sessions that have open streams are read again from their source, a bounded number at a time,
and the streams of those revoked or gone meanwhile end with ``session_revoked``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from edgeward.native.session_record import SessionRecord
from edgeward.push.hub import PushHub
from edgeward.reasons import Reason, Rejection

__all__ = ("REREAD_CONCURRENCY", "reread_sessions", "stop_task")

log = logging.getLogger(__name__)

REREAD_CONCURRENCY = 8  # session reads in flight; the session source sees at most this many


async def reread_sessions(
    device_session_ids: Iterable[str],
    refresh: Callable[[str], Awaitable[SessionRecord | None]],
    hub: PushHub,
    on_failure: Callable[[], None],
) -> None:
    """``refresh`` each session; end the streams of those revoked or unknown now.

    A session that cannot be read (a ``Rejection``) keeps its streams and calls ``on_failure``.
    """
    pending = iter(device_session_ids)

    async def worker() -> None:
        for dsid in pending:
            try:
                record = await refresh(dsid)
            except Rejection as rejection:
                on_failure()
                log.warning("reading session %s again failed (%s): its streams are kept", dsid, rejection.reason.wire)
                continue
            if record is None or record.revoked:
                hub.end_session(dsid, Reason.SESSION_REVOKED)

    await asyncio.gather(*(worker() for _ in range(REREAD_CONCURRENCY)))


async def stop_task(task: asyncio.Task[None] | None, what: str) -> None:
    """Cancel ``task`` and wait for it; an error it ended with is logged, naming ``what``."""
    if task is not None:
        task.cancel()
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        if isinstance(outcome, Exception):
            log.error("%s failed", what, exc_info=outcome)
