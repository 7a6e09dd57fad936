"""The paced load generator: a separate process sending pre-signed requests on a fixed schedule.

Every request is built and signed before the clock starts (bench/e2e/loadgen.py builds them: a
distinct request id each, logged-in devices for the gateway). Each request's send time is fixed in
advance (``rate`` per second); one sender coroutine wakes when the next request is due, starts
every request that is due by then as its own call, and never waits for an answer, so the number
in flight grows as needed and a slow answer never delays the next send (open loop). The calls are
spread over several channels, each its own HTTP/2 connection.

The sender wakes on the event loop's timer, whose resolution is about a millisecond: a send can
leave up to about a millisecond after its scheduled time. That lateness is counted in the latency
(it is measured from the scheduled time) and is printed separately, as ``send_late``, so a
reader can tell the generator's own delay from the server's. The timer is the same for every
server; the generator's core is not quite: in gateway runs the stub and Redis work on it too.

After a paced warm-up at the same rate (sessions cached, connections open), it reads the server
process's CPU time from /proc, runs the measured schedule, waits for every answer, reads the CPU
time again, and prints one JSON line. A failed call is counted by its gRPC code, not stopped on:
open loop, an overloaded server fails calls, and that is a result too; the percentiles are of the
answered calls, so a run with failures is only read with its failure count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import uvloop

from bench.e2e.loadgen import EXECUTE, context_switches, process_cpu_seconds, switches_per_request
from bench.e2e.loadgen import _requests as build_requests  # the same pre-signed requests as bench.e2e
from bench.latency.schedule import latencies, percentile, send_times, summarize
from edgeward._pb import gateway_pb2
from edgeward.client import verify_response

_START_DELAY_S = 0.01  # the first request is due a little after the schedule is made


class _Run:
    """One paced schedule over ``calls``: scheduled, sent and answered times, and failures."""

    def __init__(self, calls: Sequence[Callable[..., Any]], requests: Sequence[bytes], rate: float) -> None:
        self.calls, self.requests = calls, requests
        self.scheduled = send_times(rate, len(requests), time.perf_counter() + _START_DELAY_S)
        self.sent = [0.0] * len(requests)
        self.answered = [0.0] * len(requests)
        self.failed: set[int] = set()
        self.failures: Counter[str] = Counter()  # gRPC status code name -> count
        self.first_failure = ""
        self.in_flight = self.max_in_flight = 0

    async def _one(self, i: int) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.calls[i % len(self.calls)](self.requests[i], timeout=30)
        except grpc.aio.AioRpcError as error:
            self.failed.add(i)
            self.failures[error.code().name] += 1
            self.first_failure = self.first_failure or f"{error.code().name}: {error.details()}"
        self.answered[i] = time.perf_counter()
        self.in_flight -= 1

    async def run(self) -> None:
        loop, tasks, due, count = asyncio.get_running_loop(), [], 0, len(self.requests)
        while due < count:
            now = time.perf_counter()
            while due < count and self.scheduled[due] <= now:
                self.sent[due] = now
                tasks.append(loop.create_task(self._one(due)))
                due += 1
            if due < count:
                await asyncio.sleep(self.scheduled[due] - time.perf_counter())
        await asyncio.gather(*tasks)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    warmup_count, count = round(args.rate * args.warmup), round(args.rate * args.duration)
    requests = await build_requests(args, 1 + warmup_count + count)
    options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel, not one shared
    channels = [grpc.aio.insecure_channel(args.target, options=options) for _ in range(args.channels)]
    try:
        calls = [channel.unary_unary(EXECUTE) for channel in channels]
        first = await calls[0](requests[0])
        if args.mode == "gateway":  # the answers must verify, or the figures mean nothing
            envelope = gateway_pb2.ExecuteCommandRequest.FromString(requests[0]).envelope
            verify_response(
                gateway_pb2.ExecuteCommandResponse.FromString(first),
                bytes.fromhex(args.gateway_public_key),
                envelope.request_id,
            )
        warmup = _Run(calls, requests[1 : 1 + warmup_count], args.rate)
        await warmup.run()
        measured = _Run(calls, requests[1 + warmup_count :], args.rate)
        switches0, cpu0 = context_switches(args.pid), process_cpu_seconds(args.pid)
        await measured.run()
        cpu1, switches1 = process_cpu_seconds(args.pid), context_switches(args.pid)
    finally:
        for channel in channels:
            await channel.close(grace=None)
    late = sorted(latencies(measured.scheduled, measured.sent))
    window = max(measured.answered) - measured.scheduled[0]
    ok = [i for i in range(count) if i not in measured.failed]
    return {
        "requests": count,
        "failures": len(measured.failed),  # not in the percentiles, which are of answered requests only
        "failure_codes": dict(measured.failures),
        "first_failure": measured.first_failure,
        "offered_rps": args.rate,
        "achieved_rps": len(ok) / window,
        **summarize(latencies([measured.scheduled[i] for i in ok], [measured.answered[i] for i in ok])),
        "send_late_p50_ms": percentile(late, 50) * 1e3,
        "send_late_p99_ms": percentile(late, 99) * 1e3,
        "max_in_flight": measured.max_in_flight,
        "cpu_us_per_request": (cpu1 - cpu0) / count * 1e6,
        **switches_per_request(switches0, switches1, count),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("gateway", "echo"), required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--pid", type=int, required=True, help="server process to measure")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="paced warm-up seconds")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--public-url", default="")
    parser.add_argument("--backend-url", default="")
    parser.add_argument("--gateway-public-key", default="", help="hex")
    parser.add_argument("--sessions", type=int, default=16)
    cli = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(main(cli))))
