"""``edgeward serve --workers 2`` as a real process tree against a real redis-server (docs/workers.md).

The supervisor runs in a session of its own (``setsid``) so teardown kills the whole tree, even
when a test failed half-way. The stub backend runs in this process. Every wait is bounded and
names what it waits for; none asserts a duration. The tests run on one event loop only: the
loop is the test process's, not the gateway's, and each test starts three processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from edgeward.client import CHANNEL_OPTIONS, GatewayError, error_from_rpc, login_with_stub_mailbox
from edgeward.devtools.ports import free_ports
from edgeward.native.crypto import Signer
from edgeward.native.keys import save_signer
from edgeward.stub import StubBackend
from tests.integration.conftest import EXECUTE, Device
from tests.integration.streams import eventually, serve_env, spawn
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

WAIT_S = 60.0
SETSID = shutil.which("setsid") or "/usr/bin/setsid"
# What docs/workers.md asks of a client for rolling restarts, as the SDK's channels do it.
RETRYING = list(CHANNEL_OPTIONS)


class Host:
    """A running supervisor: its process, log and ports, and helpers to read its admin listener."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, ports: dict[str, int], stub: StubBackend) -> None:
        self.proc, self.log, self.ports, self.stub = proc, log, ports, stub
        self.grpc_target = f"127.0.0.1:{ports['grpc']}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def admin(self, path: str, port: int | None = None) -> tuple[int, str]:
        url = f"http://127.0.0.1:{port or self.ports['admin']}{path}"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status, await resp.text()

    async def readyz(self) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.ports['admin']}/readyz") as r:
                body: dict[str, Any] = await r.json()
                return body
        except aiohttp.ClientError:
            return {"ready": False, "workers": []}

    async def serving(self) -> list[dict[str, Any]]:
        """The workers in service, once the host is ready with exactly two of them (fails after WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            assert self.proc.poll() is None, self.output()
            body = await self.readyz()
            workers = [w for w in body["workers"] if w["state"] == "serving" and w["ready"]]
            if body["ready"] and len(workers) == 2 and len(body["workers"]) == 2:
                return workers
            assert time.monotonic() < deadline, f"the host did not get 2 ready workers: {body}\n{self.output()}"
            await asyncio.sleep(0.1)

    async def login(self, email: str) -> Device:
        signer = Signer.generate()
        public_url = f"http://127.0.0.1:{self.ports['public']}"
        return Device(signer, await login_with_stub_mailbox(public_url, self.stub.base_url, email, signer), email)


HostFactory = Callable[..., Awaitable[Host]]


@pytest.fixture
async def start_host(stub: StubBackend, redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[HostFactory]:
    """Start ``edgeward serve --workers 2`` with extra environment; the whole tree is killed at the end."""
    started: list[Host] = []

    async def start(**extra: str) -> Host:
        save_signer(Signer.generate(), tmp_path / "gateway.key")
        ports = free_ports("grpc", "public", "admin")
        env = serve_env(stub, tmp_path / "gateway.key", ports) | {
            "EDGEWARD_REDIS_URL": redis_server.url,
            "EDGEWARD_WORKERS": "2",
        } | extra
        log = tmp_path / f"serve{len(started)}.log"
        proc = await spawn([SETSID, sys.executable, "-m", "edgeward", "serve"], env, log)
        host = Host(proc, log, ports, stub)
        started.append(host)
        await host.serving()
        return host

    yield start
    for host in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.proc.pid, signal.SIGKILL)  # setsid: the supervisor leads its own group
        await asyncio.to_thread(host.proc.wait)


async def execute(
    target: str, data: bytes, options: list[tuple[str, str]] | None = None, wait_for_ready: bool = False
) -> GatewayError | None:
    """One call on a channel of its own (so, a connection of its own); the gateway's error or None.

    A local subchannel pool: otherwise grpcio (1.83 at least) hands a new channel the connection a
    closed channel to the same address left, and every call would reach the same worker.
    ``wait_for_ready``: a connection refused or reset while connecting is retried by the channel
    instead of failing the call (docs/workers.md, rolling restart).
    """
    own_connection = [("grpc.use_local_subchannel_pool", 1), *(options or [])]
    async with grpc.aio.insecure_channel(target, options=own_connection) as channel:
        try:
            await channel.unary_unary(EXECUTE)(data, timeout=WAIT_S, wait_for_ready=wait_for_ready)
        except grpc.aio.AioRpcError as err:
            return error_from_rpc(err)
    return None


def sample(page: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text page (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in page.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name and ",".join(sorted((match[2] or "").split(","))) == want:
            return float(match[3])
    return 0.0


def requests(page: str, outcome: str) -> float:
    return sample(page, "edgeward_requests_total", outcome=outcome, rpc="ExecuteCommand")


async def test_replay_and_budgets_are_shared_and_metrics_sum_over_workers(start_host: HostFactory) -> None:
    host = await start_host(EDGEWARD_BUDGET_SESSION="1/h:5")
    workers = await host.serving()
    replayer = await host.login("replay@example.com")
    replayed = replayer.request("user.echo", b'{"n": 1}')
    assert await execute(host.grpc_target, replayed) is None
    # Signed again, each: an identical resend would get the kept answer (docs/replay.md).
    answers = await asyncio.gather(*(execute(host.grpc_target, replayer.resigned(replayed, n)) for n in range(1, 50)))
    assert None not in answers, answers
    assert {(e.code, e.reason) for e in answers if e} == {(grpc.StatusCode.ALREADY_EXISTS, "replayed_request")}

    device = await host.login("budget@example.com")  # a session budget of 5, then refusals
    outcomes = [await execute(host.grpc_target, device.request("user.echo", b'{"n": 2}')) for _ in range(20)]
    assert outcomes[:5] == [None] * 5, outcomes
    assert all(e and (e.reason, e.metadata) == ("rate_limited", {"budget": "session"}) for e in outcomes[5:])

    pages = [(await host.admin("/metrics", w["admin_port"]))[1] for w in workers]
    for page in pages:  # 70 connections: the kernel gave each worker some of them
        assert requests(page, "ok") + requests(page, "replayed_request") + requests(page, "rate_limited") > 0
    status, total = await host.admin("/metrics")
    assert status == 200
    assert requests(total, "ok") == 6 == sum(requests(p, "ok") for p in pages)
    assert requests(total, "replayed_request") == 49 and requests(total, "rate_limited") == 15
    assert sample(total, "edgeward_workers", state="serving") == 2

    def push_ids() -> set[str]:  # each worker follows the backend's push under its own gateway id
        return set(re.findall(r"established \(gateway id (\S+)\)", host.output()))

    await eventually(lambda: len(push_ids()) == 2, "a push stream per worker")
    assert {i.rpartition(":")[2] for i in push_ids()} == {str(w["pid"]) for w in workers}


async def test_a_killed_worker_is_replaced_and_sigterm_drains_every_worker(start_host: HostFactory) -> None:
    host = await start_host()
    device = await host.login("kill@example.com")
    killed = (await host.serving())[0]["pid"]
    os.kill(killed, signal.SIGKILL)
    await eventually(lambda: host.proc.poll() is not None or "replacing it" in host.output(), "the replacement")
    pids = {w["pid"] for w in await host.serving()}
    assert killed not in pids and len(pids) == 2
    assert sample((await host.admin("/metrics"))[1], "edgeward_worker_restarts_total") == 1
    for n in range(10):  # fresh connections, spread over both workers
        assert await execute(host.grpc_target, device.request("user.echo", b'{"n": %d}' % n)) is None

    host.proc.send_signal(signal.SIGTERM)
    await eventually(lambda: host.proc.poll() is not None, "the supervisor to exit", within_s=WAIT_S)
    output = host.output()
    assert host.proc.returncode == 0, output
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert output.count("gateway stopped") == 2 and "supervisor stopped" in output, output
    for trouble in ("Task was destroyed", "Traceback", "was never retrieved"):
        assert trouble not in output, output


async def test_sighup_replaces_every_worker_while_no_call_fails(start_host: HostFactory) -> None:
    host = await start_host(
        EDGEWARD_BUDGET_SESSION="off", EDGEWARD_BUDGET_USER="off", EDGEWARD_BUDGET_MESSAGE_TYPE="off",
        EDGEWARD_BUDGET_IP="off",
    )
    old = {w["pid"] for w in await host.serving()}
    devices = [await host.login(f"load{i}@example.com") for i in range(4)]
    stop = asyncio.Event()
    calls: list[GatewayError | None] = []

    async def load(device: Device) -> None:
        async with grpc.aio.insecure_channel(host.grpc_target, options=RETRYING) as channel:
            while not stop.is_set():
                try:
                    # wait_for_ready: a reconnect reset by a retiring worker waits for the next
                    # connection instead of failing (docs/workers.md, rolling restart)
                    await channel.unary_unary(EXECUTE)(device.request("user.echo"), timeout=WAIT_S, wait_for_ready=True)
                    calls.append(None)
                except grpc.aio.AioRpcError as err:
                    calls.append(error_from_rpc(err))

    async def churn(device: Device) -> None:  # a connection per call: some land on a closing listener
        while not stop.is_set():
            calls.append(await execute(host.grpc_target, device.request("user.echo"), RETRYING, wait_for_ready=True))

    tasks = [asyncio.create_task(load(d)) for d in devices[:3]] + [asyncio.create_task(churn(devices[3]))]
    try:
        await eventually(lambda: len(calls) >= 20, "the load to run")
        host.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "rolling restart done" in host.output() or host.proc.poll() is not None,
                         "the rolling restart", within_s=WAIT_S)
        new = {w["pid"] for w in await host.serving()}
        settled = len(calls)
        await eventually(lambda: len(calls) >= settled + 20, "calls after the restart")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert not old & new, (old, new)
    failed = [e for e in calls if e is not None]
    assert not failed, f"{len(failed)} of {len(calls)} calls failed: {failed[:5]}\n{host.output()}"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "2 workers need a shared replay store: set EDGEWARD_REDIS_URL, or EDGEWARD_WORKERS=1"),
        (
            {"EDGEWARD_REDIS_URL": "redis://127.0.0.1:1/0", "EDGEWARD_GRPC_ADDR": "127.0.0.1:0"},
            "2 workers share their ports: EDGEWARD_GRPC_ADDR needs a fixed port, not 0",
        ),
    ],
    ids=["no-redis", "port-0"],
)
async def test_workers_that_cannot_share_are_refused_with_status_2(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | {"EDGEWARD_WORKERS": "2"} | extra
    log = tmp_path / "serve.log"
    proc = await spawn([sys.executable, "-m", "edgeward", "serve"], env, log)
    try:
        assert await asyncio.to_thread(proc.wait, WAIT_S) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
    assert log.read_text().splitlines() == [f"edgeward serve: {message}"]


async def test_workers_keep_dying_so_the_supervisor_stops_with_status_1(start_host: HostFactory) -> None:
    host = await start_host()
    killed: set[int] = set()
    deadline = time.monotonic() + WAIT_S
    while host.proc.poll() is None:  # kill every worker as soon as the supervisor lists it
        assert time.monotonic() < deadline and len(killed) <= 20, host.output()
        for worker in (await host.readyz())["workers"]:
            if worker["pid"] not in killed:
                killed.add(worker["pid"])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker["pid"], signal.SIGKILL)
        await asyncio.sleep(0.05)
    assert host.proc.returncode == 1, host.output()
    assert "more than 5 worker restarts within 60 s: stopping" in host.output()


async def test_workers_stop_when_the_supervisor_is_killed(start_host: HostFactory) -> None:
    host = await start_host()
    pids = [w["pid"] for w in await host.serving()]
    host.proc.kill()  # no signal reaches the workers: they see their lifeline pipe close

    def gone(pid: int) -> bool:  # exited: reaped, or a zombie its new parent has not reaped yet
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        except FileNotFoundError:
            return True

    await eventually(lambda: all(gone(pid) for pid in pids), "the workers to stop", within_s=WAIT_S)
    assert host.output().count("the supervisor is gone; stopping") == 2


async def test_a_port_held_by_another_program_stops_the_workers_with_status_4(tmp_path: Path) -> None:
    with socket.socket() as held:  # no SO_REUSEPORT: the workers cannot join it
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        public_port, admin_port = free_ports("public", "admin").values()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | {
            "EDGEWARD_WORKERS": "2",
            "EDGEWARD_REDIS_URL": "redis://127.0.0.1:1/0",  # never reached: the workers stop at the bind
            "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{port}",
            "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{public_port}",
            "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{admin_port}",
        }
        log = tmp_path / "serve.log"
        proc = await spawn([SETSID, sys.executable, "-m", "edgeward", "serve"], env, log)
        try:
            assert await asyncio.to_thread(proc.wait, WAIT_S) == 4, log.read_text()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
    assert f"edgeward serve: cannot listen for gRPC on 127.0.0.1:{port}: " in log.read_text()
