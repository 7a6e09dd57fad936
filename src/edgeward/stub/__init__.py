"""The stub backend: a real local implementation of the backend contract (protocol section 5).

Used by ``edgeward dev``, the tests, benchmarks and load tests; docs/stub-backend.md describes it.
"""

from __future__ import annotations

from edgeward.stub.service import StubBackend, run_stub_backend
from edgeward.stub.settings import StubSettings

__all__ = ("StubBackend", "StubSettings", "run_stub_backend")
