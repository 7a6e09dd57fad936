"""The budgets of loadtest/budgets.toml, checked against Locust's ``*_stats.csv``.

Locust writes one row per entry (request type and name) and an ``Aggregated`` row; the failure
ratio is read from the latter, each p99 from its entry's row.
"""

from __future__ import annotations

import csv
import dataclasses
import tomllib
from pathlib import Path

__all__ = ("Budgets", "Entry", "read_stats", "violations")


@dataclasses.dataclass(frozen=True, slots=True)
class Budgets:
    max_failure_ratio: float
    p99_ms: dict[str, float]

    @classmethod
    def load(cls, path: Path) -> Budgets:
        raw = tomllib.loads(path.read_text())
        return cls(float(raw["max_failure_ratio"]), {k: float(v) for k, v in raw.get("p99_ms", {}).items()})


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One row of the stats CSV; ``p99_ms`` is None for an entry without a successful request."""

    request_type: str
    name: str
    requests: int
    failures: int
    median_ms: float | None
    p99_ms: float | None


def _ms(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "N/A"
        return None


def read_stats(path: Path) -> tuple[list[Entry], Entry]:
    """The entries of a ``*_stats.csv`` and its ``Aggregated`` row."""
    with path.open(newline="") as f:
        rows = [
            Entry(row["Type"], row["Name"], int(row["Request Count"]), int(row["Failure Count"]),
                  _ms(row["50%"]), _ms(row["99%"]))
            for row in csv.DictReader(f)
        ]
    aggregated = [e for e in rows if e.name == "Aggregated"]
    if len(aggregated) != 1:
        raise ValueError(f"{path}: no Aggregated row")
    return [e for e in rows if e.name != "Aggregated"], aggregated[0]


def violations(budgets: Budgets, entries: list[Entry], total: Entry, *, latency: bool) -> list[str]:
    """One line per budget missed; ``latency=False`` checks the failure ratio only."""
    found: list[str] = []
    if total.requests == 0:
        return ["no request was made"]
    ratio = total.failures / total.requests
    if ratio > budgets.max_failure_ratio:
        found.append(f"failure ratio {ratio:.4f} ({total.failures}/{total.requests}) > {budgets.max_failure_ratio}")
    if latency:
        by_name = {e.name: e for e in entries}
        for name, limit in budgets.p99_ms.items():
            entry = by_name.get(name)
            if entry is None or entry.p99_ms is None:
                found.append(f"{name}: not in the report (nothing measured)")
            elif entry.p99_ms > limit:
                found.append(f"{name}: p99 {entry.p99_ms:.0f} ms > {limit:.0f} ms")
    return found
