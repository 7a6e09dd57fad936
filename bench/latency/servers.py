"""The measured servers, each started on the server core for one run and stopped after it.

``gateway`` is ``edgeward serve`` (native, or its pure-Python twin) and ``echo`` the grpc.aio echo
of bench.e2e (bare, or the in-place floor); each yields the target address, the process id whose
CPU time is read, and the load generator's extra arguments. A fresh process per run keeps the
runs independent (no queue or heap left over from the previous rate), as bench.e2e does.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from typing import NamedTuple

from bench.stack import GATEWAY_SEED, ROOT, on_server_core, stop
from edgeward.devtools.ports import free_ports, wait_listening
from edgeward.native.crypto import Signer

__all__ = ("Server", "echo", "gateway")


class Server(NamedTuple):
    target: str
    pid: int
    loadgen_args: list[str]
    admin_url: str = ""  # the gateway's admin listener (/metrics); none for the echo


@contextlib.contextmanager
def gateway(env: dict[str, str], pure: bool = False) -> Iterator[Server]:
    """``pure``: the pure-Python twin (``EDGEWARD_NO_EXTENSIONS=1``)."""
    ports = free_ports("grpc", "public", "admin")
    genv = env | {
        "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{ports['grpc']}",
        "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{ports['public']}",
        "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{ports['admin']}",
        "EDGEWARD_LOG_LEVEL": "WARNING",
    } | ({"EDGEWARD_NO_EXTENSIONS": "1"} if pure else {})
    proc = subprocess.Popen([sys.executable, "-m", "edgeward", "serve"], env=genv, cwd=ROOT, preexec_fn=on_server_core)
    try:
        wait_listening(ports["grpc"], proc, what="gateway")
        wait_listening(ports["public"], proc, what="gateway public listener")
        yield Server(
            f"127.0.0.1:{ports['grpc']}",
            proc.pid,
            [
                "--mode", "gateway",
                "--public-url", f"http://127.0.0.1:{ports['public']}",
                "--backend-url", env["EDGEWARD_BACKEND_BASE_URL"],
                "--gateway-public-key", Signer(GATEWAY_SEED).public_key.hex(),
            ],
            f"http://127.0.0.1:{ports['admin']}",
        )
    finally:
        stop(proc)


@contextlib.contextmanager
def echo(env: dict[str, str], floor: bool = False) -> Iterator[Server]:
    """``floor``: the in-place floor of bench.e2e (bench/e2e/echo_server.py ``--legs --crypto``):
    the echo also makes the gateway's Redis and backend calls, one verify and one sign, so it also
    loads the load generator's core with the stub and Redis as gateway runs do."""
    legs = ["--legs", "--redis-url", env["EDGEWARD_REDIS_URL"], "--backend-url", env["EDGEWARD_BACKEND_BASE_URL"]]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.e2e.echo_server", *(["--crypto", *legs] if floor else [])],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=on_server_core,
    )
    try:
        assert proc.stdout is not None
        yield Server(f"127.0.0.1:{int(proc.stdout.readline())}", proc.pid, ["--mode", "echo"])
    finally:
        stop(proc)
