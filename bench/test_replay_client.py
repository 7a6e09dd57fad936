"""Client-side CPU per replay reservation: redis-py pipelines versus ``edgeward.io.resp``.

Both candidates batch the reservations of one event-loop turn the same way (a queue flushed by
``call_soon``) and differ only in the Redis client under the batch:

- ``redis-py``: the replay store as it was before ``edgeward.io.resp``: one non-transactional
  ``redis.asyncio`` pipeline per turn (redis-py uses hiredis for parsing when installed, as here).
- ``resp``: ``edgeward.gateway.replay.RedisReplayStore`` over ``edgeward.io.resp.RespConnection``.

Each measurement is ``time.process_time`` across many rounds of ``batch`` concurrent reservations
(one task each, like gateway requests) against a private redis-server, so Redis's own CPU is not
counted. Candidates are interleaved over several repeats and the median kept, on asyncio's loop
and on uvloop (what ``edgeward serve`` runs). The assertion is a ratio, never an absolute time.

    .venv/bin/pytest bench/test_replay_client.py -q -s -p no:cacheprovider
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions
import uvloop
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from edgeward.gateway.replay import RedisReplayStore, replay_key
from tests.support.redis_server import RedisServer

TTL_MS = 60_000
BATCHES = (1, 32)
RESERVATIONS = 4_000  # per measurement, whatever the batch size
REPEATS = 5
MIN_RATIO = 1.5  # redis-py CPU / resp CPU that still counts as "clearly faster"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


class RedisPyPipelineStore:
    """The replay store's reservation path before ``edgeward.io.resp``, trimmed to what a pass costs."""

    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        )
        self._queue: list[tuple[str, int, asyncio.Future[bool]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    async def reserve(self, device_session_id: str, request_id: str, ttl_ms: int) -> bool:
        key = replay_key(device_session_id, request_id)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((key, ttl_ms, future))
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send(self, batch: list[tuple[str, int, asyncio.Future[bool]]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, ttl_ms, _ in batch:
                pipe.set(key, b"1", nx=True, px=ttl_ms)
            answers = await pipe.execute(raise_on_error=False)
        for (_, _, future), answer in zip(batch, answers, strict=True):
            future.set_result(answer is True)

    async def close(self) -> None:
        await self._redis.aclose()


Reserve = Callable[[str, str, int], Awaitable[bool]]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


async def cpu_per_reservation(reserve: Reserve, batch: int, tag: str) -> float:
    """Microseconds of this process's CPU per reservation, over ``RESERVATIONS`` fresh keys."""
    rounds = RESERVATIONS // batch
    gc.collect()
    start = time.process_time()
    for r in range(rounds):
        results = await asyncio.gather(*(reserve("bench", f"{tag}-{r}-{i}", TTL_MS) for i in range(batch)))
        if not all(results):
            raise AssertionError(f"{tag}: a fresh key was reported as a replay")
    return (time.process_time() - start) / (rounds * batch) * 1e6


async def measure(server: RedisServer) -> dict[tuple[str, int], float]:
    """Median µs per reservation for each (candidate, batch size)."""
    redis_py = RedisPyPipelineStore(server.url)
    resp = RedisReplayStore(server.url)
    candidates: dict[str, Reserve] = {"redis-py": redis_py.reserve, "resp": resp.reserve}
    samples: dict[tuple[str, int], list[float]] = {}
    try:
        for name, reserve in candidates.items():  # connect, warm up, and check replays are seen
            await cpu_per_reservation(reserve, 32, f"warm-{name}")
            assert await reserve("bench", f"warm-{name}-0-0", TTL_MS) is False
        for repeat in range(REPEATS):
            server.flushall()
            for batch in BATCHES:
                for name, reserve in candidates.items():
                    sample = await cpu_per_reservation(reserve, batch, f"{name}-{repeat}-{batch}")
                    samples.setdefault((name, batch), []).append(sample)
    finally:
        await redis_py.close()
        await resp.close()
    return {key: statistics.median(values) for key, values in samples.items()}


def test_resp_costs_less_cpu_per_reservation_than_redis_py(redis_server: RedisServer) -> None:
    results: dict[tuple[str, int], dict[tuple[str, int], float]] = {}
    for loop_name, factory in LOOPS.items():
        with asyncio.Runner(loop_factory=factory) as runner:
            for key, value in runner.run(measure(redis_server)).items():
                results.setdefault((loop_name, key[1]), {})[key] = value

    print(f"\nclient CPU per reservation (µs, median of {REPEATS} x {RESERVATIONS} reservations)")
    print(f"{'loop':<8} {'batch':>5} {'redis-py':>10} {'resp':>10} {'redis-py/resp':>14}")
    ratios = {}
    for (loop_name, batch), row in results.items():
        old, new = row[("redis-py", batch)], row[("resp", batch)]
        ratios[(loop_name, batch)] = old / new
        print(f"{loop_name:<8} {batch:>5} {old:>10.1f} {new:>10.1f} {old / new:>13.2f}x")
    slow = {key: round(ratio, 2) for key, ratio in ratios.items() if ratio < MIN_RATIO}
    assert not slow, f"resp is not clearly cheaper than redis-py (ratio < {MIN_RATIO}): {slow}"
