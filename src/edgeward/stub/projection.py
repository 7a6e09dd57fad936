"""The Redis projection of device sessions (protocol section 5), written best-effort.

One writer task sends every snapshot in the order the state changed, batching whatever piled
up into one pipeline, so a revoked snapshot can never be overtaken by the older active one.
An HTTP answer waits for its snapshot's write attempt, so a caller who got a session id can
read its key at once. Redis being down is logged (once per outage) and otherwise ignored: the
stub keeps serving HTTP, and the snapshots of the outage are lost, not replayed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio
from redis.exceptions import RedisError

__all__ = ("EVENTS_STREAM", "EVENTS_STREAM_MAXLEN", "SESSION_KEY_PREFIX", "RedisProjection")

log = logging.getLogger(__name__)

SESSION_KEY_PREFIX = "gateway:session:"
EVENTS_STREAM = "gateway:session_events"
EVENTS_STREAM_MAXLEN = 100_000
_MAX_PENDING_WRITES = 10_000
_MAX_BATCH = 512


@dataclasses.dataclass(slots=True)
class _Write:
    snapshots: Sequence[Mapping[str, Any]]
    forgotten: Sequence[str]
    done: asyncio.Future[None]


class RedisProjection:
    def __init__(self, url: str) -> None:
        self._url = url
        self._redis: redis.asyncio.Redis | None = None
        self._queue: asyncio.Queue[_Write] = asyncio.Queue(_MAX_PENDING_WRITES)
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.failed_writes = 0

    async def start(self) -> None:
        self._redis = redis.asyncio.from_url(self._url, socket_connect_timeout=1.0, socket_timeout=2.0)
        self._task = asyncio.create_task(self._run(self._redis), name="stub-redis-projection")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while not self._queue.empty():
            self._finish(self._queue.get_nowait())
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def write(self, snapshots: Sequence[Mapping[str, Any]], forgotten: Sequence[str] = ()) -> None:
        """Project ``snapshots`` and delete the keys of ``forgotten`` sessions; never raises."""
        if self._task is None or not (snapshots or forgotten):
            return
        write = _Write(snapshots, forgotten, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(write)
        except asyncio.QueueFull:
            self.failed_writes += 1
            log.warning("redis projection is %d writes behind: dropping a snapshot", _MAX_PENDING_WRITES)
            return
        await asyncio.shield(write.done)

    async def _run(self, client: redis.asyncio.Redis) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._send(client, batch)
            except (RedisError, OSError) as exc:
                self.failed_writes += len(batch)
                if not self._failing:
                    log.warning("redis projection write failed, carrying on without it: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.warning("redis projection writes work again")
                self._failing = False
            finally:
                for write in batch:
                    self._finish(write)

    @staticmethod
    async def _send(client: redis.asyncio.Redis, batch: list[_Write]) -> None:
        pipe = client.pipeline(transaction=False)
        for write in batch:
            for snapshot in write.snapshots:
                dsid = snapshot["device_session_id"]
                pipe.set(SESSION_KEY_PREFIX + dsid, orjson.dumps(snapshot))
                fields = {name: str(value) for name, value in snapshot.items()}
                pipe.xadd(EVENTS_STREAM, fields, maxlen=EVENTS_STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            for dsid in write.forgotten:
                pipe.delete(SESSION_KEY_PREFIX + dsid)
        await pipe.execute()

    @staticmethod
    def _finish(write: _Write) -> None:
        if not write.done.done():
            write.done.set_result(None)
