"""Stopping the processes of a local stack: SIGTERM to all, then a bounded wait for each.

One way to stop for ``edgeward dev``, the load test's stack and the benchmarks' stacks: every
process gets SIGTERM first (so they drain side by side, the last started first), then each is
waited for up to ``timeout_s`` and killed if it has not exited by then.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from typing import Any

__all__ = ("stop_all",)


def stop_all(procs: Sequence[subprocess.Popen[Any]], timeout_s: float = 15.0) -> None:
    """Stop ``procs`` (the last first); returns once every one has exited."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
