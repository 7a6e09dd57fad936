"""``python -m loadtest``: run Locust headless, write its CSV and HTML report, check the budgets.

Against the ``EDGEWARD_LOADTEST_*`` target when those variables are set, else against a local
stack started for the run (loadtest.stack) and stopped after it. Locust runs as a subprocess (it
monkey-patches the process with gevent); this process only reads what it wrote. Exit status: 0
when the run stayed within loadtest/budgets.toml, 1 when a budget was missed or Locust failed, 2
for a set-up problem.

``--smoke`` is the short run of ``make test`` (3 users, 8 s): the failure ratio is checked, the
latency budgets are not.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

from edgeward.devtools.ports import NotListening
from loadtest.budgets import Budgets, Entry, read_stats, violations
from loadtest.stack import local_stack
from loadtest.target import Target, TargetError

__all__ = ("main",)

HERE = Path(__file__).resolve().parent
DEFAULT_DURATION_S = {"ramp": 60, "steps": 60, "soak": 1800}
_LOCUST_GRACE_S = 60  # start-up and stop beyond the shape's duration


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(DEFAULT_DURATION_S), default="ramp", help="load shape [ramp]")
    parser.add_argument("--users", type=int, default=20, help="peak virtual users [20]")
    parser.add_argument("--duration", type=int, help="seconds [ramp, steps: 60; soak: 1800]")
    parser.add_argument("--smoke", action="store_true", help="3 users for 8 s; latency budgets not checked")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="report folder [loadtest/results]")
    parser.add_argument("--budgets", type=Path, default=HERE / "budgets.toml", help="[loadtest/budgets.toml]")
    args = parser.parse_args(argv)
    if args.smoke:
        args.shape, args.users, args.duration = "ramp", 3, 8
    args.duration = args.duration or DEFAULT_DURATION_S[args.shape]
    args.name = "smoke" if args.smoke else args.shape
    return args


def _run_locust(args: argparse.Namespace, target: Target) -> int:
    prefix = args.results / args.name
    env = os.environ | target.env() | {
        "EDGEWARD_LOADTEST_SHAPE": args.shape,
        "EDGEWARD_LOADTEST_USERS": str(args.users),
        "EDGEWARD_LOADTEST_DURATION_S": str(args.duration),
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless", "--only-summary",
        "--csv", str(prefix), "--html", f"{prefix}.html", "--loglevel", "WARNING",
        # Failures are judged against the budget below, not by Locust's all-or-nothing exit status.
        "--exit-code-on-error", "0",
    ]
    print(f"loadtest: {args.shape}, {args.users} users, {args.duration} s against {target.grpc_target}", flush=True)
    try:
        return subprocess.run(cmd, env=env, cwd=HERE.parent, timeout=args.duration + _LOCUST_GRACE_S).returncode
    except subprocess.TimeoutExpired:
        print("loadtest: Locust did not finish in time (killed)", file=sys.stderr)
        return 1


def _print_table(entries: list[Entry], total: Entry, budgets: Budgets) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    print(f"\n{'type':<7}{'name':<22}{'requests':>9}{'failures':>9}{'p50 ms':>8}{'p99 ms':>8}{'budget':>8}")
    for e in [*entries, total]:
        budget = budgets.p99_ms.get(e.name)
        print(f"{e.request_type:<7}{e.name:<22}{e.requests:>9}{e.failures:>9}{ms(e.median_ms):>8}{ms(e.p99_ms):>8}"
              f"{ms(budget):>8}")


def _unhandled_exceptions(prefix: Path) -> int:
    """Errors Locust caught outside any measured call (a bug in a user), from ``*_exceptions.csv``."""
    path = prefix.with_name(prefix.name + "_exceptions.csv")
    if not path.exists():
        return 0
    with path.open(newline="") as f:
        return sum(int(row["Count"]) for row in csv.DictReader(f))


def _report(args: argparse.Namespace, locust_status: int) -> int:
    prefix = args.results / args.name
    stats = prefix.with_name(prefix.name + "_stats.csv")
    if not stats.exists():
        print(f"loadtest: Locust (exit status {locust_status}) wrote no {stats}", file=sys.stderr)
        return 1
    budgets = Budgets.load(args.budgets)
    entries, total = read_stats(stats)
    _print_table(entries, total, budgets)
    missed = violations(budgets, entries, total, latency=not args.smoke)
    if locust_status != 0:
        missed.append(f"Locust exited with status {locust_status}")
    if exceptions := _unhandled_exceptions(prefix):
        missed.append(f"{exceptions} unhandled exception(s) in users: see {prefix}_exceptions.csv")
    print(f"\nreport: {prefix}.html, {stats}")
    for line in missed:
        print(f"loadtest: budget missed: {line}", file=sys.stderr)
    print("loadtest: " + ("FAILED" if missed else "within budgets" if not args.smoke else "smoke run passed"))
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    try:
        target = Target.from_env(os.environ)
        if target is not None:
            target.public_key()
            return _report(args, _run_locust(args, target))
        with local_stack(args.results / f"{args.name}-stack") as local:
            status = _run_locust(args, local)
        return _report(args, status)
    except (TargetError, NotListening) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
