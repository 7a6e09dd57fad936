"""The request tracer over the OpenTelemetry SDK (the ``otel`` extra); imported by ``tracing`` only when on.

A request's server span takes the trace id the backend sees in ``traceparent``
(``backend.trace_id_for``), so a trace found in the backend's logs is the gateway's trace too; the
backend call's span id is the traceparent's parent id. Spans carry identifiers and outcomes
(``edgeward.outcome``: "ok", a stable reason, or "error"), never payloads, keys or signatures.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from edgeward.reasons import Rejection

__all__ = ("OtelTracer", "from_env")

# The trace id the next root span takes; 0: a random one. Set only around starting a server span.
_next_trace_id: contextvars.ContextVar[int] = contextvars.ContextVar("edgeward_next_trace_id", default=0)


class _RequestTraceIds(RandomIdGenerator):
    """Trace ids of the requests' traceparents for server spans, random ones otherwise."""

    def generate_trace_id(self) -> int:
        return _next_trace_id.get() or super().generate_trace_id()


class OtelTracer:
    """``tracing.RequestTracer`` over an SDK provider of its own (the global provider is left alone)."""

    def __init__(self, processor: SpanProcessor, *, owned: bool) -> None:
        # Resource.create() also reads OTEL_RESOURCE_ATTRIBUTES; OTEL_SERVICE_NAME wins, else "edgeward".
        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "edgeward"}))
        self._provider = TracerProvider(resource=resource, id_generator=_RequestTraceIds(), shutdown_on_exit=owned)
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("edgeward.gateway")
        self._owned = owned

    @contextlib.contextmanager
    def request(self, name: str, trace_id: str, start_ns: int, attributes: Mapping[str, str]) -> Iterator[None]:
        token = _next_trace_id.set(int(trace_id, 16))
        try:  # a root span (an empty parent context): its trace id comes from _RequestTraceIds
            span = self._tracer.start_span(
                name, context=Context(), kind=SpanKind.SERVER, attributes=dict(attributes), start_time=start_ns
            )
        finally:
            _next_trace_id.reset(token)
        with (
            trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False),
            _outcome(span),
        ):
            yield

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        with (
            self._tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False) as span,
            _outcome(span),
        ):
            yield

    @contextlib.contextmanager
    def backend_call(self, message_type: str) -> Iterator[int]:
        with (
            self._tracer.start_as_current_span(
                "backend_call",
                kind=SpanKind.CLIENT,
                attributes={"edgeward.message_type": message_type},
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
            _outcome(span),
        ):
            yield span.get_span_context().span_id

    def close(self) -> None:
        if self._owned:
            self._provider.shutdown()


@contextlib.contextmanager
def _outcome(span: Span) -> Iterator[None]:
    """Record how a span's step ended: "ok", its Rejection's stable reason, or "error" (no message)."""
    try:
        yield
    except Rejection as exc:
        span.set_attribute("edgeward.outcome", exc.reason.wire)
        raise
    except BaseException as exc:
        span.set_attribute("edgeward.outcome", "error")
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    span.set_attribute("edgeward.outcome", "ok")


def from_env(environ: Mapping[str, str]) -> OtelTracer:
    """The tracer ``tracing.enabled`` approved, batching to the exporter OTEL_TRACES_EXPORTER names."""
    exporter: SpanExporter
    if environ["OTEL_TRACES_EXPORTER"].strip().lower() == "otlp":
        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _TIMEOUT, _TRACES_*
    else:
        exporter = ConsoleSpanExporter()
    return OtelTracer(BatchSpanProcessor(exporter), owned=True)
