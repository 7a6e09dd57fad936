"""``edgeward serve`` as a process: SIGTERM with open streams (docs/push.md, shutdown order).

The gateway runs as a subprocess against the in-process stub backend; devices log in through its
public HTTP listener and hold SubscribeEvents streams when it receives SIGTERM. Every stream must
end with ``shutting_down`` (the hub closes before gRPC's graceful stop) and the process must exit
with status 0 within its grace period, without asyncio complaining about pending tasks.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from edgeward.client import login_with_stub_mailbox
from edgeward.devtools.ports import free_ports
from edgeward.native.crypto import Signer
from edgeward.native.keys import save_signer
from edgeward.stub import StubBackend
from tests.integration.conftest import Device
from tests.integration.streams import Served, Stream, eventually, serve_env, spawn

GRACE_MS = 10_000
_START_S = 60.0


async def _ready(admin_port: int) -> bool:
    """/readyz answers 200 and the gateway follows the stub's push stream."""
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin_port}/readyz") as resp:
            body = await resp.json()
    except aiohttp.ClientError:
        return False
    return resp.status == 200 and bool(body["push"]["connected"])


@pytest.fixture
async def served(stub: StubBackend, tmp_path: Path) -> AsyncIterator[Served]:
    signer = Signer.generate()
    save_signer(signer, tmp_path / "gateway.key")
    ports = free_ports("grpc", "public", "admin")
    env = serve_env(stub, tmp_path / "gateway.key", ports, EDGEWARD_SHUTDOWN_GRACE_MS=str(GRACE_MS))
    log = tmp_path / "serve.log"
    proc = await spawn([sys.executable, "-m", "edgeward", "serve"], env, log)
    process = Served(proc, log, ports, signer)
    try:
        deadline = time.monotonic() + _START_S
        while not await _ready(ports["admin"]):
            assert proc.poll() is None, process.output()
            assert time.monotonic() < deadline, "edgeward serve did not become ready:\n" + process.output()
            await asyncio.sleep(0.1)
        yield process
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def test_sigterm_ends_every_stream_with_shutting_down_then_exits_0(served: Served, stub: StubBackend) -> None:
    public_url = f"http://127.0.0.1:{served.ports['public']}"
    devices = []
    for i in range(3):
        signer = Signer.generate()
        email = f"user{i}@example.com"
        devices.append(Device(signer, await login_with_stub_mailbox(public_url, stub.base_url, email, signer), email))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.ports['grpc']}") as channel:
            streams = [Stream(channel, d, gateway_key=served.signer.public_key) for d in devices]
            for stream in streams:
                await stream.opened()
            served.proc.send_signal(signal.SIGTERM)
            for stream in streams:
                err = await stream.end()
                assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "shutting_down")
        await eventually(lambda: served.proc.poll() is not None, "the gateway to exit", within_s=GRACE_MS / 1000)
    except BaseException:
        print(served.output())  # pytest shows it with the failure
        raise
    output = served.output()
    assert served.proc.returncode == 0, output
    assert "ended 3 open streams with shutting_down" in output and "gateway stopped" in output
    for trouble in ("Task was destroyed", "Traceback", "ERROR", "was never retrieved"):
        assert trouble not in output, output
