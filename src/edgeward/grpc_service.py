"""The EdgeGateway gRPC service: a thin layer over the pipeline.

Handlers are registered with raw bytes (no protobuf deserializer): the envelope codec decodes
the request itself, so an undecodable message is answered with our ``invalid_envelope`` and the
native codec can take the bytes directly. A ``Rejection`` becomes the contract's status; an
unexpected exception is logged and answered INTERNAL ``internal_error`` without details of it.
"""

from __future__ import annotations

import logging
import time

import grpc
from prometheus_client import Counter

from edgeward.metrics import GatewayMetrics
from edgeward.pipeline import CommandExecutor
from edgeward.reasons import Reason, Rejection
from edgeward.rpc_errors import trailers_for

__all__ = ("SERVICE_NAME", "GatewayService", "client_ip")

SERVICE_NAME = "edgeward.v1.EdgeGateway"
_MAX_RESULT_CODES = 64
log = logging.getLogger(__name__)


def client_ip(peer: str) -> str:
    """The address part of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``, ``unix:...``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


class GatewayService:
    def __init__(self, commands: CommandExecutor, metrics: GatewayMetrics) -> None:
        self._commands = commands
        self._metrics = metrics
        self.accepting = True  # False while draining: new calls get shutting_down
        # Children bound once: a labels() lookup per request costs more than the increment.
        self._ok = metrics.requests.labels("ExecuteCommand", "ok")
        self._duration = metrics.duration.labels("ExecuteCommand")
        self._results: dict[str, Counter] = {}

    def handler(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {"ExecuteCommand": grpc.unary_unary_rpc_method_handler(self.execute_command)},
        )

    async def execute_command(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        started = time.perf_counter()
        outcome = "ok"
        try:
            if not self.accepting:
                raise Rejection(Reason.SHUTTING_DOWN)
            response, result_code = await self._commands.execute(request, client_ip(context.peer()))
            self._result_counter(result_code).inc()
            return response
        except Rejection as rejection:
            outcome = rejection.reason.wire
            await context.abort(
                rejection.reason.code, rejection.reason.wire, trailing_metadata=trailers_for(rejection)
            )
        except Exception:
            outcome = "internal_error"
            log.exception("ExecuteCommand failed unexpectedly")
            await context.abort(grpc.StatusCode.INTERNAL, "internal_error")
        finally:
            counter = self._ok if outcome == "ok" else self._metrics.requests.labels("ExecuteCommand", outcome)
            counter.inc()
            self._duration.observe(time.perf_counter() - started)
        raise AssertionError("unreachable: context.abort raises")

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
