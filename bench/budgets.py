"""The performance budgets of edgeward, in one place: each is a ratio measured in one run.

``max`` budgets bound ``subject / baseline`` (the subject may cost at most that multiple of the
baseline); ``min`` budgets require ``baseline / subject`` (a speed-up) of at least that much.
Absolute times are never budgets: they vary between machines and with the neighbours' load,
while a ratio of two things measured side by side does not. The end-to-end budgets are checked
against the median of per-round ratios (bench/spread.py), printed with their minimum and maximum.
"""

from __future__ import annotations

import dataclasses

__all__ = ("BUDGETS", "Budget")


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    name: str
    subject: str
    baseline: str
    kind: str  # "max": subject/baseline <= limit; "min": baseline/subject >= limit
    limit: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.limit if self.kind == "max" else ratio >= self.limit

    def describe(self) -> str:
        op = "<=" if self.kind == "max" else ">="
        what = f"{self.subject} / {self.baseline}" if self.kind == "max" else f"{self.baseline} / {self.subject}"
        return f"{what} {op} {self.limit:g}"


BUDGETS = {
    budget.name: budget
    for budget in (
        Budget(
            "full_verification",
            "native decode + hash + signing input + cache hit + Ed25519 verify + freshness",
            "raw libsodium crypto_sign_verify_detached",
            "max",
            1.05,
        ),
        Budget(
            "response_encode_sign", "native response encode + sign", "raw libsodium crypto_sign_detached", "max", 1.05
        ),
        Budget("decode_speedup", "native decode + validate", "pure decode + validate", "min", 5.0),
        Budget("cache_hit_speedup", "native session cache hit", "pure session cache hit", "min", 2.0),
        Budget(
            "gateway_vs_floor",
            "native gateway CPU per ExecuteCommand at saturation",
            "in-place floor: echo + Redis SET + backend POST + verify + sign",
            "max",
            1.10,
        ),
        Budget(
            "gateway_vs_echo",
            "native gateway CPU per ExecuteCommand at saturation",
            "bare grpc.aio echo CPU per call",
            "max",
            1.8,
        ),
        Budget(
            "cpu_at_half_load",
            "native gateway CPU per request at 50% of its saturation, open loop",
            "bare grpc.aio echo CPU per call at the same rate",
            "max",
            1.8,
        ),
        Budget(
            "latency_p99",
            "native gateway p99 at 50% of its saturation, open loop",
            "bare grpc.aio echo p99 at the same rate",
            "max",
            1.4,
        ),
    )
}
