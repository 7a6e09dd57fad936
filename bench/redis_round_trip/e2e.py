"""End to end: ``edgeward serve`` with Redis budgets, steps 6 and 7 in one round trip against two.

``python -m bench.redis_round_trip.e2e`` reuses bench/e2e's stack (private redis-server, stub
backend, the load-generator process, the server alone on core 0) and runs the native gateway with
``EDGEWARD_REDIS_URL`` and ``EDGEWARD_LIMITER_REDIS_URL`` on the same redis-server, in alternating
rounds of:

- ``one-trip``: both URLs ``redis://127.0.0.1:<port>/0``: the combination applies;
- ``two-step``: the limiter's URL names the same server as ``localhost``, which the gateway does not
  recognise as the store's (docs/replay.md), so it keeps the two steps: same Redis, same keys.

Budgets are on and roomy (never refuse), the pre-auth guard at its default (its block check is a
round trip of its own in both). Printed per round: the gateway's CPU per request and the
throughput; then the median, min and max over rounds of the one-trip / two-step ratios, and the
mean latency by Little's law (concurrency / throughput, closed loop).
"""

from __future__ import annotations

import argparse
import statistics

from bench.e2e.__main__ import _run_gateway
from bench.stack import BUDGETS_NEVER_REFUSE, GATEWAY_SEED, move_to_other_cores, redis_and_stub
from edgeward.native import _crypto_c


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_round_trip.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    move_to_other_cores()

    with redis_and_stub("rt") as (redis, stub):
        base = stub.env | {
            "EDGEWARD_REDIS_URL": redis.url,
            **BUDGETS_NEVER_REFUSE,
            # The load generator logs in the same mailboxes every run; Redis keeps the public limits.
            "EDGEWARD_PUBLIC_LIMIT_IP": "off",
            "EDGEWARD_PUBLIC_LIMIT_EMAIL": "off",
            "EDGEWARD_PUBLIC_LIMIT_CHALLENGE": "off",
        }
        envs = {
            "one-trip": base | {"EDGEWARD_LIMITER_REDIS_URL": redis.url},
            "two-step": base | {"EDGEWARD_LIMITER_REDIS_URL": f"redis://localhost:{redis.port}/0"},
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in envs}
        key = _crypto_c.Signer(GATEWAY_SEED).public_key.hex()
        for round_no in range(args.rounds):
            order = list(envs) if round_no % 2 == 0 else list(reversed(envs))
            for name in order:
                redis.flushall()
                runs[name].append(_run_gateway(args, envs[name], pure=False, public_key_hex=key))
            one, two = runs["one-trip"][-1], runs["two-step"][-1]
            print(
                f"round {round_no}  cpu/req µs two-step {two['cpu_us_per_request']:6.1f} "
                f"one-trip {one['cpu_us_per_request']:6.1f}   req/s {two['requests_per_s']:7.0f} "
                f"{one['requests_per_s']:7.0f}",
                flush=True,
            )
    pairs = list(zip(runs["one-trip"], runs["two-step"], strict=True))
    print(f"\nconcurrency {args.concurrency}, {args.requests} requests per run, {args.rounds} rounds each")
    cpu = sorted(one["cpu_us_per_request"] / two["cpu_us_per_request"] for one, two in pairs)
    saved = sorted(two["cpu_us_per_request"] - one["cpu_us_per_request"] for one, two in pairs)
    print(
        f"CPU per request  one-trip/two-step median {statistics.median(cpu):.3f} "
        f"(min {cpu[0]:.3f}, max {cpu[-1]:.3f}); "
        f"saved median {statistics.median(saved):.1f} µs (min {saved[0]:.1f}, max {saved[-1]:.1f}); two-step median "
        f"{statistics.median(two['cpu_us_per_request'] for _, two in pairs):.1f} µs"
    )
    latency = {n: [args.concurrency / r["requests_per_s"] * 1e6 for r in runs[n]] for n in runs}
    ratio = sorted(o / t for o, t in zip(latency["one-trip"], latency["two-step"], strict=True))
    saved_l = sorted(t - o for o, t in zip(latency["one-trip"], latency["two-step"], strict=True))
    print(
        f"mean latency     one-trip/two-step median {statistics.median(ratio):.3f} (min {ratio[0]:.3f}, "
        f"max {ratio[-1]:.3f}); saved median {statistics.median(saved_l):.1f} µs (min {saved_l[0]:.1f}, "
        f"max {saved_l[-1]:.1f}); two-step median {statistics.median(latency['two-step']):.1f} µs"
    )


if __name__ == "__main__":
    main()
