"""The gRPC-Web listener end to end (docs/grpc-web.md): real HTTP on loopback, a real gateway and stub.

The client (tests/support/grpc_web_client.py) is written from the wire format, not from the
gateway's framing code. What a browser gets must be what a gRPC client gets: the same signed
bytes, the same statuses and ErrorInfo, the same stream ends, through the same pipeline.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import orjson
import pytest

from edgeward._pb import gateway_pb2
from edgeward.client import build_signed_request, verify_event, verify_response
from edgeward.gateway.server import Gateway
from edgeward.native.crypto import Signer
from edgeward.public.cors import CorsOrigins
from edgeward.stub import StubBackend
from tests.integration.conftest import (
    GATEWAY_SIGNER,
    LOOPBACK_ANY,
    Device,
    GatewayFactory,
    call,
    login,
    rejected,
)
from tests.integration.streams import eventually, post_event, push_connected, revoke, user_id
from tests.support.grpc_web_client import (
    BINARY,
    TEXT,
    GrpcWebClient,
    RawWebStream,
    WebStream,
    gateway_error,
    web_frame,
)
from tests.support.hanging_backend import HangingBackend
from tests.support.pki import make_pki

EXECUTE = "/edgeward.v1.EdgeGateway/ExecuteCommand"
SUBSCRIBE = "/edgeward.v1.EdgeGateway/SubscribeEvents"
SEND_CODE = "/api/v1/public/auth/send-email-code"
ORIGIN = "http://127.0.0.1:8090"
MODES = pytest.mark.parametrize(
    "content_type", [BINARY, TEXT, "application/grpc-web", "application/grpc-web-text+proto"]
)
OK_TRAILER = b"grpc-status: 0\r\ngrpc-message: \r\n"


@pytest.fixture
async def web_gateway(start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway(grpc_web_addr=LOOPBACK_ANY, cors_origins=CorsOrigins.parse(ORIGIN))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def web(gateway: Gateway, http: aiohttp.ClientSession, content_type: str = BINARY) -> GrpcWebClient:
    return GrpcWebClient(http, f"http://127.0.0.1:{gateway.grpc_web_port}", content_type)


def subscription(device: Device, trace_id: str = "") -> bytes:
    msg = build_signed_request(
        device.signer, device.device_session_id, "gateway.subscribe", b"",
        request_cls=gateway_pb2.SubscribeEventsRequest, trace_id=trace_id,
    )
    return bytes(msg.SerializeToString())


async def opened(stream: WebStream, request: bytes) -> None:
    """The stream's first event is the signed server_time of this subscription."""
    event = verify_event(gateway_pb2.GatewayEvent.FromString(await stream.message()), GATEWAY_SIGNER.public_key)
    assert event.event_type == "gateway.server_time"
    assert event.json()["request_id"] == gateway_pb2.SubscribeEventsRequest.FromString(request).envelope.request_id


@MODES
async def test_execute_command_answers_the_signed_response_gRPC_answers(
    web_gateway: Gateway, stub: StubBackend, http: aiohttp.ClientSession, content_type: str
) -> None:
    device = await login(web_gateway, stub)
    request = device.request("user.echo", b'{"hello": "browser"}')
    answer = await web(web_gateway, http, content_type).unary(EXECUTE, request)
    assert answer.http_status == 200 and answer.headers["Content-Type"] == content_type  # the request's mode
    assert answer.trailers == {"grpc-status": "0", "grpc-message": ""} and len(answer.messages) == 1
    response = gateway_pb2.ExecuteCommandResponse.FromString(answer.messages[0])
    rid = gateway_pb2.ExecuteCommandRequest.FromString(request).envelope.request_id
    result = verify_response(response, GATEWAY_SIGNER.public_key, rid)
    assert result.result_code == "ok" and result.json()["echo"] == {"hello": "browser"}
    assert response.SerializeToString() == answer.messages[0]  # the gateway's canonical encoding, as over gRPC
    if content_type.startswith("application/grpc-web-text"):  # each frame is its own padded base64
        frames = [web_frame(answer.messages[0]), web_frame(OK_TRAILER, flag=0x80)]
        assert answer.body == b"".join(base64.b64encode(f) for f in frames)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{web_gateway.grpc_port}") as channel:
        over_grpc = gateway_pb2.ExecuteCommandResponse.FromString(await call(channel, device.request("user.echo")))
    assert response.envelope.ListFields()[0][0].name == over_grpc.envelope.ListFields()[0][0].name
    assert [f.name for f, _ in response.ListFields()] == [f.name for f, _ in over_grpc.ListFields()]
    assert web_gateway.metrics.grpc_web_requests.labels("ExecuteCommand", "ok")._value.get() == 1
    assert web_gateway.metrics.requests.labels("ExecuteCommand", "ok")._value.get() == 2  # both transports


async def test_rejections_are_gRPC_statuses_sent_trailers_only(
    web_gateway: Gateway, stub: StubBackend, http: aiohttp.ClientSession
) -> None:
    device = await login(web_gateway, stub)
    client = web(web_gateway, http, TEXT)
    forger = Device(Signer.generate(), device.device_session_id, device.email)
    ghost = Device(Signer.generate(), "dsn_no_such_session", "ghost@example.com")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{web_gateway.grpc_port}") as channel:
        first = device.request("user.echo")
        await client.unary(EXECUTE, first)
        cases = {
            "invalid_signature": (forger.request("user.echo"), forger.request("user.echo")),
            "session_not_found": (ghost.request("user.echo"), ghost.request("user.echo")),
            "replayed_request": (device.resigned(first), device.resigned(first, shift_ms=2)),
            "unknown_message_type": (device.request("no.such.type"), device.request("no.such.type")),
        }
        for reason, (over_web, over_grpc) in cases.items():
            answer = await client.unary(EXECUTE, over_web)
            assert answer.http_status == 200 and answer.trailers_only, reason
            web_error, grpc_error = answer.error(), await rejected(channel, over_grpc)
            assert (web_error.code, web_error.reason, web_error.metadata) == (
                grpc_error.code, grpc_error.reason, grpc_error.metadata
            ), reason
            assert web_error.reason == reason and answer.headers["grpc-message"] == reason
    assert web_gateway.metrics.grpc_web_requests.labels("ExecuteCommand", "invalid_signature")._value.get() == 1


async def test_a_resent_request_gets_the_kept_answer_with_the_replayed_trailer(
    web_gateway: Gateway, stub: StubBackend, http: aiohttp.ClientSession
) -> None:
    device = await login(web_gateway, stub)
    client = web(web_gateway, http)
    request = device.request("user.echo", b'{"n": 1}')
    first, again = await client.unary(EXECUTE, request), await client.unary(EXECUTE, request)
    assert first.trailers is not None and "edgeward-replayed" not in first.trailers
    assert again.trailers == {"grpc-status": "0", "grpc-message": "", "edgeward-replayed": "1"}
    assert again.messages == first.messages  # the first answer's bytes


async def test_what_is_not_gRPC_Web_is_refused(
    start_gateway: GatewayFactory, stub: StubBackend, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(grpc_web_addr=LOOPBACK_ANY, max_payload_bytes=1024)
    device = await login(gateway, stub)
    base = f"http://127.0.0.1:{gateway.grpc_web_port}"
    for content_type in ("application/grpc", "application/json", "application/grpc-web+json"):
        async with http.post(base + EXECUTE, data=web_frame(b""), headers={"Content-Type": content_type}) as resp:
            assert resp.status == 415, content_type
    async with http.get(base + EXECUTE) as resp:
        assert resp.status == 405
    request = device.request("user.echo")
    malformed = {
        "compressed": web_frame(request, flag=1),
        "a trailer frame": web_frame(request, flag=0x80),
        "short header": b"\x00\x00\x00",
        "length too long": web_frame(request)[:-1],
        "two frames": web_frame(request) + web_frame(request),
    }
    client = web(gateway, http)
    for what, body in malformed.items():
        answer = await client.post(EXECUTE, body)
        assert answer.trailers_only, what
        error = answer.error()
        assert (error.code, error.reason, error.metadata) == (
            grpc.StatusCode.INVALID_ARGUMENT, "invalid_envelope", {"field": "message"}
        ), what
    answer = await web(gateway, http, TEXT).post(EXECUTE, b"not base64!")
    assert answer.error().reason == "invalid_envelope"
    # gRPC's own limit: the payload limit plus 4,096 bytes of envelope room.
    huge = device.request("user.echo", b'"' + b"x" * 8000 + b'"')
    for content_type in (BINARY, TEXT):
        answer = await web(gateway, http, content_type).unary(EXECUTE, huge)
        assert answer.trailers_only and answer.headers["Connection"] == "close"
        error = answer.error()
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "payload_too_large")
    answer = await client.unary(EXECUTE, device.request("user.echo", b'"' + b"x" * 2000 + b'"'))  # under gRPC's limit
    assert answer.error().reason == "payload_too_large"  # the pipeline's own check, as over gRPC
    assert answer.error().code == grpc.StatusCode.INVALID_ARGUMENT


async def test_grpc_timeout_bounds_a_command(
    start_gateway: GatewayFactory, stub: StubBackend, hanging_backend: HangingBackend, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(grpc_web_addr=LOOPBACK_ANY, backend_base_url=hanging_backend.base_url)
    device = await login(gateway, stub)
    answer = await web(gateway, http).unary(EXECUTE, device.request("user.echo"), {"grpc-timeout": "200m"})
    assert answer.trailers_only and answer.error().code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert hanging_backend.echo_received.is_set()
    assert gateway.metrics.grpc_web_requests.labels("ExecuteCommand", "cancelled")._value.get() == 1


async def test_a_command_cut_at_shutdown_is_answered_shutting_down(
    start_gateway: GatewayFactory, stub: StubBackend, hanging_backend: HangingBackend, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        grpc_web_addr=LOOPBACK_ANY, backend_base_url=hanging_backend.base_url, shutdown_grace_ms=1_000
    )
    device = await login(gateway, stub)
    pending = asyncio.ensure_future(web(gateway, http).unary(EXECUTE, device.request("user.echo")))
    await asyncio.wait_for(hanging_backend.echo_received.wait(), 30)
    await gateway.stop()  # the grace (1 s) ends with the command still at the backend
    answer = await pending
    assert answer.trailers_only
    assert (answer.error().code, answer.error().reason) == (grpc.StatusCode.UNAVAILABLE, "shutting_down")


@pytest.mark.parametrize("content_type", [BINARY, TEXT])
async def test_subscribe_events_streams_the_signed_events_until_revocation(
    web_gateway: Gateway, stub: StubBackend, http: aiohttp.ClientSession, content_type: str
) -> None:
    device = await login(web_gateway, stub)
    request = subscription(device, trace_id="trace-web")
    stream = await web(web_gateway, http, content_type).stream(SUBSCRIBE, request)
    try:
        assert stream.response.status == 200 and stream.response.headers["Content-Type"] == content_type
        await opened(stream, request)
        await push_connected(web_gateway)
        await post_event(stub, await user_id(web_gateway, device), {"n": 1})
        event = verify_event(gateway_pb2.GatewayEvent.FromString(await stream.message()), GATEWAY_SIGNER.public_key)
        assert event.json() == {"n": 1}
        await revoke(stub, device)
        error = await stream.end()
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "session_revoked")
    finally:
        stream.close()
    await eventually(lambda: len(web_gateway.hub) == 0, "the ended stream to be unregistered")


async def test_a_refused_subscription_is_trailers_only(
    web_gateway: Gateway, stub: StubBackend, http: aiohttp.ClientSession
) -> None:
    device = await login(web_gateway, stub)
    request = subscription(device)
    first = await web(web_gateway, http).stream(SUBSCRIBE, request)
    again = await web(web_gateway, http).stream(SUBSCRIBE, request)
    try:
        await opened(first, request)
        error = await again.refused()
        assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "replayed_request")
    finally:
        first.close()
        again.close()


async def test_a_client_that_leaves_frees_its_stream(
    web_gateway: Gateway, stub: StubBackend, http: aiohttp.ClientSession
) -> None:
    device = await login(web_gateway, stub)
    request = subscription(device)
    stream = await web(web_gateway, http, TEXT).stream(SUBSCRIBE, request)
    await opened(stream, request)
    assert len(web_gateway.hub) == 1
    stream.close()  # no event will come: only the disconnection can end it
    await eventually(lambda: len(web_gateway.hub) == 0, "the stream of the client that left to be unregistered")
    assert web_gateway.hub.stats.streams_ended["cancelled"] == 1


async def test_shutdown_ends_an_open_stream_with_shutting_down_and_draining_refuses_new_calls(
    web_gateway: Gateway, stub: StubBackend, http: aiohttp.ClientSession
) -> None:
    device = await login(web_gateway, stub)
    request = subscription(device)
    stream = await web(web_gateway, http).stream(SUBSCRIBE, request)
    try:
        await opened(stream, request)
        web_gateway.begin_drain()
        answer = await web(web_gateway, http).unary(EXECUTE, device.request("user.echo"))
        assert answer.trailers_only and answer.error().reason == "shutting_down"
        stopping = asyncio.ensure_future(web_gateway.stop(grace=5))
        error = await stream.end()
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "shutting_down")
        await asyncio.wait_for(stopping, 30)
    finally:
        stream.close()


async def test_the_idle_timeout_does_not_cut_a_live_stream(
    start_gateway: GatewayFactory, stub: StubBackend, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(grpc_web_addr=LOOPBACK_ANY, http_idle_timeout_ms=100, http_header_timeout_ms=100)
    device = await login(gateway, stub)
    request = subscription(device)
    stream = await web(gateway, http).stream(SUBSCRIBE, request)
    try:
        await opened(stream, request)
        await push_connected(gateway)
        # A silent connection beside the stream is closed by the header timeout: proof that the
        # timers ran past their 100 ms while the stream was open.
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", gateway.grpc_web_port)
        assert await asyncio.wait_for(silent_reader.read(), 30) == b""
        silent_writer.close()
        await silent_writer.wait_closed()
        await post_event(stub, await user_id(gateway, device), {"n": 1})
        assert gateway_pb2.GatewayEvent.FromString(await stream.message()).payload_bytes == b'{"n":1}'
        assert gateway.grpc_web_guard.timeouts == {"header": 1}  # the silent one only
    finally:
        stream.close()


async def test_cors_on_the_grpc_web_listener(
    web_gateway: Gateway, http: aiohttp.ClientSession, stub: StubBackend
) -> None:
    base = f"http://127.0.0.1:{web_gateway.grpc_web_port}"
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-grpc-web"}
    async with http.options(base + EXECUTE, headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN and resp.headers["Vary"] == "Origin"
        assert resp.headers["Access-Control-Allow-Methods"] == "POST"
        assert resp.headers["Access-Control-Allow-Headers"] == (
            "content-type, x-grpc-web, x-user-agent, grpc-timeout, traceparent"
        )
        assert resp.headers["Access-Control-Max-Age"] == "600"
    async with http.options(base + EXECUTE, headers=preflight | {"Origin": "http://evil.example"}) as resp:
        assert resp.status == 403
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    device = await login(web_gateway, stub)
    client = web(web_gateway, http)
    for request in (device.request("user.echo"), b"undecodable"):  # an answer, and a trailers-only refusal
        answer = await client.unary(EXECUTE, request, {"Origin": ORIGIN})
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert answer.headers["Access-Control-Expose-Headers"] == (
            "grpc-status, grpc-message, grpc-status-details-bin, edgeward-replayed"
        )
        answer = await client.unary(EXECUTE, request, {"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in answer.headers and answer.headers["Vary"] == "Origin"
    stream = await client.http.post(
        base + SUBSCRIBE, data=client.body(subscription(device)), headers=client.headers({"Origin": ORIGIN})
    )
    try:
        assert stream.headers["Access-Control-Allow-Origin"] == ORIGIN  # a streamed answer too
    finally:
        stream.close()


async def test_cors_on_the_public_listener(web_gateway: Gateway, http: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{web_gateway.public_http_port}{SEND_CODE}"
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    async with http.options(url, headers=preflight) as resp:
        assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert resp.headers["Access-Control-Allow-Headers"] == "content-type, traceparent"
        assert "Access-Control-Expose-Headers" not in resp.headers
    async with http.options(url, headers=preflight | {"Origin": "http://127.0.0.1:8091"}) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with http.post(url, json={"email": "ada@example.com"}, headers={"Origin": ORIGIN}) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with http.post(url, data=b"{}", headers={"Origin": "http://127.0.0.1:8091"}) as resp:
        assert resp.status == 415 and "Access-Control-Allow-Origin" not in resp.headers


async def test_without_cors_origins_no_listener_says_anything_about_cors(
    start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(grpc_web_addr=LOOPBACK_ANY)
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    for url in (
        f"http://127.0.0.1:{gateway.grpc_web_port}{EXECUTE}", f"http://127.0.0.1:{gateway.public_http_port}{SEND_CODE}"
    ):
        async with http.options(url, headers=preflight) as resp:
            assert resp.status == 405
            assert not [h for h in resp.headers if h.lower().startswith("access-control-") or h.lower() == "vary"]


async def test_no_listener_without_its_address(gateway: Gateway) -> None:
    assert gateway.settings.grpc_web_addr is None and gateway.grpc_web_port == 0


async def test_with_a_certificate_the_listener_serves_https_only(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    gateway = await start_gateway(
        grpc_web_addr=LOOPBACK_ANY, tls_cert_file=str(pki.cert), tls_key_file=str(pki.key)
    )
    context = ssl.create_default_context(cafile=str(pki.ca))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as https:
        answer = await GrpcWebClient(https, f"https://127.0.0.1:{gateway.grpc_web_port}").unary(EXECUTE, b"x")
        assert answer.trailers_only and answer.error().reason == "invalid_envelope"  # the pipeline answered
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientError):
            await GrpcWebClient(plain, f"http://127.0.0.1:{gateway.grpc_web_port}").unary(EXECUTE, b"x")


async def _stall(gateway: Gateway, stub: StubBackend, http: aiohttp.ClientSession, content_type: str) -> RawWebStream:
    """A stream whose client reads its first event, then stops reading while events keep coming,
    until the hub ends it as slow_consumer; a second stream of the same user reads every event
    (nobody else waits). At most 200 events of 32 KB are pushed: the stalled client's small TCP
    window and the listener's bounded write buffer fill long before that."""
    stalled_device, reader_device = [await login(gateway, stub, "ada@example.com") for _ in range(2)]
    request = subscription(stalled_device)
    stalled = await RawWebStream.open(gateway.grpc_web_port, SUBSCRIBE, request, content_type)
    try:
        assert stalled.status == 200 and stalled.headers["content-type"] == content_type
        event = verify_event(gateway_pb2.GatewayEvent.FromString(await stalled.message()), GATEWAY_SIGNER.public_key)
        assert event.event_type == "gateway.server_time"  # then it reads nothing more
        reader_request = subscription(reader_device)
        reader = await web(gateway, http, content_type).stream(SUBSCRIBE, reader_request)
        try:
            await opened(reader, reader_request)
            await push_connected(gateway)
            ada = await user_id(gateway, reader_device)
            padding = "x" * 32_000
            for n in range(200):
                await post_event(stub, ada, {"n": n, "padding": padding})
                assert gateway_pb2.GatewayEvent.FromString(await reader.message()).payload_bytes.startswith(
                    b'{"n":%d,' % n
                )
                if gateway.hub.stats.streams_ended["slow_consumer"]:
                    break
            else:
                raise AssertionError("the stalled stream was never ended")
            await post_event(stub, ada, {"n": "after"})  # the reader goes on
            assert gateway_pb2.GatewayEvent.FromString(await reader.message()).payload_bytes == b'{"n":"after"}'
        finally:
            reader.close()
    except BaseException:
        stalled.close()
        raise
    assert gateway.hub.stats.streams_ended["slow_consumer"] == 1
    await eventually(lambda: len(gateway.hub) == 0, "both streams to be unregistered")  # the reader left
    return stalled


@pytest.mark.parametrize("content_type", [BINARY, TEXT])
async def test_a_stalled_stream_ends_as_slow_consumer_for_a_client_that_reads_again(
    start_gateway: GatewayFactory, stub: StubBackend, http: aiohttp.ClientSession, content_type: str
) -> None:
    gateway = await start_gateway(grpc_web_addr=LOOPBACK_ANY, stream_queue_size=2)
    stalled = await _stall(gateway, stub, http, content_type)
    try:
        # It reads again (well within the listener's end-write timeout, 5 s): the events written
        # before the end, in order, then the trailer frame with the hub's reason.
        end = await stalled.read_to_end()
        assert end.complete and not end.reset
        trailers = end.trailers()
        assert trailers is not None, "no trailer frame"
        error = gateway_error(trailers)
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow_consumer")
        numbers = [orjson.loads(gateway_pb2.GatewayEvent.FromString(m).payload_bytes)["n"] for m in end.messages()]
        assert numbers == list(range(len(numbers))) and numbers, numbers  # a prefix: nothing after the end
        assert [flag for flag, _ in end.frames].count(0x80) == 1
    finally:
        stalled.close()
    await eventually(lambda: gateway.grpc_web_guard.open == 0, "the connections to close")
    assert len(gateway.hub) == 0 and gateway.hub.stats.streams_ended == {"slow_consumer": 1, "cancelled": 1}


async def test_a_stalled_stream_whose_client_never_reads_again_has_its_connection_closed(
    start_gateway: GatewayFactory, stub: StubBackend, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(grpc_web_addr=LOOPBACK_ANY, stream_queue_size=2)
    stalled = await _stall(gateway, stub, http, BINARY)
    try:
        # The trailer frame cannot leave: after the end-write timeout (5 s) the gateway closes the
        # connection rather than hold the handler. The wait is bounded (three times that), not timed.
        await eventually(lambda: gateway.grpc_web_guard.open == 0, "the stalled connection to be closed", 15)
        end = await stalled.read_to_end()  # what the kernel had buffered, then the end of the connection
        assert not end.complete and end.trailers() is None  # cut inside the body: the client sees a broken stream
    finally:
        stalled.close()
    assert len(gateway.hub) == 0 and gateway.hub.stats.streams_ended == {"slow_consumer": 1, "cancelled": 1}
