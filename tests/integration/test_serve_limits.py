"""``edgeward serve`` as a process under hostile load and operator mistakes (issue 10.1, 10.8).

- With the fd limit at 1,024 (set by the shell before the gateway starts), one IP holding 1,100
  public connections cannot stop a signed ExecuteCommand, nor the admin listener: the per-IP cap
  refuses most of them, and with that cap lifted the total cap (the fd limit less
  ``EDGEWARD_FD_RESERVE``) still leaves gRPC its descriptors.
- A listener whose port is taken ends the process with status 4 and one line naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shlex
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from edgeward._pb import gateway_pb2
from edgeward.client import login_with_stub_mailbox, verify_response
from edgeward.devtools.ports import free_port, free_ports
from edgeward.native.crypto import Signer
from edgeward.native.keys import save_signer
from edgeward.runtime import EXIT_CANNOT_LISTEN
from edgeward.stub import StubBackend
from tests.integration.conftest import EXECUTE, Device
from tests.integration.streams import serve_env, spawn

FD_LIMIT = 1024
FLOOD = 1100
_START_S = 60.0
FLOOD_HELD_OPEN = {"EDGEWARD_HTTP_HEADER_TIMEOUT_MS": "120000"}  # the flood stays open for the whole test


async def healthz(port: int) -> int | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            return resp.status
    except aiohttp.ClientError:
        return None


@contextlib.contextmanager
def own_fd_limit_raised() -> Iterator[None]:
    """This test process holds the flood's sockets: give it room for them, then restore."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = FLOOD + 512
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"the hard fd limit {hard} is below the {needed} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def flood(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that never send a byte; those the gateway refused are closed by it."""
    held = []
    for _ in range(count):
        with contextlib.suppress(OSError):  # a refused connect still counts as tried
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    return held


@contextlib.asynccontextmanager
async def served_with_fd_limit(
    stub: StubBackend, tmp_path: Path, gateway_key: Signer, **extra: str
) -> AsyncIterator[dict[str, int]]:
    save_signer(gateway_key, tmp_path / "gateway.key")
    ports = free_ports("grpc", "public", "admin")
    env = serve_env(stub, tmp_path / "gateway.key", ports, **FLOOD_HELD_OPEN, **extra)
    command = f"ulimit -n {FD_LIMIT} && exec {shlex.quote(sys.executable)} -m edgeward serve"
    log = tmp_path / "serve.log"
    proc = await spawn(["/bin/sh", "-c", command], env, log)
    try:
        deadline = time.monotonic() + _START_S
        while await healthz(ports["admin"]) != 200:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "edgeward serve did not start:\n" + log.read_text()
            await asyncio.sleep(0.1)
        yield ports
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


@pytest.mark.parametrize("per_ip_cap", ["default", "lifted"])
async def test_one_ip_holding_many_public_connections_cannot_stop_commands(
    stub: StubBackend, tmp_path: Path, per_ip_cap: str
) -> None:
    extra = {"EDGEWARD_PUBLIC_MAX_CONNECTIONS_PER_IP": "1000000"} if per_ip_cap == "lifted" else {}
    gateway_key = Signer.generate()
    async with served_with_fd_limit(stub, tmp_path, gateway_key, **extra) as ports:
        signer = Signer.generate()
        public_url = f"http://127.0.0.1:{ports['public']}"
        device = Device(signer, await login_with_stub_mailbox(public_url, stub.base_url, "fd@example.com", signer), "")
        with own_fd_limit_raised():
            held = await asyncio.to_thread(flood, ports["public"], FLOOD)
            try:
                data = device.request("user.echo", b'{"n": 1}')
                async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
                    answer = await channel.unary_unary(EXECUTE)(data, timeout=30)
                request_id = gateway_pb2.ExecuteCommandRequest.FromString(data).envelope.request_id
                response = gateway_pb2.ExecuteCommandResponse.FromString(answer)
                assert verify_response(response, gateway_key.public_key, request_id).result_code == "ok"
                assert await healthz(ports["admin"]) == 200
                async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{ports['admin']}/metrics") as r:
                    metrics = await r.text()
            finally:
                for sock in held:
                    sock.close()
    refused = [line for line in metrics.splitlines() if line.startswith("edgeward_http_connections_refused_total{")]
    total = sum(float(line.rsplit(" ", 1)[1]) for line in refused if 'listener="public"' in line)
    assert total > 0, metrics  # the flood met a cap: it was not simply absorbed
    cap = "per_ip" if per_ip_cap == "default" else "total"
    assert any(f'cap="{cap}"' in line and not line.endswith(" 0.0") for line in refused), refused


async def run_to_end(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    """``edgeward ARGS`` to its exit (at most 60 s): its status and what it wrote to stderr."""
    proc = await spawn([sys.executable, "-m", "edgeward", *args], env, tmp_path / "out.log", tmp_path / "err.log")
    returncode = await asyncio.to_thread(proc.wait, 60)
    return returncode, (tmp_path / "err.log").read_text()


@pytest.mark.parametrize("listener", ["public HTTP", "gRPC", "admin HTTP"])
async def test_a_port_in_use_is_one_line_and_status_4(stub: StubBackend, tmp_path: Path, listener: str) -> None:
    save_signer(Signer.generate(), tmp_path / "gateway.key")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        ports = free_ports("grpc", "public", "admin")
        ports[{"public HTTP": "public", "gRPC": "grpc", "admin HTTP": "admin"}[listener]] = busy
        env = serve_env(stub, tmp_path / "gateway.key", ports, **FLOOD_HELD_OPEN)
        returncode, text = await run_to_end(["serve"], env, tmp_path)
    assert returncode == EXIT_CANNOT_LISTEN, text
    assert f"edgeward serve: cannot listen for {listener} on 127.0.0.1:{busy}: " in text, text
    assert "Traceback" not in text, text


async def test_the_stub_backend_reports_a_port_in_use_the_same_way(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | {
            "EDGEWARD_STUB_HTTP_ADDR": f"127.0.0.1:{busy}",
            "EDGEWARD_STUB_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        }
        returncode, text = await run_to_end(["stub-backend"], env, tmp_path)
    assert returncode == EXIT_CANNOT_LISTEN, text
    assert f"edgeward stub-backend: cannot listen for stub HTTP on 127.0.0.1:{busy}: " in text, text
    assert "Traceback" not in text, text
