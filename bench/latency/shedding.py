"""Where calls go when the gateway falls behind: gRPC core sheds them (docs/operations.md, "Overload").

``python -m bench.latency.shedding --rate 2500 --max-pending-calls 50,1000,100000`` offers the
native gateway a fixed open-loop rate (bench.latency's stack and load generator, 4 s) once per
``EDGEWARD_GRPC_MAX_PENDING_CALLS`` value, and prints per run the calls the load generator saw fail
(by gRPC code) beside the calls the gateway itself counted (``edgeward_requests_total`` by
outcome). Calls that failed and that the gateway never counted were dropped by gRPC core before
the gateway's loop took them. Pick a rate above the gateway's saturation on the machine
(``python -m bench.latency`` prints it), or nothing is shed.
"""

from __future__ import annotations

import argparse
import re
import urllib.request

from bench.latency import servers
from bench.latency.__main__ import _loadgen, open_loop_env
from bench.stack import move_to_other_cores, redis_and_stub

_COUNTED = re.compile(r'^edgeward_requests_total\{outcome="([^"]+)",rpc="ExecuteCommand"\} (\S+)$', re.M)


def _counted(admin_url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {outcome: int(float(n)) for outcome, n in _COUNTED.findall(text) if float(n)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency.shedding", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="offered calls per second")
    parser.add_argument("--max-pending-calls", default="50,1000,100000", help="comma-separated values to run")
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    move_to_other_cores()
    with redis_and_stub("shedding") as (redis, stub):
        for pending in (int(value) for value in args.max_pending_calls.split(",")):
            with servers.gateway(open_loop_env(stub, redis.url, pending)) as server:
                run = _loadgen(
                    "bench.latency.loadgen", server, ["--rate", str(args.rate), "--duration", str(args.duration)]
                )
                counted = _counted(server.admin_url)
            print(
                f"max pending {pending:>7}: offered {args.rate:.0f}/s, most in flight {run['max_in_flight']}, "
                f"failed (measured window) {run['failure_codes'] or 0}; counted by the gateway (warm-up too) {counted}"
            )


if __name__ == "__main__":
    main()
