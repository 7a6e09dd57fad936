"""The local stack the end-to-end benchmarks run: processes, ports, cores and the gateway's key.

Shared by every end-to-end benchmark, which starts its Redis and stub backend with
``redis_and_stub`` (or the stub alone with ``stub_backend``). Where the machine has two or more
cores the measured server runs alone on core 0 and everything else (load generators, the stub
backend, Redis, the benchmark itself) on core 1, so what is measured is not disturbed by its
neighbours.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeward.devtools.ports import free_ports, wait_listening
from edgeward.devtools.processes import stop_all
from edgeward.files import atomic_write
from tests.support.redis_server import RedisServer

__all__ = (
    "BUDGETS_NEVER_REFUSE",
    "GATEWAY_SEED",
    "ROOT",
    "SERVER_CORE",
    "Stub",
    "move_to_other_cores",
    "on_server_core",
    "redis_and_stub",
    "stop",
    "stub_backend",
)

ROOT = Path(__file__).resolve().parents[1]
GATEWAY_SEED = bytes(range(32, 64))
# The gateway settings every benchmark runs with: the command budgets and the pre-auth guard stay
# on (their cost is measured) but never refuse a request. The guard charges each lookup of an
# uncached session to the IP's failure budget until the session is found (docs/edge-protection.md):
# at its default burst of 20, two workers' cold caches looking up 16 sessions each from the load
# generator's one address at once were refused rate_limited now and then (bench.workers).
BUDGETS_NEVER_REFUSE = {
    f"EDGEWARD_BUDGET_{scope}": "1000000000:1000000000" for scope in ("IP", "SESSION", "USER", "MESSAGE_TYPE")
} | {"EDGEWARD_PREAUTH_FAILURE_LIMIT": "1000000000:1000000000"}

SERVER_CORE, _OTHER_CORES = ({0}, {1}) if len(os.sched_getaffinity(0)) >= 2 else (None, None)


def on_server_core() -> None:
    """``preexec_fn`` of a measured server: run it on the server core."""
    if SERVER_CORE is not None:
        os.sched_setaffinity(0, SERVER_CORE)


def move_to_other_cores() -> None:
    """Pin this process (and so every child it starts afterwards) off the server core."""
    if _OTHER_CORES is not None:
        os.sched_setaffinity(0, _OTHER_CORES)


def stop(proc: subprocess.Popen[Any]) -> None:
    stop_all([proc])


class Stub:
    """A stub backend process on free ports, and the environment a gateway needs to use it.

    ``env`` starts from this process's environment without any ``EDGEWARD_*`` variable, then
    names the stub's listeners, the gateway's backend and push addresses, and a key file holding
    ``GATEWAY_SEED``; callers add their own settings before ``start()``.
    """

    def __init__(self, state_dir: Path) -> None:
        key_file = state_dir / "gateway.key"
        atomic_write(key_file, base64.b64encode(GATEWAY_SEED) + b"\n")  # 0600: a key file, as keygen writes it
        self.http_port, grpc_port = free_ports("http", "grpc").values()
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | {
            "EDGEWARD_STUB_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "EDGEWARD_STUB_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "EDGEWARD_BACKEND_BASE_URL": self.base_url,
            "EDGEWARD_BACKEND_PUSH_ADDR": f"127.0.0.1:{grpc_port}",
            "EDGEWARD_SIGNING_KEY_FILE": str(key_file),
            "EDGEWARD_LOG_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeward", "stub-backend"], env=self.env, cwd=ROOT)
        wait_listening(self.http_port, self.proc, what="stub backend")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@contextlib.contextmanager
def stub_backend(name: str) -> Iterator[Stub]:
    """A started stub backend, its key file in a new temporary directory (``edgeward-<name>-…``); stopped after."""
    stub = Stub(Path(tempfile.mkdtemp(prefix=f"edgeward-{name}-")))
    try:
        stub.start()
        yield stub
    finally:
        stub.stop()


@contextlib.contextmanager
def redis_and_stub(name: str) -> Iterator[tuple[RedisServer, Stub]]:
    """A private redis-server on a free port and a started ``stub_backend``; both stopped after."""
    redis = RedisServer()
    redis.start()
    try:
        with stub_backend(name) as stub:
            yield redis, stub
    finally:
        redis.close()
