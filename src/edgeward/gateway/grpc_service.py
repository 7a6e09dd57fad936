"""The EdgeGateway gRPC service: a thin layer over the pipeline.

Handlers are registered with raw bytes (no protobuf deserializer): the envelope codec decodes
the request itself, so an undecodable message is answered with our ``invalid_envelope`` and the
native codec can take the bytes directly. A ``Rejection`` becomes the contract's status; an
unexpected exception is logged and answered INTERNAL ``internal_error`` without details of it.

SubscribeEvents writes with ``context.write`` rather than yielding from a generator, so the hub
can interrupt a write that a stalled client blocks; its final status is set on the context and
the handler returns, which works even while such a write is still pending in gRPC (the client
reads the status after whatever was already sent).

At shutdown, ``cut_in_flight`` answers every ExecuteCommand still running with UNAVAILABLE
``shutting_down`` and its ErrorInfo, shortly before gRPC's grace ends and would cancel the call
with a bare "Cancelling all calls": the client then knows the gateway refused to wait, though the
backend may have run the command already (docs/protocol.md, shutdown).

Two transports share this service: gRPC (the handlers here) and gRPC-Web (``gateway/grpc_web.py``).
``execute`` and ``open_subscription`` are the one path both take into the pipeline, with the
counting, the access line and the shutdown cut; each transport only turns the outcome into its
own wire form. A gRPC-Web call is also counted in ``edgeward_grpc_web_requests`` and its access
line says ``transport: grpc-web``; the gRPC path pays one identity comparison for that.

Each ExecuteCommand, and each SubscribeEvents opening, gets an ``edgeward.access`` line
(docs/logging.md). The request's ids in it are decoded again from the request bytes, and only when
a line is written: the pipeline stays as it is, and a sampled-out or disabled access log costs
nothing more (a typical request decodes in about a microsecond, against several for the line).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from prometheus_client import Counter

from edgeward.gateway.metrics import GatewayMetrics
from edgeward.gateway.pipeline import REPLAYED_RESULT, CommandExecutor, SubscriptionOpener
from edgeward.native.envelope import decode_request
from edgeward.push.hub import Subscriber
from edgeward.reasons import Reason, Rejection
from edgeward.rpc_errors import trailers_for
from edgeward.runtime import AccessLog

__all__ = (
    "GRPC",
    "GRPC_WEB",
    "INTERNAL_ERROR",
    "REPLAYED_METADATA",
    "SERVICE_NAME",
    "GatewayService",
    "InternalError",
    "client_ip",
)

SERVICE_NAME = "edgeward.v1.EdgeGateway"
EXECUTE, SUBSCRIBE = "ExecuteCommand", "SubscribeEvents"
# The transports, as the access line's ``transport`` field names them (compared by identity).
GRPC, GRPC_WEB = "grpc", "grpc-web"
INTERNAL_ERROR = "internal_error"  # the status message of a fault in the gateway itself (docs/protocol.md §6.4)
_MAX_RESULT_CODES = 64
# Trailing metadata of a kept response served again to a retry (docs/replay.md, "Idempotent retry").
REPLAYED_METADATA = (("edgeward-replayed", "1"),)
log = logging.getLogger(__name__)


def client_ip(peer: str) -> str:
    """The address part of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``, ``unix:...``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


def _request_ids(request: bytes, kind: str) -> dict[str, str]:
    """The ids the access log shows (never the payload or signature); none when the bytes do not decode.

    Decoded with the gateway's own codec, so the values are bounded and valid UTF-8 even when the
    request was refused: the log shows no more than the envelope's limits allow.
    """
    try:
        req = decode_request(request, len(request), kind)  # the payload limit was the pipeline's to apply
    except Rejection:
        return {}
    return {
        "message_type": req.message_type,
        "request_id": req.request_id,
        "trace_id": req.trace_id,
        "device_session_id": req.device_session_id,
    }


class InternalError(Exception):
    """A fault of the gateway itself, already logged and counted: answer INTERNAL ``internal_error``."""


def _end_with(context: grpc.aio.ServicerContext[bytes, bytes], rejection: Rejection) -> None:
    """Set the contract's status for ``rejection``; gRPC sends it when the handler returns."""
    context.set_code(rejection.reason.code)
    context.set_details(rejection.reason.wire)
    context.set_trailing_metadata(trailers_for(rejection))


class GatewayService:
    def __init__(
        self,
        commands: CommandExecutor,
        subscriptions: SubscriptionOpener,
        metrics: GatewayMetrics,
        access: AccessLog | None = None,
    ) -> None:
        self._commands = commands
        self._access = access or AccessLog()
        self._subscriptions = subscriptions
        self._metrics = metrics
        self.accepting = True  # False while draining: new calls get shutting_down
        # Children bound once: a labels() lookup per request costs more than the increment.
        self._ok = metrics.requests.labels("ExecuteCommand", "ok")
        self._replayed = metrics.requests.labels("ExecuteCommand", "replayed")
        self._duration = metrics.duration.labels("ExecuteCommand")
        self._subscribe_duration = metrics.duration.labels("SubscribeEvents")
        self._results: dict[str, Counter] = {}
        self._in_flight: set[asyncio.Task[object]] = set()  # ExecuteCommand handlers running now
        self._cutting = False  # set by cut_in_flight: a cancelled handler answers shutting_down

    def handler(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "ExecuteCommand": grpc.unary_unary_rpc_method_handler(self.execute_command),
                "SubscribeEvents": grpc.unary_stream_rpc_method_handler(self.subscribe_events),
            },
        )

    async def close_commands(self) -> None:
        """At shutdown, after the gRPC server stopped: end the commands whose calls already left."""
        await self._commands.close()

    def cut_in_flight(self) -> int:
        """Answer every ExecuteCommand still running with shutting_down (shutdown); how many there were."""
        self._cutting = True
        for task in self._in_flight:
            task.cancel()
        return len(self._in_flight)

    async def wait_in_flight(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the ExecuteCommand calls running now to finish (shutdown)."""
        if self._in_flight and timeout_s > 0:
            await asyncio.wait(list(self._in_flight), timeout=timeout_s)

    async def execute_command(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        peer = context.peer()
        try:
            response, replayed = await self.execute(request, client_ip(peer), peer)
        except Rejection as rejection:
            await context.abort(rejection.reason.code, rejection.reason.wire, trailing_metadata=trailers_for(rejection))
        except InternalError:
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR)
        if replayed:
            context.set_trailing_metadata(REPLAYED_METADATA)
        return response

    async def execute(self, request: bytes, ip: str, peer: str, transport: str = GRPC) -> tuple[bytes, bool]:
        """ExecuteCommand through the pipeline, for either transport: the signed response, and
        whether it is a kept answer served again (``edgeward-replayed``).

        Counted and logged here, before the caller answers, so a client that has its answer can rely
        on the metrics saying so. Raises ``Rejection`` (the contract's status), ``InternalError``, or
        the cancellation of a client that left (counted ``cancelled``). The task is cut at shutdown
        like a gRPC call (``cut_in_flight``): it then raises ``shutting_down``.
        """
        started = time.perf_counter()
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            if not self.accepting:
                raise Rejection(Reason.SHUTTING_DOWN)
            response, result_code = await self._commands.execute(request, ip)
        except asyncio.CancelledError:
            if not self._cutting:  # the client went away, or its transport cancels
                if transport is not GRPC:
                    self._metrics.grpc_web_requests.labels(EXECUTE, "cancelled").inc()
                self._count(self._metrics.requests.labels("ExecuteCommand", "cancelled"), started)
                self._log_call(EXECUTE, request, peer, transport, "cancelled", grpc.StatusCode.CANCELLED, started)
                raise
            task.uncancel()
            rejection = Rejection(Reason.SHUTTING_DOWN, "the gateway stopped before the command finished")
            self._rejected(EXECUTE, request, peer, transport, rejection, started)
            raise rejection from None
        except Rejection as rejection:
            self._rejected(EXECUTE, request, peer, transport, rejection, started)
            raise
        except Exception:
            if transport is not GRPC:
                self._metrics.grpc_web_requests.labels(EXECUTE, INTERNAL_ERROR).inc()
            self._count(self._metrics.requests.labels("ExecuteCommand", INTERNAL_ERROR), started)
            log.exception("ExecuteCommand failed unexpectedly")
            self._log_call(EXECUTE, request, peer, transport, INTERNAL_ERROR, grpc.StatusCode.INTERNAL, started)
            raise InternalError from None
        finally:
            self._in_flight.discard(task)
        if transport is not GRPC:
            outcome = "replayed" if result_code == REPLAYED_RESULT else "ok"
            self._metrics.grpc_web_requests.labels(EXECUTE, outcome).inc()
        if result_code == REPLAYED_RESULT:  # the bytes of an earlier answer: no backend result to count
            self._count(self._replayed, started)
            if self._access.wants(accepted=True):
                self._log_call(EXECUTE, request, peer, transport, "replayed", grpc.StatusCode.OK, started)
            return response, True
        self._result_counter(result_code).inc()
        self._count(self._ok, started)
        if self._access.wants(accepted=True):
            self._log_call(EXECUTE, request, peer, transport, "ok", grpc.StatusCode.OK, started, result_code)
        return response, False

    def refused(
        self, method: str, peer: str, transport: str, outcome: str, code: grpc.StatusCode, started: float
    ) -> None:
        """Count and log a call its transport refused before the pipeline saw it (gRPC-Web: bad
        framing, a body over the limit), so it shows like any other refusal."""
        self._metrics.requests.labels(method, outcome).inc()
        (self._duration if method == EXECUTE else self._subscribe_duration).observe(time.perf_counter() - started)
        self._metrics.grpc_web_requests.labels(method, outcome).inc()
        self._log_call(method, b"", peer, transport, outcome, code, started)

    def _rejected(
        self, method: str, request: bytes, peer: str, transport: str, rejection: Rejection, started: float
    ) -> None:
        if transport is not GRPC:
            self._metrics.grpc_web_requests.labels(method, rejection.reason.wire).inc()
        self._count(self._metrics.requests.labels(method, rejection.reason.wire), started)
        self._log_call(method, request, peer, transport, rejection.reason.wire, rejection.reason.code, started)

    def _count(self, outcome: Counter, started: float) -> None:
        outcome.inc()
        self._duration.observe(time.perf_counter() - started)

    def _log_call(
        self,
        method: str,
        request: bytes,
        peer: str,
        transport: str,
        outcome: str,
        code: grpc.StatusCode,
        started: float,
        result_code: str = "",
    ) -> None:
        """The call's access line (an accepted call asked ``wants`` itself: its line may be sampled out)."""
        if outcome not in ("ok", "replayed") and not self._access.wants(accepted=False):
            return
        fields: dict[str, object] = {
            "peer": peer,
            "transport": transport,
            "grpc_code": code.name,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            **_request_ids(request, "subscribe" if method == SUBSCRIBE else "execute"),
        }
        if result_code:
            fields["result_code"] = result_code
        self._access.write(method, outcome, fields)

    async def subscribe_events(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        """Open the stream (verification, registration), then write events until the hub ends it."""
        peer = context.peer()
        try:
            subscriber, greeting = await self.open_subscription(request, client_ip(peer), peer)
        except Rejection as rejection:
            _end_with(context, rejection)
            return
        except InternalError:
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details(INTERNAL_ERROR)
            return
        try:
            # Headers go out on their own first: grpc.aio marks them sent only when a write
            # completes, so after the hub interrupted the first write (a stalled client, or
            # shutdown) the final status would carry them again and gRPC would refuse the batch
            # (TOO_MANY_OPERATIONS), leaving the stream open until the server's grace ran out.
            await context.send_initial_metadata(())
            await subscriber.pump(context.write, greeting)
        except Rejection as rejection:
            _end_with(context, rejection)
        finally:  # a failed write (the client is gone) propagates: gRPC knows whether to log it
            subscriber.close()

    async def open_subscription(
        self, request: bytes, ip: str, peer: str, transport: str = GRPC
    ) -> tuple[Subscriber, bytes]:
        """SubscribeEvents up to its first event, for either transport: the registered subscriber
        and the signed ``gateway.server_time`` event; the caller pumps the stream and closes it.

        The request counter and duration cover the opening only: ``ok`` means a registered stream.
        Raises ``Rejection``, ``InternalError``, or the cancellation of a client that left.
        """
        started = time.perf_counter()
        outcome, code = "ok", grpc.StatusCode.OK
        try:
            if not self.accepting:
                raise Rejection(Reason.SHUTTING_DOWN)
            return await self._subscriptions.open(request, ip)
        except Rejection as rejection:
            outcome, code = rejection.reason.wire, rejection.reason.code
            raise
        except Exception:
            outcome, code = INTERNAL_ERROR, grpc.StatusCode.INTERNAL
            log.exception("SubscribeEvents failed unexpectedly")
            raise InternalError from None
        except asyncio.CancelledError:  # the client left while the subscription was being verified
            outcome, code = "cancelled", grpc.StatusCode.CANCELLED
            raise
        finally:
            self._metrics.requests.labels(SUBSCRIBE, outcome).inc()
            self._subscribe_duration.observe(time.perf_counter() - started)
            if transport is not GRPC:
                self._metrics.grpc_web_requests.labels(SUBSCRIBE, outcome).inc()
            if outcome != "ok" or self._access.wants(accepted=True):
                self._log_call(SUBSCRIBE, request, peer, transport, outcome, code, started)

    def _result_counter(self, result_code: str) -> Counter:
        """The backend-result counter child; past ``_MAX_RESULT_CODES`` codes, new ones count as "other".

        Result codes come from the backend, so their number is bounded here, not trusted.
        """
        counter = self._results.get(result_code)
        if counter is None:
            label = result_code if len(self._results) < _MAX_RESULT_CODES else "other"
            counter = self._metrics.backend_results.labels(label)
            if label != "other":
                self._results[result_code] = counter
        return counter
