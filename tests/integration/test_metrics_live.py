"""/metrics is live: each series moves by exactly what real traffic did, with no /readyz poll between scrapes."""

from __future__ import annotations

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families

from edgeward import __version__
from edgeward.gateway.server import Gateway
from edgeward.native import loader
from tests.integration.conftest import Device, call, rejected

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gateway: Gateway) -> Samples:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gateway.admin_http_port}/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much one series moved between two scrapes (a series absent before counts from 0)."""
    key = (name, frozenset(labels.items()))
    assert key in after, f"{name}{labels} is not exported"
    return after[key] - before.get(key, 0.0)


async def test_series_move_by_what_the_traffic_did(
    gateway: Gateway, channel: grpc.aio.Channel, device: Device
) -> None:
    before = await scrape(gateway)
    replayed = device.request("user.echo", b'{"n":0}')
    await call(channel, replayed)
    for n in (1, 2):
        await call(channel, device.request("user.echo", b'{"n":%d}' % n))
    assert (await rejected(channel, device.resigned(replayed))).reason == "replayed_request"
    stranger = Device(device.signer, "dsn_unknown_to_the_backend", device.email)
    assert (await rejected(channel, stranger.request("user.echo"))).reason == "session_not_found"
    after = await scrape(gateway)

    execute = {"rpc": "ExecuteCommand"}
    assert moved(before, after, "edgeward_requests_total", outcome="ok", **execute) == 3
    assert moved(before, after, "edgeward_requests_total", outcome="replayed_request", **execute) == 1
    assert moved(before, after, "edgeward_requests_total", outcome="session_not_found", **execute) == 1
    assert moved(before, after, "edgeward_request_duration_seconds_count", **execute) == 5
    assert moved(before, after, "edgeward_backend_results_total", result_code="ok") == 3
    # Backend latency: the three forwarded commands, on their route's series only.
    assert moved(before, after, "edgeward_backend_request_duration_seconds_count", route="user.echo") == 3
    assert moved(before, after, "edgeward_backend_request_duration_seconds_bucket", route="user.echo", le="+Inf") == 3
    assert moved(before, after, "edgeward_backend_request_duration_seconds_sum", route="user.echo") > 0
    assert moved(before, after, "edgeward_backend_request_duration_seconds_count", route="user.profile.get") == 0
    # Replay reservations: three first-seen and the replay; the unknown session never got that far.
    assert moved(before, after, "edgeward_replay_reservation_duration_seconds_count") == 4
    # Session cache, read at scrape time: the device's session and the unknown one each fetched once.
    assert moved(before, after, "edgeward_session_backend_fetches_total") == 2
    assert moved(before, after, "edgeward_sessions_cached") == 1
    # No stream ended as a slow consumer, and the one name for that fact is exported.
    assert moved(before, after, "edgeward_streams_ended_total", reason="slow_consumer") == 0
    assert ("edgeward_slow_consumers_total", frozenset()) not in after
    # No connection was refused on either HTTP listener.
    for listener in ("public", "admin"):
        for cap in ("total", "per_ip"):
            assert moved(before, after, "edgeward_http_connections_refused_total", listener=listener, cap=cap) == 0

    # Process metrics and build info, on the gateway's own registry.
    assert after[("process_cpu_seconds_total", frozenset())] >= before[("process_cpu_seconds_total", frozenset())] > 0
    assert after[("process_resident_memory_bytes", frozenset())] > 0
    assert after[("process_open_fds", frozenset())] > 0
    assert moved(before, after, "process_start_time_seconds") == 0
    build = [(labels, value) for (name, labels), value in after.items() if name == "edgeward_build_info"]
    assert len(build) == 1 and build[0][1] == 1
    assert dict(build[0][0])["version"] == __version__
    assert dict(build[0][0])["implementation"] == loader.implementation()
