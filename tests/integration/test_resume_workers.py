"""A resumed stream on ``edgeward serve --workers 2`` (docs/push.md, "Resuming a stream"): every
worker follows the backend's push and appends to the same Redis history, once per event, so a
client resumes on whichever worker its new connection lands with exactly the events it missed."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import orjson

from edgeward._pb import gateway_pb2
from edgeward.native.keys import load_signer
from tests.integration.conftest import EXECUTE
from tests.integration.streams import Stream, eventually, post_event
from tests.integration.test_workers import HostFactory, sample, start_host

__all__ = ("start_host",)  # the fixture, imported to be used here

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # see test_workers.execute


async def test_a_stream_resumes_with_exactly_the_missed_events_on_either_worker(
    start_host: HostFactory, tmp_path: Path
) -> None:
    host = await start_host()
    workers = await host.serving()
    await eventually(
        lambda: len(set(re.findall(r"established \(gateway id (\S+)\)", host.output()))) == 2,
        "both workers' push streams",
    )
    key = load_signer(tmp_path / "gateway.key").public_key
    device = await host.login("resume@example.com")
    async with grpc.aio.insecure_channel(host.grpc_target, options=OWN_CONNECTION) as channel:
        answer = gateway_pb2.ExecuteCommandResponse.FromString(
            await channel.unary_unary(EXECUTE)(device.request("user.echo", b"{}"), timeout=30)
        )
        user = orjson.loads(answer.payload_bytes)["user_id"]
        watcher = Stream(channel, device, gateway_key=key)  # stays open: it shows the events went out
        await watcher.opened()
        position = await post_event(stub := host.stub, user, "seen")
        assert (await watcher.next()).event_id == position
        expected = [await post_event(stub, user, n) for n in range(4)]
        assert [(await watcher.next()).event_id for _ in expected] == expected

    def subscriptions(page: str) -> float:
        return sample(page, "edgeward_requests_total", outcome="ok", rpc="SubscribeEvents")

    async def per_worker() -> list[float]:
        return [subscriptions((await host.admin("/metrics", w["admin_port"]))[1]) for w in workers]

    before = await per_worker()
    for _ in range(20):  # fresh connections until both workers have served a resume (the kernel picks)
        async with grpc.aio.insecure_channel(host.grpc_target, options=OWN_CONNECTION) as channel:
            stream = Stream(channel, device, orjson.dumps({"resume_after": position}), gateway_key=key)
            await stream.opened()
            assert [(await stream.next()).event_id for _ in expected] == expected
            marker = await post_event(stub, user, "live")
            assert (await stream.next()).event_id == marker  # nothing in between: no duplicate
            expected.append(marker)
            stream.cancel()
        resumed = [now - then for now, then in zip(await per_worker(), before, strict=True)]
        if all(resumed):
            break
    assert all(resumed), f"every resume landed on one worker: {resumed}"
