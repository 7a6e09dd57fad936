"""Redis stopped under a paced load of signed commands: fail closed, count, recover (issue 12.4).

The gateway's replay store is a real redis-server. Several senders send signed ``user.echo``
commands, each with a fresh request id, one after another with a short pause, over one channel;
the command budgets and the pre-auth guard are off so that only the replay store decides. The
load runs in phases driven by events, never by the clock:

1. Redis up: every command is accepted.
2. While the senders keep going, Redis is stopped (``RedisServer.stop()`` returns once the
   process has exited). Commands that race the stop may go either way, but only two ways:
   accepted, or ``replay_store_unavailable``.
3. Redis down (the process is gone and the store's own probe fails): a fixed number of commands,
   every one refused with UNAVAILABLE ``replay_store_unavailable``, and none reaches the backend.
4. Redis started again; the readiness probe of the store (``/readyz``'s ``replay_store``) is
   polled until it passes, with nothing else done for the gateway: it must reconnect by itself.
   Then every command is accepted again, and a replay of accepted commands is refused again, so
   the recovered store really reserves (it is not failing open).

Throughout, the backend's count of forwarded commands (``stub.calls["user.echo"]``) equals the
number of commands the gateway accepted, phase by phase: a refused command was never forwarded and
an accepted one was forwarded once. Every accepted answer is verified with the gateway's key and
echoes the tag of its own request.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import grpc
import orjson

from edgeward._pb import gateway_pb2
from edgeward.client import error_from_rpc, verify_response
from edgeward.stub import StubBackend
from tests.integration.conftest import EXECUTE, GATEWAY_SIGNER, Device, GatewayFactory, login
from tests.support.redis_server import RedisServer

SENDERS = 6
PER_SENDER = 30  # per fixed phase: 180 commands each in phases 1, 3 and 4, so 540 plus the race
PACE_S = 0.002  # each sender's pause between its commands: a steady load, not a burst
RACE_CAP = 500  # per sender: the racing phase ends when Redis is down, at the latest after this
PROBES = 300  # bounded wait for recovery: 300 x 0.05 s

OK = "ok"
UNAVAILABLE = "UNAVAILABLE replay_store_unavailable"
NO_BUDGETS = {
    "budget_ip": None,
    "budget_session": None,
    "budget_user": None,
    "budget_message_type": None,
    "preauth_failure_limit": None,
}


class Load:
    """Signed commands of one device, sent and classified; ``accepted`` counts every ok answer."""

    def __init__(self, channel: grpc.aio.Channel, device: Device) -> None:
        self.execute = channel.unary_unary(EXECUTE)
        self.device = device
        self.accepted = 0  # commands answered ok
        self.accepted_data: list[bytes] = []  # their request bytes, to replay some
        self.sent = 0

    async def send(self, data: bytes, tag: int | None = None) -> str:
        """The outcome of one command: "ok" (answer verified) or "CODE reason"."""
        request_id = gateway_pb2.ExecuteCommandRequest.FromString(data).envelope.request_id
        try:
            answer = await self.execute(data, timeout=30)
        except grpc.aio.AioRpcError as rpc_error:
            err = error_from_rpc(rpc_error)
            return f"{err.code.name} {err.reason}"
        result = verify_response(
            gateway_pb2.ExecuteCommandResponse.FromString(answer), GATEWAY_SIGNER.public_key, request_id
        )
        assert result.result_code == OK, result
        if tag is not None:
            assert result.json()["echo"] == {"tag": tag}, result.json()
        self.accepted += 1
        self.accepted_data.append(data)
        return OK

    async def command(self) -> str:
        self.sent += 1
        tag = self.sent
        return await self.send(self.device.request("user.echo", orjson.dumps({"tag": tag})), tag)

    async def phase(self, per_sender: int, until: Callable[[], bool] = lambda: False) -> Counter[str]:
        """``SENDERS`` concurrent senders, each sending ``per_sender`` commands or until ``until()``."""
        outcomes: Counter[str] = Counter()

        async def sender() -> None:
            for _ in range(per_sender):
                if until():
                    return
                outcomes[await self.command()] += 1
                await asyncio.sleep(PACE_S)

        async with asyncio.TaskGroup() as group:
            for _ in range(SENDERS):
                group.create_task(sender())
        return outcomes


async def test_redis_stopped_under_load_fails_closed_and_service_resumes(
    start_gateway: GatewayFactory, stub: StubBackend, redis_server: RedisServer
) -> None:
    gateway = await start_gateway(redis_url=redis_server.url, **NO_BUDGETS)
    device = await login(gateway, stub)

    def forwarded() -> int:
        return stub.calls["user.echo"]

    assert forwarded() == 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        load = Load(channel, device)

        # 1. Redis up.
        up = await load.phase(PER_SENDER)
        assert up == {OK: SENDERS * PER_SENDER}
        assert forwarded() == load.accepted == SENDERS * PER_SENDER

        # 2. Redis stopped while the senders keep going.
        down = asyncio.Event()

        async def stop_redis() -> None:
            await asyncio.to_thread(redis_server.stop)
            down.set()

        async with asyncio.TaskGroup() as group:
            race = group.create_task(load.phase(RACE_CAP, until=down.is_set))
            await asyncio.sleep(PACE_S * 10)  # let the senders get going first (an order, not a measure)
            group.create_task(stop_redis())
        assert sum(race.result().values()) < SENDERS * RACE_CAP, "the senders ran out before Redis was down"
        assert set(race.result()) <= {OK, UNAVAILABLE}, race.result()
        assert forwarded() == load.accepted

        # 3. Redis down.
        assert not await gateway.replay.ping()
        accepted_before = load.accepted
        refused = await load.phase(PER_SENDER)
        assert refused == {UNAVAILABLE: SENDERS * PER_SENDER}, refused
        assert load.accepted == accepted_before
        assert forwarded() == load.accepted

        # 4. Redis back: the store reconnects by itself.
        await asyncio.to_thread(redis_server.start)
        for _ in range(PROBES):
            if await gateway.replay.ping():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the replay store did not reconnect after Redis came back")
        accepted_before = load.accepted
        recovered = await load.phase(PER_SENDER)
        assert recovered == {OK: SENDERS * PER_SENDER}, recovered
        assert load.accepted - accepted_before == SENDERS * PER_SENDER
        assert forwarded() == load.accepted

        # The recovered store reserves again: the commands it just accepted are replays now (signed
        # again: an identical resend would get its kept answer, docs/replay.md).
        replays = Counter([await load.send(device.resigned(data)) for data in load.accepted_data[-SENDERS:]])
        assert replays == {"ALREADY_EXISTS replayed_request": SENDERS}, replays
        assert forwarded() == load.accepted

    total = sum(up.values()) + sum(race.result().values()) + sum(refused.values()) + sum(recovered.values())
    assert load.sent == total >= 3 * SENDERS * PER_SENDER
