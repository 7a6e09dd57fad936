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
from edgeward.reasons import Reason, Rejection
from edgeward.rpc_errors import trailers_for
from edgeward.runtime import AccessLog

__all__ = ("SERVICE_NAME", "GatewayService", "client_ip")

SERVICE_NAME = "edgeward.v1.EdgeGateway"
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

    async def execute_command(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        started = time.perf_counter()
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            if not self.accepting:
                raise Rejection(Reason.SHUTTING_DOWN)
            response, result_code = await self._commands.execute(request, client_ip(context.peer()))
        except asyncio.CancelledError:
            if not self._cutting:  # the client went away, or gRPC itself cancels
                self._count(self._metrics.requests.labels("ExecuteCommand", "cancelled"), started)
                self._log_call("ExecuteCommand", request, context, "cancelled", grpc.StatusCode.CANCELLED, started)
                raise
            task.uncancel()
            rejection = Rejection(Reason.SHUTTING_DOWN, "the gateway stopped before the command finished")
            self._count(self._metrics.requests.labels("ExecuteCommand", rejection.reason.wire), started)
            self._log_call("ExecuteCommand", request, context, rejection.reason.wire, rejection.reason.code, started)
            await context.abort(rejection.reason.code, rejection.reason.wire, trailing_metadata=trailers_for(rejection))
        except Rejection as rejection:
            # Counted before abort(), which answers the client at once: a client that has its
            # answer can rely on the metrics saying so.
            self._count(self._metrics.requests.labels("ExecuteCommand", rejection.reason.wire), started)
            self._log_call("ExecuteCommand", request, context, rejection.reason.wire, rejection.reason.code, started)
            await context.abort(
                rejection.reason.code, rejection.reason.wire, trailing_metadata=trailers_for(rejection)
            )
        except Exception:
            self._count(self._metrics.requests.labels("ExecuteCommand", "internal_error"), started)
            log.exception("ExecuteCommand failed unexpectedly")
            self._log_call("ExecuteCommand", request, context, "internal_error", grpc.StatusCode.INTERNAL, started)
            await context.abort(grpc.StatusCode.INTERNAL, "internal_error")
        finally:
            self._in_flight.discard(task)
        if result_code == REPLAYED_RESULT:  # the bytes of an earlier answer: no backend result to count
            context.set_trailing_metadata(REPLAYED_METADATA)
            self._count(self._replayed, started)
            if self._access.wants(accepted=True):
                self._log_call("ExecuteCommand", request, context, "replayed", grpc.StatusCode.OK, started)
            return response
        self._result_counter(result_code).inc()
        self._count(self._ok, started)
        if self._access.wants(accepted=True):
            self._log_call("ExecuteCommand", request, context, "ok", grpc.StatusCode.OK, started, result_code)
        return response

    def _count(self, outcome: Counter, started: float) -> None:
        outcome.inc()
        self._duration.observe(time.perf_counter() - started)

    def _log_call(
        self,
        method: str,
        request: bytes,
        context: grpc.aio.ServicerContext[bytes, bytes],
        outcome: str,
        code: grpc.StatusCode,
        started: float,
        result_code: str = "",
    ) -> None:
        """The call's access line (an accepted call asked ``wants`` itself: its line may be sampled out)."""
        if outcome not in ("ok", "replayed") and not self._access.wants(accepted=False):
            return
        fields: dict[str, object] = {
            "peer": context.peer(),
            "grpc_code": code.name,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            **_request_ids(request, "subscribe" if method == "SubscribeEvents" else "execute"),
        }
        if result_code:
            fields["result_code"] = result_code
        self._access.write(method, outcome, fields)

    async def subscribe_events(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        """Open the stream (verification, registration), then write events until the hub ends it.

        The request counter and duration cover the opening only: ``ok`` means a registered stream.
        """
        started = time.perf_counter()
        outcome, code = "ok", grpc.StatusCode.OK
        try:
            if not self.accepting:
                raise Rejection(Reason.SHUTTING_DOWN)
            subscriber, greeting = await self._subscriptions.open(request, client_ip(context.peer()))
        except Rejection as rejection:
            outcome, code = rejection.reason.wire, rejection.reason.code
            _end_with(context, rejection)
            return
        except Exception:
            outcome, code = "internal_error", grpc.StatusCode.INTERNAL
            log.exception("SubscribeEvents failed unexpectedly")
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details("internal_error")
            return
        except asyncio.CancelledError:  # the client left while the subscription was being verified
            outcome, code = "cancelled", grpc.StatusCode.CANCELLED
            raise
        finally:
            self._metrics.requests.labels("SubscribeEvents", outcome).inc()
            self._subscribe_duration.observe(time.perf_counter() - started)
            if outcome != "ok" or self._access.wants(accepted=True):
                self._log_call("SubscribeEvents", request, context, outcome, code, started)
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
