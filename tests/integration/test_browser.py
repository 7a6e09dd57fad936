"""examples/web in a real headless Chromium (Debian's package, ``make deps``) against real processes.

The stub backend, ``edgeward serve`` with its gRPC-Web listener, and a static file server for
examples/web each run as a process on free loopback ports; the page's origin (the static server's)
is the one ``EDGEWARD_CORS_ORIGINS`` allows. The browser logs in through the public auth listener with
a WebCrypto Ed25519 key, sends signed commands and opens streams over gRPC-Web (binary and text
mode), and verifies every answer and event with the gateway's public key; the test pushes an event
and revokes the session through the stub's admin API and sees both in the page.

The tests are synchronous and run their browser session with ``asyncio.run``: the event loop of this
process only drives the DevTools connection (the gateway runs as its own process, on uvloop), so the
two-loop parametrisation of the other integration tests would only start the whole stack twice.

Without Chromium these tests fail, telling to run ``make deps``, as the redis-server tests do.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest

from edgeward._pb import gateway_pb2
from edgeward.devtools.ports import NotListening, free_port, free_ports, wait_listening
from edgeward.devtools.processes import stop_all
from edgeward.native.crypto import Signer
from edgeward.native.keys import save_signer
from edgeward.reasons import Reason, Rejection
from edgeward.rpc_errors import status_details
from tests.support.chromium import Chromium, Page, chromium_executable

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "examples" / "web"
VECTORS: dict[str, Any] = json.loads((ROOT / "tests" / "vectors" / "signing.json").read_text())
EDGEWARD = [sys.executable, "-m", "edgeward"]
UP_TIMEOUT_S = 60.0  # generous, as elsewhere: only a failing start waits this long
WAIT_MS = 30_000  # the page's own bounded waits (events, a stream's end)
EMAIL = "ada@example.com"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)


# --- the unit checks of edgeward-web.js ----------------------------------------------------------------


def _hex(message: Any) -> str:
    return bytes(message.SerializeToString()).hex()


def _envelope(vector: dict[str, Any]) -> dict[str, Any]:
    return {**vector["envelope"], "payload_hash": bytes.fromhex(vector["payload_hash_hex"])}


# Unknown fields a newer gateway might send, of every wire type: varint (15), fixed64 (100),
# length-delimited (16) and fixed32 (17); the last part is the envelope (field 1) again holding only
# an unknown field, which protobuf merges into the envelope: the decoder must skip and merge.
_UNKNOWN_BEFORE = bytes.fromhex("7805") + bytes.fromhex("a106") + bytes(8)
_UNKNOWN_AFTER = bytes.fromhex("820103616263") + bytes.fromhex("8d01") + bytes(4) + bytes.fromhex("0a027801")


def _protobuf_fixtures() -> dict[str, Any]:
    """The contract's messages built from the vectors and encoded by the Python protobuf runtime."""
    requests = []
    for v in VECTORS["request"]:
        envelope = gateway_pb2.RequestEnvelope(**_envelope(v))
        payload, signature = bytes.fromhex(v["payload_bytes_hex"]), bytes.fromhex(v["signature_hex"])
        requests.append({
            "name": v["name"],
            "execute_hex": _hex(
                gateway_pb2.ExecuteCommandRequest(envelope=envelope, payload_bytes=payload, signature=signature)
            ),
            "subscribe_hex": _hex(
                gateway_pb2.SubscribeEventsRequest(envelope=envelope, payload_bytes=payload, signature=signature)
            ),
        })
    answers: dict[str, list[dict[str, str]]] = {"response": [], "event": []}
    for kind in ("response", "event"):
        for v in VECTORS[kind]:
            payload, signature = bytes.fromhex(v["payload_bytes_hex"]), bytes.fromhex(v["signature_hex"])
            message: gateway_pb2.ExecuteCommandResponse | gateway_pb2.GatewayEvent
            if kind == "response":
                message = gateway_pb2.ExecuteCommandResponse(
                    envelope=gateway_pb2.ResponseEnvelope(**_envelope(v)), payload_bytes=payload, signature=signature
                )
            else:
                message = gateway_pb2.GatewayEvent(
                    envelope=gateway_pb2.EventEnvelope(**_envelope(v)), payload_bytes=payload, signature=signature
                )
            encoded = bytes(message.SerializeToString())
            with_unknown = _UNKNOWN_BEFORE + encoded + _UNKNOWN_AFTER
            assert type(message).FromString(with_unknown).envelope.timestamp_ms == message.envelope.timestamp_ms
            answers[kind].append(
                {"name": v["name"], "hex": encoded.hex(), "with_unknown_fields_hex": with_unknown.hex()}
            )
    return {"request": requests, **answers}


def _status_fixtures() -> list[dict[str, Any]]:
    """grpc-status-details-bin as the gateway writes it (edgeward.rpc_errors)."""
    rejections = (
        Rejection(Reason.SESSION_REVOKED),
        Rejection(Reason.RATE_LIMITED, metadata={"budget": "session"}, retry_after_ms=1_500),
        Rejection(Reason.STALE_REQUEST, metadata={"server_time_ms": "1700000000000"}),
    )
    return [
        {
            "code": rejection.reason.code.value[0],
            "reason": rejection.reason.wire,
            "metadata": rejection.metadata,
            "retry_after_ms": rejection.retry_after_ms,
            "b64": base64.b64encode(status_details(rejection)).decode(),
        }
        for rejection in rejections
    ]


def _vectors_for_js() -> dict[str, Any]:
    """The vectors with every timestamp_ms as a string: int64 extremes do not fit a JS Number."""
    doc: dict[str, Any] = json.loads(json.dumps(VECTORS))
    for kind in ("request", "response", "event"):
        for v in doc[kind]:
            v["envelope"]["timestamp_ms"] = str(v["envelope"]["timestamp_ms"])
    return doc


# --- processes --------------------------------------------------------------------------------------------


class Processes:
    """Child processes of one test, each logging to a file; all stopped (bounded) at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")}

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"{len(self.procs)}-{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, env=self.env | (env or {}), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def wait_listening(self, port: int, what: str) -> None:
        try:
            wait_listening(port, *self.procs, what=what, timeout_s=UP_TIMEOUT_S)
        except NotListening as exc:
            pytest.fail(f"{exc}\n{self.output()}")

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in self.logs)

    def stop(self) -> None:
        stop_all(self.procs, timeout_s=15.0)


def _static_site(processes: Processes) -> str:
    """examples/web served by Python's http.server, as the README says; its origin."""
    port = free_port()
    processes.spawn(
        "static", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(WEB)]
    )
    processes.wait_listening(port, "the static file server")
    return f"http://127.0.0.1:{port}"


class Stack:
    """The stub backend and a gateway with its gRPC-Web listener allowing ``origin``, as processes."""

    def __init__(self, processes: Processes, origin: str) -> None:
        self.processes = processes
        self.signer = Signer.generate()
        key_file = processes.tmp_path / "gateway.key"
        save_signer(self.signer, key_file)
        stub_http, stub_grpc = free_ports("stub_http", "stub_grpc").values()
        self.stub_url = f"http://127.0.0.1:{stub_http}"
        processes.spawn("stub", [*EDGEWARD, "stub-backend"], {
            "EDGEWARD_STUB_HTTP_ADDR": f"127.0.0.1:{stub_http}",
            "EDGEWARD_STUB_GRPC_ADDR": f"127.0.0.1:{stub_grpc}",
            "EDGEWARD_LOG_FORMAT": "text",
        })
        processes.wait_listening(stub_http, "the stub backend")
        grpc_port, public_port, admin_port, web_port = free_ports("grpc", "public", "admin", "web").values()
        processes.spawn("gateway", [*EDGEWARD, "serve"], {
            "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{public_port}",
            "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{admin_port}",
            "EDGEWARD_GRPC_WEB_ADDR": f"127.0.0.1:{web_port}",
            "EDGEWARD_CORS_ORIGINS": origin,
            "EDGEWARD_BACKEND_BASE_URL": self.stub_url,
            "EDGEWARD_BACKEND_PUSH_ADDR": f"127.0.0.1:{stub_grpc}",
            "EDGEWARD_SIGNING_KEY_FILE": str(key_file),
            "EDGEWARD_WORKERS": "1",
            "EDGEWARD_LOG_FORMAT": "text",
        })
        for port, what in ((web_port, "the gRPC-Web listener"), (public_port, "the public auth listener"),
                           (admin_port, "the admin listener")):
            processes.wait_listening(port, what)
        self.grpc_web_url = f"http://127.0.0.1:{web_port}"
        self.public_url = f"http://127.0.0.1:{public_port}"
        self._wait_push_connected(f"http://127.0.0.1:{admin_port}/readyz")

    def _wait_push_connected(self, readyz: str) -> None:
        """Until the gateway follows the stub's push stream (reported by /readyz), bounded."""
        deadline = time.monotonic() + UP_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(readyz, timeout=5) as resp:
                    if json.loads(resp.read())["push"]["connected"]:
                        return
            except OSError:
                pass  # 503 while not ready yet, or a refused connection
            if time.monotonic() > deadline:
                pytest.fail(f"the gateway did not connect to the stub's push stream\n{self.processes.output()}")
            time.sleep(0.05)

    def page_url(self, origin: str, mode: str) -> str:
        query = {"grpc": self.grpc_web_url, "public": self.public_url, "key": self.signer.public_key_b64, "mode": mode}
        return f"{origin}/index.html?{urlencode(query)}"


class RunningStack:
    """Context manager: two static sites (the allowed origin, and another one) and a Stack allowing
    the first; all stopped at the end, with their logs printed on a failure."""

    def __init__(self, tmp_path: Path) -> None:
        self.processes = Processes(tmp_path)

    def __enter__(self) -> tuple[str, str, Stack]:
        try:
            origin, foreign = _static_site(self.processes), _static_site(self.processes)
            return origin, foreign, Stack(self.processes, origin)
        except BaseException:
            self.processes.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.processes.stop()
        if exc is not None:
            print(self.processes.output())  # shown by pytest with the failure


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[str]:
    chromium_executable()
    processes = Processes(tmp_path)
    try:
        yield _static_site(processes)
    finally:
        processes.stop()


# --- the stub's admin API -----------------------------------------------------------------------------------


async def _stub(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> dict[str, Any]:
    async with http.request(method, url, json=body) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, (url, answer)
        return answer


# --- the tests ------------------------------------------------------------------------------------------------


def test_web_client_unit_checks_pass_in_chromium(static_site: str) -> None:
    fixtures = {"vectors": _vectors_for_js(), "protobuf": _protobuf_fixtures(), "statusDetails": _status_fixtures()}

    async def run() -> tuple[Any, list[str]]:
        async with Chromium() as browser:
            page = await browser.new_page(f"{static_site}/tests.html")
            return await page.call("runEdgewardTests", fixtures, timeout_s=60), page.errors

    result, errors = asyncio.run(run())
    assert result["failed"] == [], json.dumps(result["failed"], indent=2)
    vector_count = sum(len(VECTORS[kind]) for kind in ("request", "response", "event"))
    assert len(result["passed"]) >= 2 * vector_count, result["passed"]  # vectors and protobuf, each case
    assert errors == []


async def _expect_events(page: Page, stream: int, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await page.call("edgewardApp.waitForEvents", stream, count, WAIT_MS, timeout_s=60)
    return events


# The "Send signed command" button, as a person uses it: fill the form, click, read what it shows.
_CLICK_EXECUTE = """new Promise((resolve) => {
  const shown = document.getElementById("command-result");
  new MutationObserver(() => resolve(JSON.parse(shown.textContent))).observe(shown, {childList: true});
  document.getElementById("message-type").value = "user.profile.update";
  document.getElementById("payload").value = '{"display_name": "Ada L."}';
  document.getElementById("execute").click();
})"""


# One command sent twice as the very same signed request (same id, timestamp and payload).
_SAME_REQUEST_TWICE = """(async () => {
  const client = edgewardApp.state.client;
  const options = {requestId: edgeward.newRequestId(), timestampMs: Date.now()};
  const answers = [];
  for (const _ of [1, 2]) answers.push(await client.execute("user.echo", {n: 1}, options));
  return answers.map((r) => ({
    requestId: r.requestId, timestampMs: r.timestampMs, replayed: r.replayed, payload: r.json(),
  }));
})()"""


# Run in a page of an origin the gateway does not allow: the public auth call, and a command.
_FOREIGN_CALLS = """(async () => {
  const out = {};
  try { await edgeward.sendEmailCode(%(public)s, "eve@example.com"); out.auth = "answered"; }
  catch (err) { out.auth = `${err.name}: ${err.message}`; }
  const client = new edgeward.EdgewardClient({
    grpcWebUrl: %(grpc)s, gatewayKey: await edgeward.importGatewayKey(%(key)s),
    deviceKey: await edgeward.generateDeviceKey(), deviceSessionId: "ds-foreign-page",
  });
  try { await client.execute("user.profile.get", {}, {attempts: 1}); out.grpc = "answered"; }
  catch (err) { out.grpc = `${err.name}: ${err.reason}`; }
  return out;
})()"""


async def _foreign_origin_is_refused(browser: Chromium, foreign: str, stack: Stack) -> None:
    """The browser itself refuses both listeners to a page whose origin EDGEWARD_CORS_ORIGINS lacks."""
    page = await browser.new_page(stack.page_url(foreign, "binary"))
    values = {"public": stack.public_url, "grpc": stack.grpc_web_url, "key": stack.signer.public_key_b64}
    outcome = await page.evaluate(_FOREIGN_CALLS % {k: json.dumps(v) for k, v in values.items()})
    assert outcome == {"auth": "TypeError: Failed to fetch", "grpc": "GatewayError: network error: Failed to fetch"}
    refused = [error for error in page.errors if "has been blocked by CORS policy" in error]
    assert len(refused) == 2, page.errors


async def _browser_session(origin: str, foreign: str, stack: Stack) -> None:
    async with Chromium() as browser, aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        await _foreign_origin_is_refused(browser, foreign, stack)
        page = await browser.new_page(stack.page_url(origin, "binary"))

        # Login: a WebCrypto key, the code "mailed" by the stub, its public key bound to a session.
        public_key = await page.call("edgewardApp.newKey")
        assert len(base64.b64decode(public_key)) == 32
        challenge_id = await page.call("edgewardApp.sendCode", EMAIL)
        mailbox = await _stub(http, "GET", f"{stack.stub_url}/api/v1/internal/stub/mailbox/{quote(EMAIL, safe='@')}")
        assert mailbox["challenge_id"] == challenge_id
        session_id = await page.call("edgewardApp.confirm", mailbox["code"])
        session = (await _stub(http, "GET", f"{stack.stub_url}/api/v1/internal/sessions/{session_id}"))["session"]
        assert session["client_public_key"] == public_key and session["status"] == "active"

        # Signed commands in both modes, each answer verified in the page (hash, signature, request id).
        for mode in ("binary", "text"):
            outcome = await page.call("edgewardApp.execute", "user.profile.get", "{}", mode)
            assert outcome["ok"] is True, outcome
            assert outcome["resultCode"] == "ok" and outcome["replayed"] is False
            assert outcome["payload"]["profile"]["email"] == EMAIL, outcome
        clicked = await page.evaluate(_CLICK_EXECUTE)
        assert clicked["ok"] is True and clicked["payload"]["profile"]["display_name"] == "Ada L.", clicked
        echo = await page.call("edgewardApp.execute", "user.echo", '{"hello": "browser"}', "text")
        assert echo["ok"] is True and echo["payload"]["echo"] == {"hello": "browser"}, echo
        assert echo["payload"]["request_id"] == echo["requestId"] and echo["payload"]["device_session_id"] == session_id
        # The very same signed request sent again gets the first answer, marked replayed (trailer frame).
        twice = await page.evaluate(_SAME_REQUEST_TWICE)
        assert twice[0]["replayed"] is False and twice[1]["replayed"] is True, twice
        assert {**twice[0], "replayed": True} == twice[1], twice
        # A refusal is a trailers-only answer: the status in the HTTP headers, exposed by CORS.
        unknown = await page.call("edgewardApp.execute", "user.nothing.here", "{}", "binary")
        assert (unknown["error"]["codeName"], unknown["error"]["reason"], unknown["error"]["trailersOnly"]) == (
            "UNIMPLEMENTED", "unknown_message_type", True
        ), unknown

        # Two streams, one per mode: each opens with its own gateway.server_time.
        streams = {"binary": await page.call("edgewardApp.subscribe", "binary"),
                   "text": await page.call("edgewardApp.subscribe", "text")}
        for index in streams.values():
            (greeting,) = await _expect_events(page, index, 1)
            assert greeting["eventType"] == "gateway.server_time", greeting
            assert greeting["payload"]["server_time_ms"] == greeting["timestampMs"]

        # An event pushed to the user reaches both streams, verified.
        pushed = await _stub(http, "POST", f"{stack.stub_url}/api/v1/internal/stub/events", {
            "user_id": session["user_id"], "event_type": "test.browser", "payload": {"hello": "page"},
        })
        assert pushed["gateways"] >= 1, pushed
        for index in streams.values():
            event = (await _expect_events(page, index, 2))[1]
            assert (event["eventId"], event["eventType"], event["payload"]) == (
                pushed["event_id"], "test.browser", {"hello": "page"}
            ), event

        # Revoking the session ends both streams with the contract's reason (the trailer frame).
        await _stub(http, "POST", f"{stack.stub_url}/api/v1/internal/sessions/{session_id}/revoke",
                    {"reason_code": "admin_revoke", "actor": {"type": "system"}})
        for mode, index in streams.items():
            end = await page.call("edgewardApp.streamEnd", index, WAIT_MS, timeout_s=60)
            assert end["ok"] is True, (mode, end)
            assert (end["codeName"], end["reason"], end["events"]) == ("FAILED_PRECONDITION", "session_revoked", 2), end
            assert end["trailersOnly"] is False, end  # after events: the trailer frame
        refused = (await page.call("edgewardApp.execute", "user.profile.get", "{}", "text"))["error"]
        assert (refused["codeName"], refused["reason"], refused["trailersOnly"]) == (
            "FAILED_PRECONDITION", "session_revoked", True
        ), refused

        # The page shows what happened.
        shown = await page.evaluate("document.getElementById('events').innerText")
        assert "test.browser" in shown and shown.count("ended: FAILED_PRECONDITION session_revoked") == 2, shown
        assert page.errors == []


def test_browser_logs_in_commands_subscribes_and_sees_an_event_and_a_revocation(tmp_path: Path) -> None:
    chromium_executable()  # without it, fail before starting the stack
    with RunningStack(tmp_path) as (origin, foreign, stack):
        asyncio.run(_browser_session(origin, foreign, stack))
