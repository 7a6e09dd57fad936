"""Load shapes: how many virtual users run at each moment of a test.

The runner picks one with ``EDGEWARD_LOADTEST_SHAPE`` and sizes it with ``EDGEWARD_LOADTEST_USERS``
(the peak) and ``EDGEWARD_LOADTEST_DURATION_S`` (the whole run); the locustfile exposes only the
selected class, since Locust runs the one shape class it finds there.

- ``ramp``: users rise steadily over the first half, then hold the peak: where latency bends.
- ``steps``: four equal steps of a quarter of the peak, each a quarter of the run: a plateau per
  load level, so each level's numbers can be read from the CSV history.
- ``soak``: the peak reached within a tenth of the run (at most a minute), then held: leaks,
  growing queues and slow drifts show over a long run.
"""

from __future__ import annotations

import math
import os

from locust import LoadTestShape

__all__ = ("SHAPES", "peak_users", "selected")


def _setting(name: str, default: int) -> int:
    return int(os.environ.get(f"EDGEWARD_LOADTEST_{name}", default))


def peak_users() -> int:
    return _setting("USERS", 20)


class _Sized(LoadTestShape):
    abstract = True

    def __init__(self) -> None:
        super().__init__()
        self.peak = peak_users()
        self.duration_s = _setting("DURATION_S", 60)

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        if elapsed >= self.duration_s:
            return None
        return self.users_at(elapsed), max(self.peak, 1)  # spawn each step within a second

    def users_at(self, elapsed: float) -> int:
        raise NotImplementedError


class Ramp(_Sized):
    def users_at(self, elapsed: float) -> int:
        return max(1, min(self.peak, math.ceil(self.peak * elapsed / (self.duration_s / 2))))


class Steps(_Sized):
    def users_at(self, elapsed: float) -> int:
        step = min(3, int(4 * elapsed / self.duration_s))
        return max(1, math.ceil(self.peak * (step + 1) / 4))


class Soak(_Sized):
    def users_at(self, elapsed: float) -> int:
        rise_s = min(self.duration_s / 10, 60.0)
        return max(1, min(self.peak, math.ceil(self.peak * elapsed / rise_s)))


SHAPES: dict[str, type[_Sized]] = {"ramp": Ramp, "steps": Steps, "soak": Soak}


def selected() -> type[_Sized]:
    """The shape ``EDGEWARD_LOADTEST_SHAPE`` names (default ``ramp``)."""
    name = os.environ.get("EDGEWARD_LOADTEST_SHAPE", "ramp")
    if name not in SHAPES:
        raise SystemExit(f"EDGEWARD_LOADTEST_SHAPE={name!r}: choose one of {', '.join(SHAPES)}")
    return SHAPES[name]
