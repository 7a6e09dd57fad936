"""Whether the gateway traces, and the small interface through which the pipeline opens spans.

Tracing is on when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console`` and ``OTEL_SDK_DISABLED`` is
not ``true``; unset or ``none`` leaves it off (docs/operations.md, "Tracing"). Off, ``from_env``
returns None, nothing of ``opentelemetry`` is imported, and the pipeline pays one ``is not None``
test per step. On, ``gateway/_otel.py`` (the SDK of the ``otel`` extra) is imported, and only then.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

__all__ = ("RequestTracer", "enabled", "from_env", "install", "uninstall")

EXPORTERS = ("otlp", "console")
_installed: RequestTracer | None = None  # a test's tracer: takes precedence over the environment


class RequestTracer(Protocol):
    """The span shapes of the request path (implemented over the OpenTelemetry SDK in ``_otel``)."""

    def request(
        self, name: str, trace_id: str, start_ns: int, attributes: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[None]:
        """The server span of one RPC, a root whose trace id is ``trace_id`` (32 hex), current inside."""
        ...

    def step(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A child span of the current server span for one step of the contract."""
        ...

    def backend_call(self, message_type: str) -> contextlib.AbstractContextManager[int]:
        """The backend call's child span; gives its span id, the traceparent's parent id."""
        ...

    def close(self) -> None:
        """Flush and stop the exporter (a no-op for an installed tracer, which its test owns)."""
        ...


def enabled(environ: Mapping[str, str]) -> bool:
    """The enabling rule: an exporter named in OTEL_TRACES_EXPORTER, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter in ("", "none"):
        return False
    if exporter not in EXPORTERS:  # a typo would otherwise turn tracing off without a word
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter!r}: edgeward takes {', '.join(EXPORTERS)} or none")
    return True


def install(processor: SpanProcessor) -> RequestTracer:
    """Make gateways built afterwards in this process export to ``processor`` (tests: an in-memory exporter)."""
    global _installed
    from edgeward.gateway import _otel  # noqa: PLC0415  (the otel extra: imported only when tracing is on)

    _installed = _otel.OtelTracer(processor, owned=False)
    return _installed


def uninstall() -> None:
    """Undo ``install``: later gateways follow the environment again."""
    global _installed
    _installed = None


def from_env(environ: Mapping[str, str] = os.environ) -> RequestTracer | None:
    """A gateway's tracer: the installed one, else the one the ``OTEL_*`` variables ask for, else None."""
    if _installed is not None:
        return _installed
    if not enabled(environ):
        return None
    from edgeward.gateway import _otel  # noqa: PLC0415  (the otel extra: imported only when tracing is on)

    return _otel.from_env(environ)
