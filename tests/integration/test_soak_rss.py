"""A bounded soak of ``edgeward serve``: its resident memory stays flat after warm-up (issue 12.4).

The native gateway runs as a subprocess against the in-process stub backend, with its replay store
in a real redis-server; budgets and the pre-auth guard are off so every request meets the path it
is meant to. Each round sends the same mix, and checks, by counting, that every request met the
outcome it was built for:

- ``OK`` signed ``user.echo`` commands with fresh request ids, from several concurrent senders;
- ``REJECTED`` each of: a bad signature (signed by another key), a replay of an accepted command,
  an unknown device session (a cache miss that asks the backend and is refused);
- ``STREAMS`` SubscribeEvents streams, each opened (its first event read) then cancelled; the
  round ends only when the gateway's ``edgeward_streams_open`` is back to 0.

After each round the gateway's VmRSS is read from /proc/PID/status (``EDGEWARD_WORKERS=1``: with
Redis set the default would be a supervisor with one worker process per CPU). The first
``WARMUP_ROUNDS`` rounds fill what fills once (gRPC's and the allocators' arenas, metric label sets,
lazily imported code). Over the ``MEASURED_ROUNDS`` after them the test asserts that RSS grew by
less than ``LEAK_BYTES_PER_REQUEST`` (192 bytes) per request sent in those rounds: 1.2 MiB over
their 6,540 requests.

Why that bound. Flat, the growth measured on this 2-core VM was 25-70 bytes per request (0.15-0.3
MiB over the measured rounds: page-granular RSS, allocator free lists settling, and the negative
session cache, which keeps each unknown session id until it is asked again or evicted, bounded at
25,000 entries: ~10 KiB per round here). Concurrency is bounded by the ``SENDERS`` closed-loop
senders, so a slow or loaded machine changes when requests run, not how many are live at once. A
leak shows as a steady per-request slope: checked by breaking a scratch copy of the gateway
outside the tree, keeping each request's bytes measured ~270 bytes per request, keeping each
call's finished task (the in-flight set never discarding) ~850, keeping each rejection with its
traceback ~730 averaged over all requests (~6.6 KiB per rejected one); all three fail, the first
with the least margin. A leak confined to the rejected requests (11% of the mix) is caught from
~1.7 KiB per rejected request. Nothing is timed: the soak is a fixed number of requests (8,720)
and takes 6-9 s per event loop on 2 cores.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import orjson
import pytest

from edgeward._pb import gateway_pb2
from edgeward.client import error_from_rpc, login_with_stub_mailbox, verify_response
from edgeward.devtools.ports import free_ports
from edgeward.native.crypto import Signer
from edgeward.native.keys import save_signer
from edgeward.stub import StubBackend
from tests.integration.conftest import EXECUTE, Device
from tests.integration.streams import WAIT_S, Served, Stream, serve_env, spawn
from tests.support.redis_server import RedisServer

SENDERS = 8
OK = 960  # signed commands accepted per round: 120 per sender
REJECTED = 40  # per kind and round: bad signature, replay, unknown session
STREAMS = 10  # SubscribeEvents opened then cancelled per round
WARMUP_ROUNDS = 2
MEASURED_ROUNDS = 6
PER_ROUND = OK + 3 * REJECTED + STREAMS
LEAK_BYTES_PER_REQUEST = 192
_START_S = 60.0

EXPECTED = Counter(
    {
        "ok": OK,
        "UNAUTHENTICATED invalid_signature": REJECTED,
        "ALREADY_EXISTS replayed_request": REJECTED,
        "UNAUTHENTICATED session_not_found": REJECTED,
        "stream": STREAMS,
    }
)

pytestmark = pytest.mark.native


class Soaked(Served):
    """The soaked ``edgeward serve``, with what the test reads of it: RSS and admin pages."""

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
        assert match is not None, status
        return int(match.group(1)) * 1024

    async def admin(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.ports['admin']}{path}") as resp,
        ):
            return resp.status, await resp.text()

    async def metric(self, name: str) -> float:
        text = (await self.admin("/metrics"))[1]
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert match is not None, f"{name} not in /metrics"
        return float(match.group(1))


async def _ready(served: Soaked) -> bool:
    try:
        status, _ = await served.admin("/readyz")
    except aiohttp.ClientError:
        return False
    return status == 200


@pytest.fixture
async def served(stub: StubBackend, redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Soaked]:
    signer = Signer.generate()
    save_signer(signer, tmp_path / "gateway.key")
    ports = free_ports("grpc", "public", "admin")
    env = serve_env(stub, tmp_path / "gateway.key", ports) | {
        "EDGEWARD_REDIS_URL": redis_server.url,
        "EDGEWARD_WORKERS": "1",  # one gateway in this very process: with Redis the default is one per CPU
        "EDGEWARD_BUDGET_IP": "off",
        "EDGEWARD_BUDGET_SESSION": "off",
        "EDGEWARD_BUDGET_USER": "off",
        "EDGEWARD_BUDGET_MESSAGE_TYPE": "off",
        "EDGEWARD_PREAUTH_FAILURE_LIMIT": "off",
    }
    log = tmp_path / "serve.log"
    proc = await spawn([sys.executable, "-m", "edgeward", "serve"], env, log)
    process = Soaked(proc, log, ports, signer)
    try:
        deadline = time.monotonic() + _START_S
        while not await _ready(process):
            assert proc.poll() is None, process.output()
            assert time.monotonic() < deadline, "edgeward serve did not become ready:\n" + process.output()
            await asyncio.sleep(0.1)
        yield process
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


class Mix:
    """One device's round of requests against ``served``, each classified by its outcome."""

    def __init__(self, channel: grpc.aio.Channel, device: Device, served: Soaked) -> None:
        self.channel = channel
        self.execute = channel.unary_unary(EXECUTE)
        self.device = device
        self.served = served
        self.impostor = Signer.generate()
        self.accepted: list[bytes] = []
        self.sent = 0

    async def send(self, data: bytes) -> str:
        try:
            answer = await self.execute(data, timeout=30)
        except grpc.aio.AioRpcError as rpc_error:
            err = error_from_rpc(rpc_error)
            return f"{err.code.name} {err.reason}"
        request_id = gateway_pb2.ExecuteCommandRequest.FromString(data).envelope.request_id
        response = gateway_pb2.ExecuteCommandResponse.FromString(answer)
        assert verify_response(response, self.served.signer.public_key, request_id).result_code == "ok"
        self.accepted.append(data)
        return "ok"

    async def stream(self) -> str:
        stream = Stream(self.channel, self.device, gateway_key=self.served.signer.public_key)
        try:
            await stream.opened()
        finally:
            stream.cancel()
        return "stream"

    async def round(self) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        self.accepted.clear()

        async def commands(count: int) -> None:
            for n in range(count):
                self.sent += 1
                outcomes[await self.send(self.device.request("user.echo", orjson.dumps({"n": n})))] += 1

        async with asyncio.TaskGroup() as group:
            for _ in range(SENDERS):
                group.create_task(commands(OK // SENDERS))
        for n in range(REJECTED):
            bad = Device(self.impostor, self.device.device_session_id, "")
            unknown = Device(self.device.signer, f"dsn_soak{secrets.token_hex(16)}", "")
            for data in (
                bad.request("user.echo", orjson.dumps({"n": n})),
                self.device.resigned(self.accepted[n]),
                unknown.request("user.echo", orjson.dumps({"n": n})),
            ):
                self.sent += 1
                outcomes[await self.send(data)] += 1
        for _ in range(STREAMS):
            self.sent += 1
            outcomes[await self.stream()] += 1
        # Cancelled streams are closed by the gateway after the client let go of them.
        deadline = time.monotonic() + WAIT_S
        while await self.served.metric("edgeward_streams_open") != 0:
            assert time.monotonic() < deadline, "the gateway kept cancelled streams open"
            await asyncio.sleep(0.01)
        return outcomes


async def test_rss_stays_flat_over_rounds_of_the_same_mix(served: Soaked, stub: StubBackend) -> None:
    status, health = await served.admin("/healthz")
    assert status == 200 and orjson.loads(health)["implementation"] == "native", health
    public_url = f"http://127.0.0.1:{served.ports['public']}"
    signer = Signer.generate()
    dsid = await login_with_stub_mailbox(public_url, stub.base_url, "soak@example.com", signer)
    device = Device(signer, dsid, "soak@example.com")
    rss: list[int] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.ports['grpc']}") as channel:
            mix = Mix(channel, device, served)
            for _ in range(WARMUP_ROUNDS + MEASURED_ROUNDS):
                assert await mix.round() == EXPECTED
                rss.append(served.rss_bytes())
    except BaseException:
        print(served.output())  # pytest shows it with the failure
        raise
    assert mix.sent == (WARMUP_ROUNDS + MEASURED_ROUNDS) * PER_ROUND
    assert stub.calls["user.echo"] == (WARMUP_ROUNDS + MEASURED_ROUNDS) * OK
    growth = rss[-1] - rss[WARMUP_ROUNDS - 1]
    per_request = growth / (MEASURED_ROUNDS * PER_ROUND)
    mib = [round(r / 2**20, 2) for r in rss]
    print(f"VmRSS after each round (MiB): {mib}; {per_request:.1f} bytes per request after warm-up")
    assert per_request < LEAK_BYTES_PER_REQUEST, f"RSS grew {growth} bytes over the measured rounds: {mib}"
    output = served.output()
    assert served.proc.poll() is None, output
    for trouble in ("Traceback", "ERROR", "Task was destroyed", "was never retrieved"):
        assert trouble not in output, output
