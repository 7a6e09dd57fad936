"""The baseline server: a bare grpc.aio unary echo on uvloop, configured like the gateway.

It registers the gateway's method name with raw bytes (no protobuf (de)serialization, as the
gateway does) and answers each request with its own bytes: what gRPC, HTTP/2 and asyncio cost
per call before any gateway logic. Prints its port, then serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
import uvloop


async def _echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def main() -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 69_632)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "edgeward.v1.EdgeGateway", {"ExecuteCommand": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    sys.exit(0)
