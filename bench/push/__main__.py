"""Push benchmark: fan-out throughput, memory per idle stream, revocation-to-stream-end latency.

``python -m bench.push`` (part of ``make bench``) starts the stub backend and a native gateway on
loopback (the gateway alone on core 0 where there are two cores, as in bench.e2e), then runs
bench/push/client.py in a separate process, which holds the streams and reads the gateway's CPU
time and RSS from /proc; then the same with the pure-Python gateway (``EDGEWARD_NO_EXTENSIONS=1``)
for the column beside it:

- memory per idle stream: RSS growth of the gateway / streams, for 5,000 open idle streams;
- fan-out: signed events per second delivered to 1,000 subscribers of one user, and the gateway's
  CPU per delivered event (each event is signed once and the same bytes go to every stream);
- invalidation latency: p50/p99 from the revocation request to the backend until the client sees
  its stream end with ``session_revoked`` (backend -> push stream -> dispatcher -> hub -> client).

These are reported, not budgeted: they describe capacity rather than overhead against a baseline.
The table is printed and written as JSON beside the end-to-end results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.stack import GATEWAY_SEED, ROOT, Stub, move_to_other_cores, on_server_core, stop, stub_backend
from edgeward.devtools.ports import free_ports, wait_listening
from edgeward.native import _crypto_c


def _gateway_env(stub: Stub, ports: dict[str, int], pure: bool) -> dict[str, str]:
    return stub.env | {
        "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{ports['grpc']}",
        "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{ports['public']}",
        "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{ports['admin']}",
        "EDGEWARD_MAX_STREAMS_PER_SESSION": "1000",
        "EDGEWARD_MAX_STREAMS_PER_USER": "100000",
        "EDGEWARD_STREAM_QUEUE_SIZE": "1024",
        "EDGEWARD_PUBLIC_LIMIT_IP": "off",
        "EDGEWARD_PUBLIC_LIMIT_EMAIL": "off",
        "EDGEWARD_BUDGET_IP": "off",
        "EDGEWARD_BUDGET_SESSION": "off",
        "EDGEWARD_BUDGET_USER": "off",
        "EDGEWARD_BUDGET_MESSAGE_TYPE": "off",
        # Thousands of streams of distinct devices open at once from 127.0.0.1 on a cold session
        # cache: each lookup is charged to the IP's failure budget until its session is found
        # (docs/edge-protection.md), so the default (20 at once) would refuse most as rate_limited.
        "EDGEWARD_PREAUTH_FAILURE_LIMIT": "off",
    } | ({"EDGEWARD_NO_EXTENSIONS": "1"} if pure else {})


def _run(args: argparse.Namespace, stub: Stub, pure: bool) -> dict[str, Any]:
    """One gateway (native or pure) and one client run against it: the client's report."""
    ports = free_ports("grpc", "public", "admin")
    env = _gateway_env(stub, ports, pure)
    command = [sys.executable, "-m", "edgeward", "serve"]
    gateway = subprocess.Popen(command, env=env, cwd=ROOT, preexec_fn=on_server_core)
    try:
        wait_listening(ports["grpc"], gateway, what="gateway")
        wait_listening(ports["public"], gateway, what="gateway public listener")
        out = subprocess.run(
            [
                sys.executable, "-m", "bench.push.client", "--target", f"127.0.0.1:{ports['grpc']}",
                "--pid", str(gateway.pid), "--public-url", f"http://127.0.0.1:{ports['public']}",
                "--backend-url", stub.base_url,
                "--gateway-public-key", _crypto_c.Signer(GATEWAY_SEED).public_key.hex(),
                "--idle-streams", str(args.idle_streams), "--subscribers", str(args.subscribers),
                "--events", str(args.events),
            ],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
        )
    finally:
        stop(gateway)
    if out.returncode != 0:
        raise RuntimeError(f"push client failed against the {'pure' if pure else 'native'} gateway:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.push", description=__doc__.splitlines()[0])
    parser.add_argument("--idle-streams", type=int, default=5000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "push.json"))
    args = parser.parse_args()
    move_to_other_cores()
    with stub_backend("push") as stub:
        results = {twin: _run(args, stub, pure=twin == "pure") for twin in ("native", "pure")}
    _print(results)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {path}")
    return 0 if all(r["fan_out"]["delivered"] == r["fan_out"]["expected"] for r in results.values()) else 1


def _print(results: dict[str, dict[str, Any]]) -> None:
    native, pure = results["native"], results["pure"]
    memory, fan_out = native["memory"], native["fan_out"]
    print("\nedgeward push (loopback, uvloop, gateway alone on core 0)            native        pure")
    rows = [
        ("memory per idle stream, KiB", lambda r: r["memory"]["bytes_per_idle_stream"] / 1024, ".1f"),
        ("fan-out delivered events/s", lambda r: r["fan_out"]["delivered_per_s"], ".0f"),
        ("gateway CPU per delivered event, µs", lambda r: r["fan_out"]["gateway_cpu_us_per_delivered_event"], ".1f"),
        ("revocation -> stream end p50, ms", lambda r: r["revocation"]["p50_ms"], ".1f"),
        ("revocation -> stream end p99, ms", lambda r: r["revocation"]["p99_ms"], ".1f"),
    ]
    for name, figure, fmt in rows:
        print(f"  {name:<64} {figure(native):>10{fmt}} {figure(pure):>10{fmt}}")
    print(
        f"  ({memory['streams']} idle streams; {fan_out['events']} events x {fan_out['subscribers']} subscribers of "
        f"one user, {fan_out['delivered']} delivered; {native['revocation']['revocations']} revocations)"
    )


if __name__ == "__main__":
    sys.exit(main())
