"""One place that turns a Redis URL into a client: a single node or a Redis Cluster.

Every user of Redis (the replay store, the Redis limiter, the session source) opens its client
here, so a ``redis+cluster://`` URL works for each of them without them knowing which it got.
The single-node case is the plain ``RespConnection``, untouched: the cluster layer costs nothing
where there is no cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from edgeward.io.cluster import ClusterConnection
from edgeward.io.resp import Arg, Reply, RespConnection

__all__ = ("CLUSTER_SCHEME", "RedisClient", "connect")

CLUSTER_SCHEME = "redis+cluster"


class RedisClient(Protocol):
    """What ``RespConnection`` and ``ClusterConnection`` both offer (see ``edgeward.io.resp``).

    Await what ``send`` returns: the cluster client's is a coroutine, sent when awaited. A call
    nobody waits for (a refund) goes through ``pipeline``, whose future runs either way.
    """

    @property
    def writes(self) -> int: ...

    @property
    def commands_written(self) -> int: ...

    def send(self, command: Sequence[Arg]) -> Awaitable[list[Reply]]: ...

    def pipeline(self, commands: Iterable[Sequence[Arg]]) -> asyncio.Future[list[Reply]]: ...

    async def execute(self, *args: Arg) -> Reply: ...

    async def ping(self) -> bool: ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


def connect(url: str, *, socket_timeout_ms: int = 1000, connect_timeout_ms: int | None = None) -> RedisClient:
    """A client for ``url``: ``redis+cluster://host:port[,host:port...]`` gives a cluster client, any
    other URL ``edgeward.io.resp`` accepts a single-node connection. Nothing connects until the
    first command; a malformed URL raises ``ValueError`` here."""
    if urlsplit(url).scheme == CLUSTER_SCHEME:
        return ClusterConnection(url, socket_timeout_ms=socket_timeout_ms, connect_timeout_ms=connect_timeout_ms)
    return RespConnection(url, socket_timeout_ms=socket_timeout_ms, connect_timeout_ms=connect_timeout_ms)
