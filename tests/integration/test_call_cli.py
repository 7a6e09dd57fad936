"""``edgeward call`` as a developer runs it: a process against a gateway and stub on loopback.

- ``--attempts N``: a command whose first call runs out of its deadline while the backend holds
  it (tests/support/hanging_backend.py) is resent as the very same signed request; the resends
  are told ``request_in_flight`` while the first call runs, and once the backend answers, a resend
  gets the kept answer (trailer ``edgeward-replayed``, which the CLI reports): the backend saw one
  call. ``--attempts 1`` does not resend. The SDK-level version is
  tests/integration/test_idempotent_retry.py.
- Wait for ready (docs/workers.md): a call whose first connection is reset, as a retiring
  worker's listener does in a rolling restart, waits for the gateway that then listens on that
  port, with ``--attempts 1`` so that no resend explains it; ``--fail-fast`` fails UNAVAILABLE.

Orders of events, not durations: the resends are seen by the gateway's counters before the
backend is released, and the gateway starts only after the call's connection was accepted and reset.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from edgeward.config import Address
from edgeward.devtools.ports import free_port
from edgeward.gateway.server import Gateway
from edgeward.stub import StubBackend
from tests.integration.conftest import GatewayFactory
from tests.integration.streams import WAIT_S, eventually, spawn
from tests.integration.test_subscribe_cli import cli_env
from tests.support.hanging_backend import HangingBackend

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])  # the CLI is a process of its own: one run is enough


class Call:
    """A running ``edgeward call``: its stdout and stderr each in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err

    @classmethod
    async def start(cls, env: dict[str, str], files: Path, *args: str) -> Call:
        out, err = files.with_suffix(".out"), files.with_suffix(".err")
        proc = await spawn([sys.executable, "-m", "edgeward", "call", *args], env, out, err)
        return cls(proc, out, err)

    async def finish(self) -> tuple[int, str, str]:
        """Exit status, stdout and stderr, once it exits (bounded)."""
        try:
            await eventually(lambda: self.proc.poll() is not None, "edgeward call to exit", within_s=WAIT_S * 2)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, self.out.read_text(), self.err.read_text()


def executed(gateway: Gateway, outcome: str) -> float:
    """ExecuteCommand calls the gateway answered with ``outcome`` (a reason code, ``ok``, ``replayed``)."""
    labels = {"rpc": "ExecuteCommand", "outcome": outcome}
    return gateway.metrics.registry.get_sample_value("edgeward_requests_total", labels) or 0.0


async def test_call_attempts_resends_the_same_request_and_prints_the_kept_answer(
    start_gateway: GatewayFactory, stub: StubBackend, hanging_backend: HangingBackend, tmp_path: Path
) -> None:
    gateway = await start_gateway(backend_base_url=hanging_backend.base_url)
    env = cli_env(gateway, stub, tmp_path / "client")
    call = await Call.start(env, tmp_path / "call", "user.echo", '{"n": 1}', "--timeout", "0.5", "--attempts", "60")
    await asyncio.wait_for(hanging_backend.echo_received.wait(), WAIT_S)
    # The first call's deadline passed and the CLI resent it while the backend still holds the first.
    await eventually(lambda: executed(gateway, "request_in_flight") >= 1, "a resend told request_in_flight")
    hanging_backend.release.set()
    status, out, err = await call.finish()
    assert status == 0, err
    assert orjson.loads(out)["echo"] == {"n": 1}
    assert "result_code=ok" in err and "(the first call's answer, kept by the gateway)" in err
    assert executed(gateway, "replayed") >= 1
    assert stub.calls["user.echo"] == 1


async def test_call_with_one_attempt_does_not_resend(
    start_gateway: GatewayFactory, stub: StubBackend, hanging_backend: HangingBackend, tmp_path: Path
) -> None:
    gateway = await start_gateway(backend_base_url=hanging_backend.base_url)
    env = cli_env(gateway, stub, tmp_path / "client")
    call = await Call.start(env, tmp_path / "call", "user.echo", '{"n": 2}', "--timeout", "0.5", "--attempts", "1")
    await asyncio.wait_for(hanging_backend.echo_received.wait(), WAIT_S)
    status, _, err = await call.finish()  # while the backend still holds the command
    assert status == 3 and "DEADLINE_EXCEEDED" in err, err
    # Every call the process made was answered before it exited; a resend would have been
    # told request_in_flight (the first still runs) and counted before its answer.
    assert executed(gateway, "request_in_flight") == 0 and executed(gateway, "replayed") == 0
    hanging_backend.release.set()
    await eventually(lambda: stub.calls["user.echo"] == 1, "the held command to reach the stub")


async def test_call_waits_for_the_gateway_through_a_reset_connection_unless_fail_fast(
    start_gateway: GatewayFactory, stub: StubBackend, tmp_path: Path
) -> None:
    first = await start_gateway()  # logs the CLI in (public listener): the session is the stub's
    port = free_port()
    env = cli_env(first, stub, tmp_path / "client") | {"EDGEWARD_GRPC_TARGET": f"127.0.0.1:{port}"}

    fast = await Call.start(
        env, tmp_path / "fast", "user.echo", "--attempts", "1", "--timeout", str(WAIT_S), "--fail-fast"
    )
    status, _, err = await fast.finish()
    assert status == 3 and "UNAVAILABLE" in err, err  # nothing listens: at once, not at the deadline

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    listener.setblocking(False)
    try:
        call = await Call.start(
            env, tmp_path / "waiting", "user.echo", '{"n": 3}', "--attempts", "1", "--timeout", str(WAIT_S)
        )
        connection, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(listener), WAIT_S)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()  # reset, before any HTTP/2: the channel fails to connect
    finally:
        listener.close()
    assert call.proc.poll() is None
    await start_gateway(grpc_addr=Address("127.0.0.1", port))
    status, out, err = await call.finish()
    assert status == 0, err
    assert orjson.loads(out)["echo"] == {"n": 3}
