"""The logs of a gateway under real traffic (issue 13.1, docs/logging.md).

``edgeward serve`` runs as a process with its default settings; its whole stderr must be JSON
lines, one access line per call with the request's ids, and none of the secrets that passed
through it: the device's and the gateway's seeds, a request's signature, the login codes (a
right and a wrong one) and the payload's content. Sampling and the switch are checked on an
in-process gateway whose ``edgeward.access`` records are captured. Under a supervisor, each
worker's lines name its slot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from edgeward.client import (
    build_signed_request,
    confirm_email_code,
    read_stub_mailbox,
    send_email_code,
)
from edgeward.devtools.ports import free_ports
from edgeward.native.crypto import Signer
from edgeward.native.keys import save_signer
from edgeward.runtime import ACCESS_LOGGER
from edgeward.stub import StubBackend
from tests.integration.conftest import Device, GatewayFactory, call, login, rejected
from tests.integration.streams import Stream, eventually, serve_env, spawn
from tests.support.redis_server import RedisServer

EMAIL = "grace@example.com"
PAYLOAD_MARKER = "payload-marker-5f0c1e9a"
WRONG_CODE = "97531864"  # 8 digits, as the syntax allows: a code no real challenge was mailed
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_START_S = 60.0
SETSID = shutil.which("setsid") or "/usr/bin/setsid"


def _forms(secret: bytes) -> list[str]:
    """The ways a byte secret could leak into a text log."""
    return [base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode().rstrip("="), secret.hex()]


async def _ready(admin_port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin_port}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def _public_post(url: str, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def _traffic(ports: dict[str, int], stub: StubBackend, device: Signer, gateway_key: Signer) -> dict[str, Any]:
    """The public login (with a wrong code first), an accepted, a forged and an undecodable command,
    and a subscription; what the log lines must show about them."""
    public = f"http://127.0.0.1:{ports['public']}"
    challenge = await send_email_code(public, EMAIL)
    code = await read_stub_mailbox(stub.base_url, EMAIL)
    wrong_status, wrong_answer = await _public_post(
        f"{public}/api/v1/public/auth/confirm-email-code",
        {"challenge_id": challenge, "code": WRONG_CODE, "client_public_key": device.public_key_b64},
    )
    assert wrong_status >= 400, wrong_answer
    dsid = await confirm_email_code(public, challenge, code, device.public_key_b64)
    payload = orjson.dumps({"note": PAYLOAD_MARKER})
    ok = build_signed_request(device, dsid, "user.echo", payload, trace_id=TRACE_ID)
    forged = build_signed_request(device, dsid, "user.echo", payload)
    forged.signature = bytes(64 - 1) + b"\x01"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
        await call(channel, ok.SerializeToString())
        assert (await rejected(channel, forged.SerializeToString())).reason == "invalid_signature"
        assert (await rejected(channel, b"\xff\xff\xff")).reason == "invalid_envelope"
        stream = Stream(channel, Device(device, dsid, EMAIL), gateway_key=gateway_key.public_key)
        await stream.opened()
        stream.cancel()
    return {
        "dsid": dsid,
        "code": code,
        "wrong": (wrong_status, wrong_answer["error"]["code"]),
        "ok": ok,
        "forged": forged,
        "subscribe_id": stream.request.envelope.request_id,
    }


def _secrets(seen: dict[str, Any], device: Signer, gateway_key: Signer) -> list[str]:
    found = [PAYLOAD_MARKER, EMAIL]
    for secret in (device.seed, gateway_key.seed, seen["ok"].signature, seen["forged"].signature):
        found += _forms(secret)
    return found


async def test_serve_writes_json_lines_with_access_fields_and_no_secrets(stub: StubBackend, tmp_path: Path) -> None:
    gateway_key, device = Signer(bytes(range(100, 132))), Signer(bytes(range(200, 232)))
    save_signer(gateway_key, tmp_path / "gateway.key")
    ports = free_ports("grpc", "public", "admin")
    env = serve_env(stub, tmp_path / "gateway.key", ports)
    log = tmp_path / "serve.log"
    proc = await spawn([sys.executable, "-m", "edgeward", "serve"], env, log)
    try:
        deadline = time.monotonic() + _START_S
        while not await _ready(ports["admin"]):
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start:\n" + log.read_text()
            await asyncio.sleep(0.05)
        seen = await _traffic(ports, stub, device, gateway_key)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    assert proc.returncode == 0, log.read_text()

    text = log.read_text()
    lines = [orjson.loads(line) for line in text.splitlines()]  # every line is one JSON object
    for line in lines:
        assert TIME.match(line["time"]) and line["level"] and line["logger"] and "message" in line, line
        assert line["worker"] == {"pid": proc.pid}, line
    access = [line for line in lines if line["logger"] == ACCESS_LOGGER]
    by_outcome = {(line["method"], line["outcome"]): line for line in access}
    ok, forged = seen["ok"].envelope, seen["forged"].envelope

    line = by_outcome["ExecuteCommand", "ok"]
    assert line["grpc_code"] == "OK" and line["result_code"] == "ok" and line["peer"].startswith("ipv4:127.0.0.1:")
    assert (line["message_type"], line["request_id"], line["trace_id"]) == ("user.echo", ok.request_id, TRACE_ID)
    assert line["device_session_id"] == seen["dsid"] and line["duration_ms"] >= 0
    line = by_outcome["ExecuteCommand", "invalid_signature"]
    assert line["grpc_code"] == "UNAUTHENTICATED" and line["request_id"] == forged.request_id
    line = by_outcome["ExecuteCommand", "invalid_envelope"]
    assert line["grpc_code"] == "INVALID_ARGUMENT" and "request_id" not in line  # nothing decoded
    line = by_outcome["SubscribeEvents", "ok"]
    assert line["message_type"] == "gateway.subscribe" and line["request_id"] == seen["subscribe_id"]
    send, confirm = "POST /api/v1/public/auth/send-email-code", "POST /api/v1/public/auth/confirm-email-code"
    assert by_outcome[send, "ok"]["http_status"] == 200 and by_outcome[confirm, "ok"]["http_status"] == 200
    wrong_status, wrong_code = seen["wrong"]
    assert by_outcome[confirm, wrong_code]["http_status"] == wrong_status
    assert len(access) == 7, access  # one line per call, no more

    leaked = [secret for secret in _secrets(seen, device, gateway_key) if secret in text]
    # A code is digits: found only as a token of its own, not inside a pid or a hex id.
    codes = (seen["code"], WRONG_CODE)
    leaked += [code for code in codes if re.search(rf"(?<![0-9a-zA-Z]){code}(?![0-9a-zA-Z])", text)]
    assert not leaked, f"secrets in the log: {leaked}"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access_records() -> Iterator[list[logging.LogRecord]]:
    """The ``edgeward.access`` records written during the test (at INFO, as ``serve`` logs)."""
    logger, handler = logging.getLogger(ACCESS_LOGGER), _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.parametrize("overrides", [{"access_log_sample": 0.0}, {"access_log": False}])
async def test_sampling_keeps_rejections_and_the_switch_stops_all(
    start_gateway: GatewayFactory, stub: StubBackend, access_records: list[logging.LogRecord],
    overrides: dict[str, Any],
) -> None:
    gateway = await start_gateway(**overrides)
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        await call(channel, device.request("user.echo"))
        assert (await rejected(channel, b"\xff")).reason == "invalid_envelope"
    outcomes = [(r.__dict__["method"], r.__dict__["outcome"]) for r in access_records]
    if overrides.get("access_log") is False:
        assert outcomes == []
    else:  # nothing accepted is logged at 0, every refusal is
        assert outcomes == [("ExecuteCommand", "invalid_envelope")]


async def test_every_accepted_call_is_logged_by_default(
    start_gateway: GatewayFactory, stub: StubBackend, access_records: list[logging.LogRecord]
) -> None:
    gateway = await start_gateway()
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        for _ in range(3):
            await call(channel, device.request("user.echo"))
    outcomes = [(r.__dict__["method"], r.__dict__["outcome"]) for r in access_records]
    assert outcomes.count(("ExecuteCommand", "ok")) == 3
    assert outcomes.count(("POST /api/v1/public/auth/confirm-email-code", "ok")) == 1


@pytest.mark.asyncio(loop_factories=["asyncio"])  # the loop is this process's, not the gateway's
async def test_each_worker_names_its_slot(stub: StubBackend, redis_server: RedisServer, tmp_path: Path) -> None:
    save_signer(Signer.generate(), tmp_path / "gateway.key")
    ports = free_ports("grpc", "public", "admin")
    env = serve_env(stub, tmp_path / "gateway.key", ports) | {
        "EDGEWARD_REDIS_URL": redis_server.url,
        "EDGEWARD_WORKERS": "2",
    }
    log = tmp_path / "serve.log"
    proc = await spawn([SETSID, sys.executable, "-m", "edgeward", "serve"], env, log)  # its own process group
    try:
        await eventually(lambda: log.read_text().count("serving (private admin port") == 2, "two workers serving")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
    lines = [orjson.loads(line) for line in log.read_text().splitlines()]
    supervisor = [line["worker"] for line in lines if line["worker"]["pid"] == proc.pid]
    workers = {(w["pid"], w.get("index")) for line in lines if (w := line["worker"])["pid"] != proc.pid}
    assert supervisor and all(worker == {"pid": proc.pid} for worker in supervisor)
    # Two workers, each with one slot on all its lines: a line without its index would add a pair.
    assert sorted(index for _, index in workers) == [0, 1], workers
