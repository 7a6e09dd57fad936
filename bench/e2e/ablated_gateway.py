"""The gateway with one stage of ExecuteCommand replaced by a stand-in that costs nothing.

``python -m bench.e2e.ablated_gateway STAGE`` runs ``edgeward serve`` (same settings, same
environment) after swapping one stage for a no-op, so that the end-to-end benchmark can read
what the stage costs *in place*: the native gateway's CPU per request minus this one's, both
measured in the same round. Stages measured alone (``stages.py``) miss what a stage costs
inside the running server, where gRPC, the kernel's loopback work and three threads share one
core's caches; this is the measure that accounts for it.

Only for measuring: a gateway run this way does not verify, reserve, forward or limit what its
stage covers. The stand-ins:

- ``crypto``: the client signature always verifies, and every answer is the first one encoded
  and signed (the load generator verifies that first answer, so the run still proves a
  working gateway): Ed25519 verify, response encode and sign are gone.
- ``replay``: every reservation (``claim``, as ExecuteCommand makes them since idempotent retry, or
  ``reserve``) succeeds without Redis, never with the budgets' script, and no answer is kept
  (``finish`` writes nothing).
- ``detach``: step 8 (forward, sign, keep the answer) is awaited in the call's own task instead of
  a task of its own shielded from the call (``CommandExecutor._execute``): what letting a command
  outlive a client that left costs.
- ``backend``: every command is answered "ok" with a body like the stub's echo, without a call.
- ``protection``: no command budgets, no pre-auth guard, no request metrics.
"""

from __future__ import annotations

import sys
from typing import Any

from edgeward import cli
from edgeward.gateway import pipeline
from edgeward.gateway.backend import BackendAnswer, BackendClient
from edgeward.gateway.grpc_service import GatewayService
from edgeward.gateway.replay import RedisReplayStore
from edgeward.gateway.tracing import RequestTracer
from edgeward.native.envelope import SignedRequest
from edgeward.protection.budgets import CommandBudgets
from edgeward.protection.preauth_guard import PreAuthGuard


def _without_crypto() -> None:
    encode = pipeline.encode_response
    first: list[bytes] = []

    def encode_once(*args: Any) -> bytes:
        if not first:
            first.append(encode(*args))
        return first[0]

    pipeline.verify = lambda _key, _message, _signature: True  # type: ignore[assignment]
    pipeline.encode_response = encode_once  # type: ignore[assignment]


def _without_replay() -> None:
    async def reserve(_self: RedisReplayStore, _dsid: str, _request_id: str, _ttl_ms: int) -> bool:
        return True

    async def claim(_self: RedisReplayStore, _dsid: str, _request_id: str, _ttl_ms: int, _print: bytes) -> None:
        return None

    RedisReplayStore.reserve = reserve  # type: ignore[method-assign]
    RedisReplayStore.claim = claim  # type: ignore[method-assign]
    RedisReplayStore.finish = lambda *_args: None  # type: ignore[method-assign,assignment,return-value]
    RedisReplayStore.reserve_charging = lambda *_args: None  # type: ignore[method-assign,assignment,return-value]


def _without_detaching() -> None:
    async def execute(
        self: pipeline.CommandExecutor, req: SignedRequest, client_ip: str, tracer: RequestTracer | None
    ) -> tuple[bytes, str]:
        verified = await self._verifier.verify(req, client_ip, keep_answer=True)
        if verified.kept is not None:
            return verified.kept, pipeline.REPLAYED_RESULT
        return await self._forward_and_keep(req, verified, tracer)

    pipeline.CommandExecutor._execute = execute  # type: ignore[method-assign]


def _without_backend() -> None:
    async def forward(_self: BackendClient, _route: object, payload: bytes, _ctx: object) -> BackendAnswer:
        return BackendAnswer("ok", b'{"echo":' + payload + b"}", 200)

    BackendClient.forward = forward  # type: ignore[method-assign,assignment]


class _Uncounted:
    def inc(self) -> None:
        pass


def _without_protection() -> None:
    CommandBudgets.charge = lambda *_args: None  # type: ignore[method-assign,assignment,return-value]
    PreAuthGuard.check = lambda *_args: None  # type: ignore[method-assign,assignment,return-value]
    GatewayService._count = lambda *_args: None  # type: ignore[method-assign]
    GatewayService._result_counter = lambda *_args: _Uncounted()  # type: ignore[method-assign,assignment,return-value]


_STAND_INS = {
    "crypto": _without_crypto,
    "replay": _without_replay,
    "detach": _without_detaching,
    "backend": _without_backend,
    "protection": _without_protection,
}
STAGES = tuple(_STAND_INS)


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in _STAND_INS:
        raise SystemExit(f"usage: python -m bench.e2e.ablated_gateway {{{','.join(STAGES)}}}")
    _STAND_INS[sys.argv[1]]()
    cli.main(["serve"])


if __name__ == "__main__":
    main()
