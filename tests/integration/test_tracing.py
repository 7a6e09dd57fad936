"""Tracing (docs/operations.md, "Tracing"): the spans of a request, and nothing of OpenTelemetry when off.

The in-memory exporter is installed through ``tracing.install``, so these tests never touch the
process's environment; the ``OTEL_*`` switch itself is tested in subprocesses, which a gateway
serves real requests in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from edgeward._pb import gateway_pb2
from edgeward.client import verify_response
from edgeward.gateway import tracing
from edgeward.stub import StubBackend
from tests.integration.conftest import GATEWAY_SIGNER, Device, GatewayFactory, call, login, rejected
from tests.integration.streams import Stream

ROOT = Path(__file__).resolve().parents[2]
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PAYLOAD_MARKER = "payload-marker-7f3a"
STEPS = ["session_lookup", "replay_reservation", "budgets"]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans of the gateways a test starts (after this fixture), exported as each span ends."""
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.uninstall()


@pytest.fixture
async def traced(
    spans: InMemorySpanExporter, start_gateway: GatewayFactory, stub: StubBackend
) -> AsyncIterator[tuple[grpc.aio.Channel, Device]]:
    """A channel to a traced gateway and a device logged in to it."""
    gateway = await start_gateway()
    device = await login(gateway, stub)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield channel, device


async def _traceparent(channel: grpc.aio.Channel, data: bytes) -> list[str]:
    """The traceparent the stub backend received for the command ``data`` (its echo, verified), split."""
    request_id = gateway_pb2.ExecuteCommandRequest.FromString(data).envelope.request_id
    resp = gateway_pb2.ExecuteCommandResponse.FromString(await call(channel, data))
    answer = verify_response(resp, GATEWAY_SIGNER.public_key, request_id)
    traceparent: str = orjson.loads(answer.payload)["traceparent"]
    return traceparent.split("-")


def _tree(spans: InMemorySpanExporter, root_name: str) -> tuple[ReadableSpan, dict[str, ReadableSpan]]:
    """The one root span named ``root_name`` and its children by name (each name once)."""
    finished = spans.get_finished_spans()
    (root,) = [s for s in finished if s.name == root_name]
    assert root.parent is None and root.kind is SpanKind.SERVER
    children = [s for s in finished if s.parent is not None and s.parent.span_id == root.context.span_id]
    by_name = {s.name: s for s in children}
    assert len(by_name) == len(children)
    assert all(s.context.trace_id == root.context.trace_id for s in children)
    return root, by_name


async def test_a_command_is_one_trace_with_the_traceparent_the_backend_received(
    traced: tuple[grpc.aio.Channel, Device], spans: InMemorySpanExporter
) -> None:
    channel, device = traced
    payload = orjson.dumps({"note": PAYLOAD_MARKER})
    data = device.request("user.echo", payload, trace_id=CLIENT_TRACE_ID.upper())
    version, trace_id, parent_id, flags = await _traceparent(channel, data)
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE_ID, "01")  # the client's trace, lower-cased

    root, children = _tree(spans, "ExecuteCommand")
    assert sorted(children) == sorted([*STEPS, "backend_call"])
    assert root.context.trace_id == int(trace_id, 16)
    backend_call = children["backend_call"]
    assert backend_call.kind is SpanKind.CLIENT and backend_call.context.span_id == int(parent_id, 16)
    assert dict(root.attributes or {}) == {
        "edgeward.message_type": "user.echo",
        "edgeward.request_id": gateway_pb2.ExecuteCommandRequest.FromString(data).envelope.request_id,
        "edgeward.device_session_id": device.device_session_id,
        "edgeward.outcome": "ok",
    }
    assert all((s.attributes or {}).get("edgeward.outcome") == "ok" for s in children.values())
    # Identifiers only: no payload, signature or key in any span.
    signature = gateway_pb2.ExecuteCommandRequest.FromString(data).signature.hex()
    secrets = [PAYLOAD_MARKER, signature, device.signer.public_key.hex(), GATEWAY_SIGNER.public_key.hex()]
    text = repr(
        [(s.name, dict(s.attributes or {}), [e.attributes for e in s.events]) for s in spans.get_finished_spans()]
    )
    assert not [marker for marker in secrets if marker in text]


async def test_a_trace_id_that_is_not_w3c_is_hashed_the_same_way_for_both(
    traced: tuple[grpc.aio.Channel, Device], spans: InMemorySpanExporter
) -> None:
    channel, device = traced
    trace_id = (await _traceparent(channel, device.request("user.echo", trace_id="trace-7")))[1]
    root, _ = _tree(spans, "ExecuteCommand")
    assert f"{root.context.trace_id:032x}" == trace_id != "trace-7"


async def test_a_rejected_command_records_its_reason_where_it_was_refused(
    traced: tuple[grpc.aio.Channel, Device], spans: InMemorySpanExporter
) -> None:
    channel, device = traced
    data = device.request("user.echo", trace_id=CLIENT_TRACE_ID)
    await call(channel, data)
    spans.clear()
    assert (await rejected(channel, device.resigned(data))).reason == "replayed_request"
    root, children = _tree(spans, "ExecuteCommand")
    assert sorted(children) == ["replay_reservation", "session_lookup"]  # no budgets, no backend call
    assert (root.attributes or {})["edgeward.outcome"] == "replayed_request"
    assert (children["replay_reservation"].attributes or {})["edgeward.outcome"] == "replayed_request"
    assert (children["session_lookup"].attributes or {})["edgeward.outcome"] == "ok"


async def test_opening_a_subscription_is_a_server_span_with_the_verification_steps(
    traced: tuple[grpc.aio.Channel, Device], spans: InMemorySpanExporter
) -> None:
    channel, device = traced
    stream = Stream(channel, device, trace_id=CLIENT_TRACE_ID)
    await stream.opened()
    stream.cancel()
    root, children = _tree(spans, "SubscribeEvents")
    assert sorted(children) == sorted(STEPS)
    assert f"{root.context.trace_id:032x}" == CLIENT_TRACE_ID
    assert (root.attributes or {})["edgeward.message_type"] == "gateway.subscribe"


# A gateway serving one command in a fresh interpreter, against the test's stub backend (which is
# kept out of it: the stub's redis-py imports opentelemetry when installed); then the
# opentelemetry modules it loaded.
_SERVE_ONE = textwrap.dedent(
    """
    import asyncio, dataclasses, os, sys
    import grpc
    from edgeward.client import build_signed_request, login_with_stub_mailbox
    from edgeward.config import Address
    from edgeward.gateway.server import Gateway
    from edgeward.gateway.settings import GatewaySettings
    from edgeward.native.crypto import Signer

    async def main():
        loopback = Address("127.0.0.1", 0)
        settings = dataclasses.replace(
            GatewaySettings(), grpc_addr=loopback, public_http_addr=loopback, admin_http_addr=loopback,
            backend_base_url=os.environ["STUB_URL"], backend_push_addr=Address.parse(os.environ["STUB_PUSH"]),
        )
        gateway = Gateway(settings, signer=Signer.generate())
        await gateway.start()
        try:
            device = Signer.generate()
            public_url = f"http://127.0.0.1:{gateway.public_http_port}"
            dsid = await login_with_stub_mailbox(public_url, os.environ["STUB_URL"], "ada@example.com", device)
            request = build_signed_request(device, dsid, "user.echo", b"{}").SerializeToString()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
                await channel.unary_unary("/edgeward.v1.EdgeGateway/ExecuteCommand")(request, timeout=10)
        finally:
            await gateway.stop(grace=0)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        print("OTEL_MODULES", len(loaded), file=sys.stderr)

    asyncio.run(main())
    """
)


async def _serve_one(stub: StubBackend, **otel: str) -> tuple[int, str]:
    """Loaded opentelemetry modules and the stdout of a gateway that served one command with ``otel`` set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | otel
    env |= {"STUB_URL": stub.base_url, "STUB_PUSH": stub.push_addr}
    args = [sys.executable, "-c", _SERVE_ONE]
    # In a thread: the stub answers on this test's event loop meanwhile.
    done = await asyncio.to_thread(subprocess.run, args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("OTEL_MODULES ")]
    return int(line.split()[1]), done.stdout


@pytest.mark.parametrize("otel", [{}, {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}])
async def test_with_tracing_off_nothing_of_opentelemetry_is_imported(stub: StubBackend, otel: dict[str, str]) -> None:
    loaded, stdout = await _serve_one(stub, **otel)
    assert loaded == 0 and "ExecuteCommand" not in stdout


async def test_otel_traces_exporter_turns_tracing_on(stub: StubBackend) -> None:
    loaded, stdout = await _serve_one(stub, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="edge-test")
    assert loaded > 0
    assert '"name": "ExecuteCommand"' in stdout and '"service.name": "edge-test"' in stdout


@pytest.mark.parametrize("value", ["", "none", "NONE"])
def test_tracing_is_off_without_an_exporter(value: str) -> None:
    assert not tracing.enabled({"OTEL_TRACES_EXPORTER": value})


def test_an_unknown_exporter_is_refused_rather_than_silently_off() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        tracing.enabled({"OTEL_TRACES_EXPORTER": "jaeger"})
