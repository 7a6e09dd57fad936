"""The success path's cost of keeping answers for idempotent retries (docs/replay.md, "Idempotent retry").

In process, per reservation, against a real redis-server it starts (and the embedded store): the
gateway CPU of ``reserve`` alone (before), of ``claim`` and ``finish`` with a 300-byte response (the
reservation that also reads, then the answer's write), and of those plus the shielded task that
keeps step 8 running after its client left, shielded by ``asyncio.shield`` or by the lighter
``edgeward.runtime.shield_task`` the pipeline uses. Each mode runs in turn in every round; the table gives
medians over the rounds and the median of the per-round ratios to ``reserve`` (min-max).

    python -m bench.replay_keep [--rounds 7] [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import Callable

from edgeward.gateway.replay import MemoryReplayStore, RedisReplayStore, ReplayStore, fingerprint
from edgeward.runtime import shield_task
from tests.support.redis_server import RedisServer

RESPONSE = b"r" * 300  # about a signed user.echo answer
PRINT = fingerprint(b"h" * 32, b"s" * 64)
TTL_MS = 600_000
MODES = ("reserve", "claim+finish", "claim+finish+shield", "claim+finish+shield_task")


async def _one(store: ReplayStore, mode: str, rid: str) -> None:
    if mode == "reserve":
        assert await store.reserve("bench", rid, TTL_MS)
        return
    assert await store.claim("bench", rid, TTL_MS, PRINT) is None

    async def step8() -> bytes:
        store.finish("bench", rid, PRINT, RESPONSE)
        return RESPONSE

    if mode == "claim+finish":
        await step8()
    elif mode == "claim+finish+shield":
        await asyncio.shield(asyncio.ensure_future(step8()))
    else:  # what the pipeline does since
        await shield_task(asyncio.get_running_loop().create_task(step8()))


async def _round(store: ReplayStore, mode: str, requests: int, concurrency: int) -> float:
    """CPU µs per reservation."""
    prefix = secrets.token_hex(8)
    started = time.process_time()
    for first in range(0, requests, concurrency):
        await asyncio.gather(*(_one(store, mode, f"{prefix}-{n:09d}") for n in range(first, first + concurrency)))
    if isinstance(store, RedisReplayStore):
        await store.ping()  # after every answer's write
    return (time.process_time() - started) / requests * 1e6


async def main(rounds: int, requests: int) -> None:
    server = RedisServer()
    server.start()
    try:
        makers: list[tuple[str, Callable[[], ReplayStore]]] = [
            ("memory", lambda: MemoryReplayStore(100_000_000, max_kept_bytes=1 << 36)),
            ("redis", lambda: RedisReplayStore(server.url, socket_timeout_ms=30_000)),
        ]
        for name, make in makers:
            for concurrency in (1, 32):
                store = make()
                await _round(store, "reserve", 1_000, concurrency)  # warm-up
                cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
                for _ in range(rounds):
                    for mode in MODES:
                        cpu[mode].append(await _round(store, mode, requests, concurrency))
                await store.close()
                for mode in MODES:
                    ratios = sorted(c / b for c, b in zip(cpu[mode], cpu["reserve"], strict=True))
                    print(
                        f"{name:6} {concurrency:2} at a time  {mode:26} {statistics.median(cpu[mode]):7.2f} µs CPU"
                        f"  x{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
                    )
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests))
