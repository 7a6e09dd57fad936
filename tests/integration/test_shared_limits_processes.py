"""Two real ``edgeward serve`` processes share one command budget through a real redis-server.

This is the deployment the Redis limiter exists for: separate processes (not two Gateway objects
in one interpreter) with nothing in common but Redis. The stub backend runs as a process too;
every port is a free loopback port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import pytest

from edgeward.client import GatewayError, error_from_rpc, login_with_stub_mailbox
from edgeward.devtools.ports import NotListening, free_ports, wait_listening
from edgeward.native.crypto import Signer
from tests.integration.conftest import EXECUTE, Device
from tests.support.redis_server import RedisServer

EDGEWARD = [sys.executable, "-m", "edgeward"]
_UP_TIMEOUT_S = 60.0


class Processes:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")}

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:
            self.procs.append(
                (subprocess.Popen([*EDGEWARD, *args], env=self.env | env, stdout=out, stderr=out), log)
            )

    def waitlistening(self, ports: list[int]) -> None:
        """Until every port listens; fails (with the logs) when a process died or time ran out."""
        procs = [proc for proc, _ in self.procs]
        try:
            for port in ports:
                wait_listening(port, *procs, what=f"the listener on {port}", timeout_s=_UP_TIMEOUT_S)
        except NotListening as exc:
            pytest.fail(f"{exc}:\n" + "\n".join(log.read_text() for _, log in self.procs))

    def stop(self) -> None:
        for proc, _ in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc, log in self.procs:
            assert proc.wait(timeout=30) == 0, log.read_text()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


def _execute(target: str, data: bytes) -> GatewayError | None:
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(EXECUTE)(data, timeout=10)
        except grpc.RpcError as err:
            return error_from_rpc(cast(grpc.aio.AioRpcError, err))  # the same grpc.Call accessors
    return None


def test_two_gateway_processes_share_one_budget(processes: Processes, redis_server: RedisServer) -> None:
    stub_http, stub_grpc = free_ports("stub_http", "stub_grpc").values()
    backend = {
        "EDGEWARD_BACKEND_BASE_URL": f"http://127.0.0.1:{stub_http}",
        "EDGEWARD_BACKEND_PUSH_ADDR": f"127.0.0.1:{stub_grpc}",
    }
    processes.spawn(
        "stub",
        ["stub-backend"],
        {"EDGEWARD_STUB_HTTP_ADDR": f"127.0.0.1:{stub_http}", "EDGEWARD_STUB_GRPC_ADDR": f"127.0.0.1:{stub_grpc}"},
    )
    gateways, ports = [], [stub_http]
    for name in ("one", "two"):
        grpc_port, public_port, admin_port = free_ports("grpc", "public", "admin").values()
        env = backend | {
            "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{public_port}",
            "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{admin_port}",
            "EDGEWARD_LIMITER_REDIS_URL": redis_server.url,
            "EDGEWARD_BUDGET_SESSION": "1/h:3",
            "EDGEWARD_LOG_LEVEL": "WARNING",
        }
        processes.spawn(name, ["serve"], env)
        gateways.append((f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{public_port}"))
        ports += [grpc_port, public_port]
    processes.waitlistening(ports)  # the three start side by side
    (one, public_one), (two, _) = gateways
    signer = Signer.generate()
    dsid = asyncio.run(
        login_with_stub_mailbox(public_one, backend["EDGEWARD_BACKEND_BASE_URL"], "ada@example.com", signer)
    )
    device = Device(signer, dsid, "ada@example.com")
    assert _execute(one, device.request("user.echo")) is None
    assert _execute(two, device.request("user.echo")) is None
    assert _execute(one, device.request("user.echo")) is None
    for target in (two, one):  # the fourth request is over the budget, whichever process gets it
        err = _execute(target, device.request("user.echo"))
        assert err is not None and (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
        assert err.metadata == {"budget": "session"}
        assert err.retry_after_ms is not None and 3_500_000 < err.retry_after_ms <= 3_600_000
