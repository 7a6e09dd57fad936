"""The stub backend: a real local implementation of the backend contract (protocol section 5).

Used by ``edgeward dev``, the tests, benchmarks and load tests; docs/stub-backend.md describes it.
Its names are imported on first use: the ``edgeward`` command registers ``stub-backend`` without
loading the stub's service, whose Redis projection imports redis-py (and through it, when
installed, OpenTelemetry), which ``edgeward serve`` and ``edgeward healthcheck`` never need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeward.stub.service import StubBackend, run_stub_backend
    from edgeward.stub.settings import StubSettings

__all__ = ("StubBackend", "StubSettings", "run_stub_backend")

_HOMES = {
    "StubBackend": "edgeward.stub.service",
    "run_stub_backend": "edgeward.stub.service",
    "StubSettings": "edgeward.stub.settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'edgeward.stub' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
