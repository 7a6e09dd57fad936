"""grpcio releases and grpc.aio settings, measured with bench.e2e's servers and load generator.

``python -m bench.grpc_release --candidate LABEL SERVER PYTHON [env:KEY=VALUE ...] [arg:--flag ...]``
(repeat ``--candidate``) measures each candidate's server CPU per request, as bench.e2e does: the
server alone on core 0, bench.e2e's load generator (this interpreter) with the same requests and
number in flight on core 1 with Redis and the stub backend. What differs between candidates is
only the server's interpreter (one virtualenv per grpcio release), its environment and its flags:

- SERVER ``echo``: bench.e2e's bare grpc.aio echo (``bench.e2e.echo_server``);
- SERVER ``echo-flags``: the same echo with settings as flags (``bench/e2e/echo_server.py``);
- SERVER ``gateway``: ``edgeward serve`` configured as in bench.e2e (Redis replay store, stub
  backend, budgets that never refuse).

Rounds are interleaved (every candidate once per round, the order rotated each round) so noise
from the rest of the machine falls on all of them; per candidate the median, min and max over
rounds are printed and every run is appended as a JSON line to ``--out``.

The client side (this interpreter: load generator, stub backend) stays the same for every
candidate. Run it from the repository root with the tree on ``PYTHONPATH`` so every candidate's
interpreter imports the same edgeward::

    PYTHONPATH=$PWD/src:$PWD .venv/bin/python -m bench.grpc_release --rounds 5 \\
      --candidate 1.85.3/echo echo /tmp/v1.85.3/bin/python \\
      --candidate 1.82.3/echo echo /tmp/v1.82.3/bin/python

A virtualenv per release: copy the project's (``cp -a .venv /tmp/vX``) and
``/tmp/vX/bin/python -m pip install grpcio==X grpcio-status==X grpcio-health-checking~=X.Y.0
grpcio-reflection~=X.Y.0``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.e2e.__main__ import _loadgen
from bench.stack import (
    BUDGETS_NEVER_REFUSE,
    GATEWAY_SEED,
    ROOT,
    move_to_other_cores,
    on_server_core,
    redis_and_stub,
    stop,
)
from edgeward.devtools.ports import free_ports, wait_listening
from edgeward.native import _crypto_c

SERVERS = ("echo", "echo-flags", "gateway")


@dataclass
class Candidate:
    label: str
    server: str
    python: str
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    runs: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def parse(cls, words: list[str]) -> Candidate:
        if len(words) < 3 or words[1] not in SERVERS:
            raise SystemExit(f"--candidate LABEL {{{','.join(SERVERS)}}} PYTHON [env:K=V] [arg:--flag]: {words}")
        cand = cls(words[0], words[1], words[2])
        for word in words[3:]:
            kind, _, value = word.partition(":")
            if kind == "env" and "=" in value:
                key, _, val = value.partition("=")
                cand.env[key] = val
            elif kind == "arg":
                cand.args += value.split()
            else:
                raise SystemExit(f"extra words are env:KEY=VALUE or arg:--flag, not {word!r}")
        return cand


def _grpc_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import grpc; print(grpc.__version__)"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return out.stdout.strip()


def _load() -> dict[str, float]:
    """Machine noise beside each run: the 1-minute load average and CPU steal so far (ticks)."""
    with open("/proc/loadavg") as f:
        load1 = float(f.read().split()[0])
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    return {"load1": load1, "steal_ticks": float(cpu[8]), "busy_ticks": float(sum(map(int, cpu[1:4])))}


def _run(args: argparse.Namespace, cand: Candidate, env: dict[str, str], public_key_hex: str) -> dict[str, float]:
    senv = env | cand.env
    if cand.server == "gateway":
        ports = free_ports("grpc", "public", "admin")
        senv |= {
            "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{ports['grpc']}",
            "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{ports['public']}",
            "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{ports['admin']}",
        }
        proc = subprocess.Popen(
            [cand.python, "-m", "edgeward", "serve", *cand.args], env=senv, cwd=ROOT, preexec_fn=on_server_core
        )
        try:
            wait_listening(ports["grpc"], proc, what="gateway")
            wait_listening(ports["public"], proc, what="gateway public listener")
            return _loadgen(
                args, "gateway", f"127.0.0.1:{ports['grpc']}", proc.pid,
                public_url=f"http://127.0.0.1:{ports['public']}", backend_url=env["EDGEWARD_BACKEND_BASE_URL"],
                gateway_public_key=public_key_hex,
            )
        finally:
            stop(proc)
    proc = subprocess.Popen(
        [cand.python, "-m", "bench.e2e.echo_server", *cand.args],
        env=senv, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=on_server_core,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        return _loadgen(args, "echo", f"127.0.0.1:{port}", proc.pid)
    finally:
        stop(proc)


def _summary(cands: list[Candidate]) -> None:
    print(f"\n{'candidate':<34} {'grpcio':>8} {'µs/req median':>14} {'min':>7} {'max':>7} {'req/s median':>13} rounds")
    for cand in cands:
        cpu = [r["cpu_us_per_request"] for r in cand.runs]
        rps = [r["requests_per_s"] for r in cand.runs]
        if not cpu:
            continue
        print(
            f"{cand.label:<34} {cand.runs[0]['grpcio']:>8} {statistics.median(cpu):>14.1f} {min(cpu):>7.1f} "
            f"{max(cpu):>7.1f} {statistics.median(rps):>13.0f} {len(cpu)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_release", description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", nargs="+", action="append", required=True, metavar="WORD")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "grpc_release.jsonl"))
    args = parser.parse_args()
    cands = [Candidate.parse(words) for words in args.candidate]
    versions = {cand.python: _grpc_version(cand.python) for cand in cands}
    move_to_other_cores()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    public_key_hex = _crypto_c.Signer(GATEWAY_SEED).public_key.hex()
    with redis_and_stub("grpc-release") as (redis, stub):
        env = stub.env | {
            "EDGEWARD_REDIS_URL": redis.url,
            **BUDGETS_NEVER_REFUSE,
        }
        for rnd in range(args.rounds):
            shift = rnd % len(cands)
            for cand in cands[shift:] + cands[:shift]:
                before = _load()
                t0 = time.time()
                result = _run(args, cand, env, public_key_hex)
                after = _load()
                result |= {
                    "label": cand.label, "server": cand.server, "grpcio": versions[cand.python],
                    "env": cand.env, "args": cand.args, "round": rnd, "time": t0,
                    "load1": after["load1"], "concurrency": args.concurrency,
                    "machine_busy_cores": (after["busy_ticks"] - before["busy_ticks"])
                    / os.sysconf("SC_CLK_TCK") / max(time.time() - t0, 1e-9),
                    "steal_ticks": after["steal_ticks"] - before["steal_ticks"],
                }
                cand.runs.append(result)
                with out.open("a") as f:
                    f.write(json.dumps(result) + "\n")
                print(
                    f"round {rnd + 1}/{args.rounds} {cand.label:<34} {result['cpu_us_per_request']:7.1f} µs/req "
                    f"{result['requests_per_s']:6.0f} req/s  load {result['load1']:.2f}",
                    flush=True,
                )
    _summary(cands)
    return 0


if __name__ == "__main__":
    sys.exit(main())
