"""Per-stage CPU of the ExecuteCommand path, each stage measured alone with the real parts.

The end-to-end figure says what a request costs; this says where it goes. Each stage runs the
gateway's own code (whatever twins are active) many times in this process, against the same
stub backend and redis-server as the end-to-end run, with the same number of requests in
flight where the stage does I/O, and reports CPU microseconds per operation (process time, so
the backend's and Redis's own work, in other processes, is not counted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from edgeward.clock import now_ms
from edgeward.gateway.backend import BackendClient, CommandContext
from edgeward.gateway.metrics import GatewayMetrics
from edgeward.gateway.replay import RedisReplayStore, fingerprint
from edgeward.gateway.routes import DEFAULT_ROUTES
from edgeward.gateway.session_cache import SessionCache
from edgeward.native.crypto import Signer, digest_equals, verify
from edgeward.native.envelope import decode_request, encode_response
from edgeward.native.session_record import SessionRecord
from edgeward.protection.budgets import CommandBudgets, Limit
from edgeward.runtime import shield_task

__all__ = ("measure_stages",)

_BIG = Limit(1e9, 1e9)


def _sync_cost(fn: Callable[[], object], number: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - start) / number * 1e6


async def _async_cost(op: Callable[[int], Awaitable[object]], number: int, concurrency: int) -> float:
    await op(-1)
    per_task = number // concurrency

    async def task(t: int) -> None:
        for i in range(per_task):
            await op(t * per_task + i)

    start = time.process_time()
    await asyncio.gather(*(task(t) for t in range(concurrency)))
    return (time.process_time() - start) / (per_task * concurrency) * 1e6


async def measure_stages(
    request: bytes, client_key: bytes, backend_url: str, redis_url: str, concurrency: int, number: int = 5_000
) -> dict[str, float]:
    """CPU µs per request of each stage, in request order."""
    req = decode_request(request, 65_536)
    record = SessionRecord(req.device_session_id, "usr_bench", client_key, False)

    async def source(_dsid: str) -> SessionRecord | None:
        return record

    sessions = SessionCache(source, max_entries=100_000, ttl_ms=3_600_000, negative_ttl_ms=5_000)
    replay = RedisReplayStore(redis_url)
    budgets = CommandBudgets(ip=_BIG, session=_BIG, user=_BIG, message_type=_BIG)
    backend = BackendClient(backend_url, 5_000)
    await backend.start()
    metrics = GatewayMetrics()
    signer = Signer(bytes(range(32)))
    route_name = "user.echo"
    route = DEFAULT_ROUTES[route_name]
    ctx = CommandContext("usr_bench", req.device_session_id, req.request_id, req.message_type, req.trace_id)
    stages: dict[str, float] = {}
    try:
        stages["decode + validate + hash"] = _sync_cost(lambda: decode_request(request, 65_536), number)
        stages["session cache hit"] = await _async_cost(lambda _i: sessions.lookup(req.device_session_id), number, 1)

        def crypto() -> None:
            digest_equals(req.payload_digest, req.payload_hash)
            verify(record.client_public_key, req.signing_input, req.signature)
            abs(now_ms() - req.timestamp_ms)

        stages["payload hash + Ed25519 verify + freshness"] = _sync_cost(crypto, number // 5)
        print_ = fingerprint(req.payload_hash, req.signature)
        kept = b"r" * 300  # about a signed user.echo answer

        async def claim_and_keep(i: int) -> None:  # an ExecuteCommand's two Redis commands
            request_id = f"bench-{time.monotonic_ns()}-{i}"
            await replay.claim(req.device_session_id, request_id, 60_000, print_)
            replay.finish(req.device_session_id, request_id, print_, kept)

        stages["replay claim + kept answer (Redis)"] = await _async_cost(claim_and_keep, number, concurrency)

        async def step8() -> None:
            pass

        loop = asyncio.get_running_loop()

        async def detached(_i: int) -> None:  # over awaiting step 8 in the call's own task
            await shield_task(loop.create_task(step8()))

        stages["step 8 detached (task + shield)"] = await _async_cost(detached, number, 1) - await _async_cost(
            lambda _i: step8(), number, 1
        )
        stages["budgets"] = _sync_cost(
            lambda: budgets.charge("127.0.0.1", req.device_session_id, "usr_bench", req.message_type), number
        )
        stages["backend call"] = await _async_cost(
            lambda _i: backend.forward(route, req.payload, ctx), number, concurrency
        )
        body = b'{"echo":{"text":"x"},"user_id":"usr_bench"}'
        stages["response encode + sign"] = _sync_cost(
            lambda: encode_response(signer, req.request_id, req.trace_id, "ok", body, now_ms()), number // 5
        )

        # What a request records, on children bound once as the gateway binds them: the replay
        # and backend timers of the pipeline, the result and outcome counters and the duration of
        # the gRPC service (a labels() lookup per call would cost more than the records).
        result, ok = metrics.backend_results.labels("ok"), metrics.requests.labels("ExecuteCommand", "ok")
        duration = metrics.duration.labels("ExecuteCommand")
        backend_timer = metrics.backend_timers([route_name])[route_name]

        def account() -> None:
            metrics.replay_duration.observe(0.0002)
            backend_timer.observe(0.0005)
            result.inc()
            ok.inc()
            duration.observe(0.001)

        stages["metrics"] = _sync_cost(account, number)
    finally:
        await backend.close()
        await replay.close()
        await sessions.close()
    return stages
