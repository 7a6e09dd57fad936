"""bench.e2e's bare grpc.aio echo with the server settings under test as flags.

With no flags it is the same server as ``python -m bench.e2e.echo_server`` (raw-bytes unary
handler for the gateway's method, uvloop, the same two options). The flags change one setting at
a time, so each can be measured against the plain echo in the same rounds:

- ``--max-concurrent-streams N``: the HTTP/2 stream cap the gateway sets (100 by default there,
  none in the echo);
- ``--registered``: the handler registered with ``add_registered_method_handlers`` (the shape
  protoc's ``add_*Servicer_to_server`` uses since grpcio 1.62) instead of a generic handler;
- ``--option KEY=INT``: any other integer channel argument.

Environment variables (``GRPC_POLL_STRATEGY``, ``GRPC_EXPERIMENTS``) are the caller's. Prints its
port, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
import uvloop

SERVICE, METHOD = "edgeward.v1.EdgeGateway", "ExecuteCommand"


async def main(args: argparse.Namespace) -> None:
    async def echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 69_632)]
    if args.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", args.max_concurrent_streams))
    for item in args.option:
        key, _, value = item.partition("=")
        options.append((key, int(value)))
    server = grpc.aio.server(options=options)
    handlers = {METHOD: grpc.unary_unary_rpc_method_handler(echo)}
    if args.registered:
        server.add_registered_method_handlers(SERVICE, handlers)  # type: ignore[attr-defined]
    else:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-concurrent-streams", type=int, default=0)
    parser.add_argument("--registered", action="store_true")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=INT")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
