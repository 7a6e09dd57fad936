"""``edgeward subscribe`` as a developer runs it: a process against a gateway and stub on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgeward.gateway.server import Gateway
from edgeward.native.crypto import Signer
from edgeward.stub import StubBackend
from tests.integration.conftest import GATEWAY_SIGNER, Device
from tests.integration.streams import WAIT_S, eventually, post_event, push_connected, revoke, spawn, user_id


def _env(gateway: Gateway, stub: StubBackend, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")}
    return env | {
        "EDGEWARD_GRPC_TARGET": f"127.0.0.1:{gateway.grpc_port}",
        "EDGEWARD_PUBLIC_URL": f"http://127.0.0.1:{gateway.public_http_port}",
        "EDGEWARD_STUB_BACKEND_URL": stub.base_url,
        "EDGEWARD_GATEWAY_PUBLIC_KEY": GATEWAY_SIGNER.public_key_b64,
        "EDGEWARD_CLIENT_STATE": str(state),
    }


class Subscriber:
    """A running ``edgeward subscribe``: JSON lines on stdout, messages on stderr, each in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err
        self.read = 0  # lines of ``out`` already returned

    @classmethod
    async def start(cls, env: dict[str, str], files: Path, *args: str) -> Subscriber:
        out, err = files.with_suffix(".out"), files.with_suffix(".err")
        proc = await spawn([sys.executable, "-m", "edgeward", "subscribe", *args], env, out, err)
        return cls(proc, out, err)

    def _lines(self) -> list[str]:
        return self.out.read_text().split("\n")[:-1]  # complete lines only

    async def line(self) -> Any:
        await eventually(
            lambda: len(self._lines()) > self.read or self.proc.poll() is not None,
            "a line from edgeward subscribe", within_s=WAIT_S * 3,
        )
        lines = self._lines()
        assert len(lines) > self.read, "edgeward subscribe exited:\n" + self.err.read_text()
        self.read += 1
        return json.loads(lines[self.read - 1])

    async def finish(self) -> tuple[int, str]:
        await eventually(lambda: self.proc.poll() is not None, "edgeward subscribe to exit", within_s=WAIT_S * 3)
        return self.proc.returncode, self.err.read_text()


async def test_subscribe_prints_verified_events_and_logs_in_again_after_a_revocation(
    gateway: Gateway, stub: StubBackend, tmp_path: Path
) -> None:
    env = _env(gateway, stub, tmp_path / "client")
    await push_connected(gateway)
    first = await Subscriber.start(env, tmp_path / "first", "--count", "5")
    greeting = await first.line()
    assert greeting["event_type"] == "gateway.server_time" and "server_time_ms" in greeting["payload"]
    session = json.loads((tmp_path / "client" / "session.json").read_text())
    device = Device(Signer.generate(), session["device_session_id"], session["email"])  # the CLI holds its key
    await post_event(stub, await user_id(gateway, device), {"hello": "cli"})
    event = await first.line()
    assert (event["event_type"], event["payload"]) == ("test.event", {"hello": "cli"})
    await revoke(stub, device)
    status, stderr = await first.finish()
    assert status == 3, stderr
    assert "logged in as" in stderr
    assert "the gateway ended the stream: FAILED_PRECONDITION session_revoked" in stderr

    second = await Subscriber.start(env, tmp_path / "second", "--count", "1")  # its session is refused: new login
    assert (await second.line())["event_type"] == "gateway.server_time"
    status, stderr = await second.finish()
    assert status == 0 and "logged in as" in stderr, stderr
