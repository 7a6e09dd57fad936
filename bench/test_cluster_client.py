"""Client-side CPU per replay reservation: the Redis Cluster client against the single-node client.

Every candidate is ``edgeward.gateway.replay.RedisReplayStore``; only the URL differs:

- ``resp``: ``redis://`` to one node, so ``edgeward.io.resp.RespConnection``: the lean path;
- ``cluster-1``: ``redis+cluster://`` to that same node, which owns every slot: the cluster
  layer alone (slot, map look-up, redirect check), with the same writes per loop turn;
- ``cluster-3``: ``redis+cluster://`` to 3 masters (with replicas): a turn's reservations split
  into up to three writes, one per master.

Each measurement is ``time.process_time`` over ``RESERVATIONS`` fresh reservations made ``batch``
at a time (one task each, like gateway requests), so Redis's own CPU is not counted. Candidates
alternate within each repeat, on asyncio's loop and on uvloop. Each candidate's estimate is its
fastest repeat (slower ones differ by what other processes did to them, as in bench/conftest.py);
the median and the spread (min-max) are printed beside it. The assertion is a ratio to ``resp``
measured in the same run, never an absolute time.

    .venv/bin/pytest bench/test_cluster_client.py -q -s -p no:cacheprovider
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable, Iterator

import pytest
import uvloop

from edgeward.gateway.replay import RedisReplayStore
from tests.support.redis_cluster import RedisCluster

TTL_MS = 60_000
BATCHES = (1, 32)
RESERVATIONS = 4_000  # per measurement, whatever the batch size
REPEATS = 5
MAX_LAYER_RATIO = 1.35  # cluster-1 CPU / resp CPU: what the cluster layer may add on one node
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[RedisCluster, RedisCluster]]:
    one, three = RedisCluster(nodes=1), RedisCluster(nodes=6)
    try:
        one.start()
        three.start()
        yield one, three
    finally:
        one.close()
        three.close()


async def cpu_per_reservation(store: RedisReplayStore, batch: int, tag: str) -> float:
    """Microseconds of this process's CPU per reservation, over ``RESERVATIONS`` fresh keys.

    Sessions vary within a batch, so on three masters a batch spreads over all of them."""
    rounds = RESERVATIONS // batch
    gc.collect()
    start = time.process_time()
    for r in range(rounds):
        results = await asyncio.gather(*(store.reserve(f"{tag}-{i}", f"r{r}", TTL_MS) for i in range(batch)))
        if not all(results):
            raise AssertionError(f"{tag}: a fresh key was reported as a replay")
    return (time.process_time() - start) / (rounds * batch) * 1e6


async def measure(one: RedisCluster, three: RedisCluster) -> dict[tuple[str, int], list[float]]:
    """µs per reservation for each (candidate, batch size), one sample per repeat."""
    stores = {
        "resp": RedisReplayStore(f"redis://127.0.0.1:{one.ports[0]}"),
        "cluster-1": RedisReplayStore(one.url),
        "cluster-3": RedisReplayStore(three.url),
    }
    samples: dict[tuple[str, int], list[float]] = {}
    try:
        for name, store in stores.items():  # connect, load the maps, warm up, and check replays are seen
            await cpu_per_reservation(store, 32, f"warm-{name}")
            assert await store.reserve(f"warm-{name}-0", "r0", TTL_MS) is False
        for repeat in range(REPEATS):
            one.flushall()
            three.flushall()
            for batch in BATCHES:
                for name, store in stores.items():
                    sample = await cpu_per_reservation(store, batch, f"{name}-{repeat}-{batch}")
                    samples.setdefault((name, batch), []).append(sample)
    finally:
        for store in stores.values():
            await store.close()
    return samples


def test_cluster_client_cpu_per_reservation(clusters: tuple[RedisCluster, RedisCluster]) -> None:
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    for loop_name, factory in LOOPS.items():
        with asyncio.Runner(loop_factory=factory) as runner:
            for (name, batch), values in runner.run(measure(*clusters)).items():
                results.setdefault((loop_name, batch), {})[name] = values

    names = ("resp", "cluster-1", "cluster-3")
    print(f"\nclient CPU per reservation, µs: fastest of {REPEATS} x {RESERVATIONS} reservations (median, max)")
    print(f"{'loop':<8} {'batch':>5} " + " ".join(f"{n:>19}" for n in names) + f" {'c1/resp':>8} {'c3/resp':>8}")
    layer = {}
    for (loop_name, batch), row in results.items():
        best = {name: min(values) for name, values in row.items()}
        cells = [f"{best[n]:5.1f} ({statistics.median(row[n]):.1f}, {max(row[n]):.1f})" for n in names]
        layer[(loop_name, batch)] = best["cluster-1"] / best["resp"]
        print(
            f"{loop_name:<8} {batch:>5} " + " ".join(f"{c:>19}" for c in cells)
            + f" {best['cluster-1'] / best['resp']:>7.2f}x {best['cluster-3'] / best['resp']:>7.2f}x"
        )
    heavy = {key: round(ratio, 2) for key, ratio in layer.items() if ratio > MAX_LAYER_RATIO}
    assert not heavy, f"the cluster layer costs more than {MAX_LAYER_RATIO}x the single-node client: {heavy}"
