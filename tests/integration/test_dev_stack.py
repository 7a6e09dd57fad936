"""``edgeward dev`` and ``edgeward call`` as a developer runs them: real processes, real sockets.

This is the README's promise: the local stack comes up with one command, and a signed command
sent with ``edgeward call`` prints a verified answer. Every port is a free loopback port, so the
test never meets a developer's own ``make run``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeward.devtools.dev import BROWSER_EXAMPLE_ORIGIN
from edgeward.devtools.ports import NotListening, free_ports, is_listening, wait_listening

EDGEWARD = [sys.executable, "-m", "edgeward"]
_UP_TIMEOUT_S = 60.0


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A running ``edgeward dev``; yields the environment ``edgeward call`` needs to reach it."""
    ports = free_ports("stub_http", "stub_grpc", "grpc", "public", "admin", "grpc_web")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")}
    env |= {
        "EDGEWARD_STUB_HTTP_ADDR": f"127.0.0.1:{ports['stub_http']}",
        "EDGEWARD_STUB_GRPC_ADDR": f"127.0.0.1:{ports['stub_grpc']}",
        "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{ports['grpc']}",
        "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{ports['public']}",
        "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{ports['admin']}",
        "EDGEWARD_GRPC_WEB_ADDR": f"127.0.0.1:{ports['grpc_web']}",
    }
    state = tmp_path / ".edgeward" / "dev"  # the default, relative to where `make run` is started
    log = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen([*EDGEWARD, "dev"], cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        try:
            wait_listening(ports["grpc"], proc, what="edgeward dev's gateway", timeout_s=_UP_TIMEOUT_S)
            wait_listening(ports["grpc_web"], proc, what="edgeward dev's gRPC-Web", timeout_s=_UP_TIMEOUT_S)
        except NotListening as exc:
            pytest.fail(f"{exc}:\n" + (tmp_path / "dev.log").read_text())
        assert (state / "gateway.pub").exists()  # written before the gateway starts
        yield env | {
            "EDGEWARD_GRPC_TARGET": f"127.0.0.1:{ports['grpc']}",
            "EDGEWARD_PUBLIC_URL": f"http://127.0.0.1:{ports['public']}",
            "EDGEWARD_STUB_BACKEND_URL": f"http://127.0.0.1:{ports['stub_http']}",
            "EDGEWARD_GATEWAY_PUBLIC_KEY": str(state / "gateway.pub"),
            "EDGEWARD_CLIENT_STATE": str(tmp_path / "client"),
            "GRPC_WEB_URL": f"http://127.0.0.1:{ports['grpc_web']}",
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
        log.close()
    assert status == 0, (tmp_path / "dev.log").read_text()
    assert not any(is_listening(port) for port in ports.values()), "a component outlived edgeward dev"


def _call(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGEWARD, "call", *args], env=env, capture_output=True, text=True, timeout=60)


def test_call_prints_a_verified_echo_and_reuses_its_session(dev_stack: dict[str, str]) -> None:
    first = _call(dev_stack, "user.echo", '{"hello":"world"}')
    assert first.returncode == 0, first.stderr
    assert "verified response: result_code=ok" in first.stderr
    assert "logged in as" in first.stderr
    answer = json.loads(first.stdout)
    assert answer["echo"] == {"hello": "world"}
    assert answer["message_type"] == "user.echo"

    second = _call(dev_stack, "user.echo", '{"n":2}')
    assert second.returncode == 0, second.stderr
    assert "logged in as" not in second.stderr  # the saved device session was used
    assert json.loads(second.stdout)["device_session_id"] == answer["device_session_id"]


def test_call_reports_backend_errors_and_refusals_with_their_codes(dev_stack: dict[str, str]) -> None:
    backend_error = _call(dev_stack, "user.profile.update", '{"no_such_field": 1}')
    assert backend_error.returncode == 1, backend_error.stderr
    assert "result_code=invalid_profile_update" in backend_error.stderr

    refused = _call(dev_stack, "no.such.type", "{}")
    assert refused.returncode == 3
    assert "UNIMPLEMENTED unknown_message_type" in refused.stderr

    wrong_key = _call(dev_stack | {"EDGEWARD_GATEWAY_PUBLIC_KEY": "A" * 43 + "="}, "user.echo", "{}")
    assert wrong_key.returncode == 3
    assert "does not verify" in wrong_key.stderr


def test_the_browser_example_origin_may_call_the_grpc_web_listener(dev_stack: dict[str, str]) -> None:
    """``edgeward dev`` turns gRPC-Web on and lets the browser example's origin (CORS) call it."""
    preflight = urllib.request.Request(
        dev_stack["GRPC_WEB_URL"] + "/edgeward.v1.EdgeGateway/ExecuteCommand",
        method="OPTIONS",
        headers={"Origin": BROWSER_EXAMPLE_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    with urllib.request.urlopen(preflight, timeout=30) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == BROWSER_EXAMPLE_ORIGIN


def test_keygen_and_pubkey(tmp_path: Path) -> None:
    key = tmp_path / "device.key"
    made = subprocess.run([*EDGEWARD, "keygen", str(key)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert key.stat().st_mode & 0o077 == 0
    shown = subprocess.run([*EDGEWARD, "pubkey", str(key)], capture_output=True, text=True, timeout=60)
    assert shown.stdout == made.stdout and len(shown.stdout.strip()) == 44
    again = subprocess.run([*EDGEWARD, "keygen", str(key)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr
