"""The baseline servers: a bare grpc.aio unary echo on uvloop, configured like the gateway.

It registers the gateway's method name with raw bytes (no protobuf (de)serialization, as the
gateway does) and answers each request with its own bytes: what gRPC, HTTP/2 and asyncio cost
per call before any gateway logic. With ``--legs`` it also makes, per call, the gateway's two
I/O legs with the gateway's own clients (a Redis ``SET NX PX`` through ``edgeward.io.resp`` and a
backend ``POST /api/v1/user/echo`` through ``BackendClient``) and nothing else: what those legs
cost in place, which the stage measurements in isolation cannot show. With ``--crypto`` it also
verifies one request-sized Ed25519 signature before the legs and signs once after them, as the
gateway does: everything a verifying, forwarding, signing gateway cannot avoid, done in place.

Server settings, one at a time, so bench.grpc_release can measure each against the plain echo:
``--max-concurrent-streams N`` (the HTTP/2 stream cap; the gateway's default is 100, the echo's
none), ``--registered`` (the handler through ``add_registered_method_handlers``, the shape
protoc's ``add_*Servicer_to_server`` uses, instead of a generic handler) and ``--option KEY=INT``
(any other integer channel argument); ``GRPC_POLL_STRATEGY`` and ``GRPC_EXPERIMENTS`` come from
the environment. Prints its port, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from typing import Any

import grpc
import uvloop

from edgeward.gateway.backend import BackendClient, CommandContext
from edgeward.gateway.routes import DEFAULT_ROUTES
from edgeward.io.resp import RespConnection
from edgeward.native import _crypto_c

_CONTEXT = CommandContext("usr_echo", "dsn_echo", "req_echo", "user.echo", "")


class Legs:
    """The gateway's Redis reservation and backend call, made once per echoed request."""

    def __init__(self, redis_url: str, backend_url: str) -> None:
        self.redis = RespConnection(redis_url)
        self.backend = BackendClient(backend_url, 5_000)
        self._ids = itertools.count()

    async def run(self) -> None:
        await self.redis.execute("SET", f"edgeward:bench:echo:{next(self._ids)}", "1", "NX", "PX", "60000")
        await self.backend.forward(DEFAULT_ROUTES["user.echo"], b'{"n":1}', _CONTEXT)


class Crypto:
    """One raw libsodium verify and one raw sign of a request-sized input; the baseline times the same."""

    def __init__(self) -> None:
        self.signer = _crypto_c.Signer(bytes(32))
        self.message = b"x" * 200
        self.signature = self.signer.sign(self.message)

    def verify(self) -> None:
        if not _crypto_c.verify(self.signer.public_key, self.message, self.signature):
            raise AssertionError("the benchmark's own signature does not verify")

    def sign(self) -> None:
        self.signer.sign(self.message)


async def main(args: argparse.Namespace) -> None:
    legs = Legs(args.redis_url, args.backend_url) if args.legs else None
    crypto = Crypto() if args.crypto else None

    async def echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        if crypto is not None:
            crypto.verify()
        if legs is not None:
            await legs.run()
        if crypto is not None:
            crypto.sign()
        return request

    options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 69_632)]
    if args.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", args.max_concurrent_streams))
    for item in args.option:
        key, _, value = item.partition("=")
        options.append((key, int(value)))
    server = grpc.aio.server(options=options)
    handlers = {"ExecuteCommand": grpc.unary_unary_rpc_method_handler(echo)}
    if args.registered:
        server.add_registered_method_handlers("edgeward.v1.EdgeGateway", handlers)  # type: ignore[attr-defined]
    else:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("edgeward.v1.EdgeGateway", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    if legs is not None:
        await legs.backend.start()
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    if legs is not None:
        await legs.backend.close()
        await legs.redis.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--legs", action="store_true", help="also make the gateway's Redis and backend calls")
    parser.add_argument("--crypto", action="store_true", help="also verify and sign once per call")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--backend-url", default="")
    parser.add_argument("--max-concurrent-streams", type=int, default=0)
    parser.add_argument("--registered", action="store_true")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=INT")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
