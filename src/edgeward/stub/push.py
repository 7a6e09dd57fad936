"""The backend side of ``edgeward.v1.Push``: fan-out of push events to connected gateways.

Each event is serialized once and the same bytes are queued to every stream. A stream's queue
is bounded: a gateway that stops reading is ended with RESOURCE_EXHAUSTED ``slow_consumer``
instead of making the stub grow without limit, and nobody else waits for it. A stream is
registered before its initial metadata is sent, so a client that has received the headers
(``await call.initial_metadata()``) is guaranteed every event published from then on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

import grpc

from edgeward._pb import push_pb2
from edgeward.config import Address
from edgeward.runtime import ListenError

__all__ = ("PushHub", "PushServer")

log = logging.getLogger(__name__)

_SERVICE = "edgeward.v1.Push"


@dataclasses.dataclass(frozen=True, slots=True)
class _End:
    """Queued last to end a stream with this status (the queue keeps one slot free for it)."""

    code: grpc.StatusCode
    reason: str


_SLOW = _End(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow_consumer")
_STOPPING = _End(grpc.StatusCode.UNAVAILABLE, "push_server_stopping")


@dataclasses.dataclass(eq=False, slots=True)
class _Stream:
    gateway_id: str
    peer: str
    queue: asyncio.Queue[bytes | _End]


class PushHub:
    """Every open SubscribePush stream, and publishing to all of them."""

    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self._streams: set[_Stream] = set()

    def __len__(self) -> int:
        return len(self._streams)

    def publish(self, event: push_pb2.PushEvent) -> int:
        """Queue ``event`` to every open stream; returns how many streams it was queued to."""
        data = event.SerializeToString()
        queued = 0
        for stream in list(self._streams):
            if stream.queue.qsize() >= self._queue_size:
                log.warning(
                    "push stream of gateway %r (%s) fell %d events behind: ending it",
                    stream.gateway_id, stream.peer, self._queue_size,
                )
                self._end(stream, _SLOW)
                continue
            stream.queue.put_nowait(data)
            queued += 1
        return queued

    def end_all(self) -> None:
        """End every open stream with UNAVAILABLE, so gateways reconnect rather than hang."""
        for stream in list(self._streams):
            self._end(stream, _STOPPING)

    def handler(self) -> grpc.GenericRpcHandler[push_pb2.SubscribePushRequest, bytes]:
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "SubscribePush": grpc.unary_stream_rpc_method_handler(
                    self._subscribe, request_deserializer=push_pb2.SubscribePushRequest.FromString
                )
            },
        )

    def _end(self, stream: _Stream, end: _End) -> None:
        self._streams.discard(stream)
        stream.queue.put_nowait(end)

    async def _subscribe(
        self,
        request: push_pb2.SubscribePushRequest,
        context: grpc.aio.ServicerContext[push_pb2.SubscribePushRequest, bytes],
    ) -> AsyncIterator[bytes]:
        stream = _Stream(request.gateway_id[:128], context.peer(), asyncio.Queue(self._queue_size + 1))
        self._streams.add(stream)
        log.info("gateway %r (%s) subscribed to push", stream.gateway_id, stream.peer)
        try:
            await context.send_initial_metadata(())
            while True:
                item = await stream.queue.get()
                if isinstance(item, _End):
                    await context.abort(item.code, item.reason)
                yield item
        finally:
            self._streams.discard(stream)
            log.info("push stream of gateway %r (%s) closed", stream.gateway_id, stream.peer)


class PushServer:
    """The gRPC server of the hub; it can be stopped and started again on the port it first got."""

    def __init__(self, hub: PushHub, addr: Address, stop_grace_s: float = 0.5) -> None:
        self._hub = hub
        self._addr = addr
        self._grace = stop_grace_s
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((self._hub.handler(),))
        addr = Address(self._addr.host, self.port or self._addr.port)
        try:
            port = server.add_insecure_port(str(addr))
        except RuntimeError as exc:  # grpc raises RuntimeError when the bind fails
            raise ListenError("push gRPC", str(addr), exc) from None
        if port == 0:
            raise ListenError("push gRPC", str(addr), OSError("the address is in use or not available"))
        await server.start()
        self._server, self.port = server, port

    async def stop(self) -> None:
        """End open streams first (they would otherwise hold the grace period), then the server."""
        server, self._server = self._server, None
        if server is None:
            return
        self._hub.end_all()
        await server.stop(self._grace)
