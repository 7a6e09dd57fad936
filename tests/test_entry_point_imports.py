"""The ``edgeward`` command loads only what its subcommands need when they run.

``edgeward serve`` and ``edgeward healthcheck`` never use the stub backend's Redis projection, so
loading the command must not import redis-py, nor OpenTelemetry (which redis-py imports when it is
installed): tracing is off unless OTEL_* variables turn it on (docs/operations.md, "Tracing").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_REPORT = (
    "import json, sys, edgeward.cli; "
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'redis', 'opentelemetry'})))"
)


def test_the_command_imports_neither_redis_py_nor_opentelemetry() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEWARD_", "OTEL_"))}
    out = subprocess.run([sys.executable, "-c", _REPORT], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_the_stub_backends_names_still_import_on_use() -> None:
    from edgeward.stub import StubBackend, StubSettings

    assert StubBackend.__module__ == "edgeward.stub.service"
    assert StubSettings.__module__ == "edgeward.stub.settings"
