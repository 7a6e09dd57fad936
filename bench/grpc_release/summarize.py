"""Per-candidate median, min and max of a ``python -m bench.grpc_release`` run's JSON lines.

``python -m bench.grpc_release.summarize RESULTS.jsonl [--toml]``: a table, or with ``--toml`` the
figures in bench/grpc_releases.toml's ``[[release]]`` form (candidates labelled ``RELEASE/echo``
and ``RELEASE/gateway``), to paste and then judge (``serves``, ``note``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--toml", action="store_true")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    grpcio: dict[str, str] = {}
    for line in args.results.read_text().splitlines():
        run = json.loads(line)
        runs[run["label"]].append(run)
        grpcio[run["label"]] = run["grpcio"]
    if not args.toml:
        header = f"{'candidate':<40} {'grpcio':>8} {'µs/req median':>14} {'min':>7} {'max':>7} {'req/s median':>13}"
        print(header + " rounds")
        for label, rs in runs.items():
            med, lo, hi = _stats([r["cpu_us_per_request"] for r in rs])
            rps = statistics.median(r["requests_per_s"] for r in rs)
            print(f"{label:<40} {grpcio[label]:>8} {med:>14.1f} {lo:>7.1f} {hi:>7.1f} {rps:>13.0f} {len(rs)}")
        return
    releases = sorted({label.split("/")[0] for label in runs}, key=lambda v: tuple(map(int, v.split("."))))
    for release in releases:
        print("[[release]]")
        print(f'version = "{release}"')
        for server in ("echo", "gateway"):
            rs = runs.get(f"{release}/{server}")
            if not rs:
                continue
            med, lo, hi = _stats([r["cpu_us_per_request"] for r in rs])
            rps = statistics.median(r["requests_per_s"] for r in rs)
            print(
                f"{server}_us_per_request = {{ median = {med:.1f}, min = {lo:.1f}, max = {hi:.1f}, "
                f"rounds = {len(rs)} }}"
            )
            print(f"{server}_requests_per_s_median = {rps:.0f}")
        print("serves = false\nnote = \"\"\n")


if __name__ == "__main__":
    main()
