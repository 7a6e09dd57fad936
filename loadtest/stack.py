"""The local stack ``make loadtest`` runs against when no target is given.

A private ``redis-server`` (replay store), ``edgeward stub-backend`` and one ``edgeward serve``,
every listener on a free loopback port, as ``edgeward dev`` assembles them (one gateway process,
a key of its own). One difference, on purpose: every virtual user comes from 127.0.0.1, which a
real fleet never does, so the per-IP limits (command budget and public auth routes) are raised
out of the way; the per-session, per-user and per-message-type budgets stay at their defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from edgeward.devtools.ports import NotListening, free_ports, wait_listening
from edgeward.devtools.processes import stop_all
from edgeward.native.crypto import Signer
from edgeward.native.keys import save_signer
from loadtest.target import Target

__all__ = ("local_stack",)

_PER_IP_RAISED = {"EDGEWARD_BUDGET_IP": "100000:100000", "EDGEWARD_PUBLIC_LIMIT_IP": "100000:100000"}
_READY_TIMEOUT_S = 30.0


def _push_connected(admin_port: int) -> bool:
    """The gateway's /readyz says its backend push stream is up (events posted before are dropped)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=2) as resp:
            return bool(json.load(resp).get("push", {}).get("connected"))
    except (OSError, ValueError):
        return False


def _wait_push(admin_port: int, gateway: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not _push_connected(admin_port):
        if gateway.poll() is not None:
            raise NotListening(f"gateway exited with status {gateway.returncode}")
        if time.monotonic() >= deadline:
            raise NotListening(f"gateway's push stream not connected within {_READY_TIMEOUT_S:.0f}s")
        time.sleep(0.1)


@contextlib.contextmanager
def local_stack(state_dir: Path) -> Iterator[Target]:
    """Start the stack, yield its target, stop every process on the way out (also on failure).

    Keys, Redis files and each process's log go to ``state_dir``.
    """
    redis_exe = shutil.which("redis-server")
    if redis_exe is None:
        raise NotListening("redis-server is not installed: run `make deps`")
    state_dir.mkdir(parents=True, exist_ok=True)
    signer = Signer.generate()
    save_signer(signer, state_dir / "gateway.key")
    port = free_ports("redis", "stub_http", "stub_grpc", "grpc", "public", "admin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | _PER_IP_RAISED | {
        "EDGEWARD_REDIS_URL": f"redis://127.0.0.1:{port['redis']}/0",
        "EDGEWARD_STUB_HTTP_ADDR": f"127.0.0.1:{port['stub_http']}",
        "EDGEWARD_STUB_GRPC_ADDR": f"127.0.0.1:{port['stub_grpc']}",
        "EDGEWARD_BACKEND_BASE_URL": f"http://127.0.0.1:{port['stub_http']}",
        "EDGEWARD_BACKEND_PUSH_ADDR": f"127.0.0.1:{port['stub_grpc']}",
        "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{port['grpc']}",
        "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{port['public']}",
        "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{port['admin']}",
        "EDGEWARD_SIGNING_KEY_FILE": str(state_dir / "gateway.key"),
        "EDGEWARD_WORKERS": "1",
        "EDGEWARD_LOG_LEVEL": "WARNING",
    }
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as logs:

        def start(name: str, *cmd: str) -> subprocess.Popen[bytes]:
            log: IO[Any] = logs.enter_context((state_dir / f"{name}.log").open("wb"))
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
            return procs[-1]

        try:
            redis = start(
                "redis", redis_exe, "--port", str(port["redis"]), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(state_dir),
            )
            wait_listening(port["redis"], redis, what="redis-server")
            stub = start("stub-backend", sys.executable, "-m", "edgeward", "stub-backend")
            wait_listening(port["stub_http"], stub, what="stub backend")
            gateway = start("gateway", sys.executable, "-m", "edgeward", "serve")
            wait_listening(port["grpc"], gateway, what="gateway (gRPC)")
            wait_listening(port["public"], gateway, what="gateway (public auth)")
            _wait_push(port["admin"], gateway)
            yield Target(
                grpc_target=f"127.0.0.1:{port['grpc']}",
                public_url=f"http://127.0.0.1:{port['public']}",
                stub_url=f"http://127.0.0.1:{port['stub_http']}",
                gateway_public_key=signer.public_key_b64,
            )
        finally:
            stop_all(procs)
