"""Steps 6 and 7 in one Redis round trip against two (docs/replay.md, "One round trip with the budgets").

``python -m bench.redis_round_trip`` starts a private redis-server and drives ``RequestVerifier.verify``
(steps 2-7: cached session, payload hash, Ed25519, freshness, replay reservation, the four command
budgets on the Redis limiter) in this process, ``--concurrency`` requests at a time, in alternating
rounds of the two wirings over the same server:

- ``two-step``: the replay store's ``SET NX PX``, awaited, then the limiter's pipeline of one
  ``EVALSHA`` per budget on its own connection (what the gateway did before);
- ``one-trip``: the store's one ``GUARDED_SCRIPT`` call (``RedisReplayStore.share_round_trip``).

Requests are signed and decoded before a round starts, so a round times verification only. Per
round: this process's CPU per request (``time.process_time``: redis-server's own CPU is not in it)
and the median and p99 of each ``verify``'s latency. Printed: each round, then per metric the
median, min and max over rounds of one-trip / two-step of adjacent rounds, and the µs saved.
The pre-auth guard is off here (its block check at step 2 is a round trip this change leaves alone).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import uvloop
from prometheus_client import CollectorRegistry, Histogram

from edgeward.client import build_signed_request
from edgeward.gateway.pipeline import RequestVerifier
from edgeward.gateway.replay import RedisReplayStore
from edgeward.gateway.session_cache import SessionCache
from edgeward.io.redis import connect
from edgeward.native import loader
from edgeward.native.crypto import Signer
from edgeward.native.envelope import SignedRequest
from edgeward.native.session_record import SessionRecord
from edgeward.protection.budgets import CommandBudgets
from edgeward.protection.limiter import Limit
from edgeward.protection.redis_limiter import RedisLimiter
from tests.support.redis_server import RedisServer

FRESHNESS_MS = 300_000
SESSIONS = 1000
ROOMY = Limit(1_000_000, 1_000_000)  # every request admitted, the arithmetic and writes still done
PAYLOAD = b'{"display_name":"Ada Lovelace","locale":"en-GB"}'


class Wiring:
    """A verifier over its own store and limiter connections to ``url``; ``one_trip`` shares them."""

    def __init__(self, url: str, sessions: SessionCache, one_trip: bool) -> None:
        self.store = RedisReplayStore(url, socket_timeout_ms=30_000)
        self.limiter_redis = connect(url, socket_timeout_ms=30_000)
        self.limiter = RedisLimiter(self.limiter_redis, failure_mode="closed")
        budgets = CommandBudgets(ip=ROOMY, session=ROOMY, user=ROOMY, message_type=ROOMY, limiter=self.limiter)
        if one_trip:
            assert self.store.share_round_trip(budgets)
        timer = Histogram("replay_seconds", "", registry=CollectorRegistry())
        self.verifier = RequestVerifier(
            sessions, self.store, budgets, max_payload_bytes=65_536, freshness_window_ms=FRESHNESS_MS,
            replay_timer=timer,
        )

    async def close(self) -> None:
        await self.store.close()
        await self.limiter.close()
        await self.limiter_redis.close()


def requests(signer: Signer, decode: Callable[[bytes, str], SignedRequest], count: int) -> list[SignedRequest]:
    out = []
    for i in range(count):
        msg = build_signed_request(signer, f"dsn_{i % SESSIONS:04d}", "user.profile.update", PAYLOAD)
        out.append(decode(msg.SerializeToString(), "execute"))
    return out


async def run_round(wiring: Wiring, reqs: list[SignedRequest], concurrency: int) -> tuple[float, float, float]:
    """(CPU µs per request, median latency µs, p99 latency µs)."""
    latencies: list[float] = []
    verify = wiring.verifier.verify

    async def one(req: SignedRequest, ip: str) -> None:
        started = time.perf_counter()
        await verify(req, ip)
        latencies.append(time.perf_counter() - started)

    cpu = time.process_time()
    for start in range(0, len(reqs), concurrency):
        batch = reqs[start : start + concurrency]
        await asyncio.gather(*(one(req, f"10.0.{i % 8}.{i}") for i, req in enumerate(batch)))
    cpu = time.process_time() - cpu
    latencies.sort()
    return (
        cpu / len(reqs) * 1e6,
        latencies[len(latencies) // 2] * 1e6,
        latencies[int(len(latencies) * 0.99)] * 1e6,
    )


async def main(args: argparse.Namespace) -> None:
    server = RedisServer()
    server.start()
    signer = Signer.generate()

    async def source(dsid: str) -> SessionRecord | None:
        return SessionRecord(dsid, f"usr_{dsid[-3:]}", signer.public_key, False)

    sessions = SessionCache(source, max_entries=100_000, ttl_ms=3_600_000, negative_ttl_ms=1000)
    for i in range(SESSIONS):
        await sessions.lookup(f"dsn_{i:04d}")
    wirings = {"two-step": Wiring(server.url, sessions, False), "one-trip": Wiring(server.url, sessions, True)}
    try:
        decode = wirings["two-step"].verifier.decode
        for wiring in wirings.values():  # warm-up: connections, script caches, code paths
            await run_round(wiring, requests(signer, decode, 2 * args.concurrency * 10), args.concurrency)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in wirings}
        for round_no in range(args.rounds):
            order = list(wirings) if round_no % 2 == 0 else list(reversed(wirings))
            for name in order:
                reqs = requests(signer, decode, args.requests)
                results[name].append(await run_round(wirings[name], reqs, args.concurrency))
            two, one = results["two-step"][-1], results["one-trip"][-1]
            print(
                f"round {round_no:2d}  cpu/req µs two-step {two[0]:6.1f} one-trip {one[0]:6.1f}   "
                f"median latency µs {two[1]:7.1f} {one[1]:7.1f}   p99 {two[2]:7.1f} {one[2]:7.1f}",
                flush=True,
            )
        print(
            f"\nconcurrency {args.concurrency}, {args.requests} requests per round, {args.rounds} rounds each; "
            f"native twins {loader.ACTIVE}"
        )
        for index, metric in enumerate(("CPU per request", "median latency", "p99 latency")):
            pairs = list(zip(results["one-trip"], results["two-step"], strict=True))
            ratios = sorted(one[index] / two[index] for one, two in pairs)
            saved = sorted(two[index] - one[index] for one, two in pairs)
            print(
                f"{metric:16s} one-trip/two-step median {statistics.median(ratios):.3f} "
                f"(min {ratios[0]:.3f}, max {ratios[-1]:.3f}); saved median {statistics.median(saved):.1f} µs "
                f"(min {saved[0]:.1f}, max {saved[-1]:.1f}); two-step median "
                f"{statistics.median(two[index] for _, two in pairs):.1f} µs"
            )
    finally:
        for wiring in wirings.values():
            await wiring.close()
        await sessions.close()
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=3200, help="per round")
    parser.add_argument("--concurrency", type=int, default=32)
    uvloop.run(main(parser.parse_args()))
