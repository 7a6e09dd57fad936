"""``edgeward subscribe`` as a developer runs it: a process against a gateway and stub on loopback.

The resume test runs it as a script would: one run prints events and stops, events are published
while none runs, and the next run, given the ``event_id`` of the previous run's last line with
``--resume-after``, prints exactly the missed ones (the gateway's event history on a real
redis-server: docs/push.md, "Resuming a stream"), then live ones.
"""

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
from tests.integration.conftest import GATEWAY_SIGNER, Device, GatewayFactory
from tests.integration.streams import WAIT_S, eventually, post_event, push_connected, revoke, spawn, user_id
from tests.integration.test_resume import recorded
from tests.support.redis_server import RedisServer


def cli_env(gateway: Gateway, stub: StubBackend, state: Path) -> dict[str, str]:
    """The environment of an ``edgeward`` client command against ``gateway``, keeping its state in ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")}
    return env | {
        "EDGEWARD_GRPC_TARGET": f"127.0.0.1:{gateway.grpc_port}",
        "EDGEWARD_PUBLIC_URL": f"http://127.0.0.1:{gateway.public_http_port}",
        "EDGEWARD_STUB_BACKEND_URL": stub.base_url,
        "EDGEWARD_GATEWAY_PUBLIC_KEY": GATEWAY_SIGNER.public_key_b64,
        "EDGEWARD_CLIENT_STATE": str(state),
    }


def cli_device(state: Path) -> Device:
    """The device session the CLI logged in with (the CLI holds its key: a stand-in signs nothing here)."""
    session = json.loads((state / "session.json").read_text())
    return Device(Signer.generate(), session["device_session_id"], session["email"])


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
    env = cli_env(gateway, stub, tmp_path / "client")
    await push_connected(gateway)
    first = await Subscriber.start(env, tmp_path / "first", "--count", "5")
    greeting = await first.line()
    assert greeting["event_type"] == "gateway.server_time" and "server_time_ms" in greeting["payload"]
    device = cli_device(tmp_path / "client")
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


async def test_subscribe_resume_after_the_last_printed_event_id_prints_exactly_the_missed_events(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer, tmp_path: Path
) -> None:
    gateway = await start_gateway(redis_url=redis_server.url)
    await push_connected(gateway)
    env = cli_env(gateway, stub, tmp_path / "client")
    first = await Subscriber.start(env, tmp_path / "first", "--count", "3")
    assert (await first.line())["event_type"] == "gateway.server_time"
    user = await user_id(gateway, cli_device(tmp_path / "client"))
    seen = [await post_event(stub, user, {"n": n}) for n in range(2)]
    assert [(await first.line())["event_id"] for _ in seen] == seen
    status, stderr = await first.finish()
    assert status == 0, stderr

    missed = [await post_event(stub, user, {"n": n}) for n in range(2, 5)]  # no stream open
    await recorded(gateway, 5)
    position = json.loads(first.out.read_text().splitlines()[-1])["event_id"]  # a script's pick: the last line
    assert position == seen[-1]
    second = await Subscriber.start(
        env, tmp_path / "second", "--resume-after", position, "--count", str(1 + len(missed) + 1)
    )
    assert (await second.line())["event_type"] == "gateway.server_time"
    replayed = [await second.line() for _ in missed]
    assert [(e["event_id"], e["event_type"], e["payload"]) for e in replayed] == [
        (event_id, "test.event", {"n": n}) for event_id, n in zip(missed, range(2, 5), strict=True)
    ]
    marker = await post_event(stub, user, "live")
    assert (await second.line())["event_id"] == marker  # next in line: nothing was printed twice
    status, stderr = await second.finish()
    assert status == 0, stderr
    assert "logged in" not in stderr  # the same device session resumed


def test_subscribe_refuses_an_empty_resume_after() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "edgeward", "subscribe", "--resume-after", ""],
        env=env, capture_output=True, text=True, timeout=WAIT_S, check=False,
    )
    assert done.returncode == 2 and "--resume-after needs an event_id" in done.stderr
