"""The load test's smoke run: ``python -m loadtest --smoke`` against a stack of its own.

Locust monkey-patches the process it runs in with gevent, so it never runs in pytest's process:
the runner is a subprocess that starts redis-server, the stub backend and a gateway on free
loopback ports, runs Locust (3 users, 8 s) and stops them all. This test checks that the run
works: every entry made requests and none failed, event delivery was measured, the CSV and HTML
reports were written. How fast is not asserted here: the latency budgets are ``make loadtest``'s
(loadtest/budgets.toml).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loadtest.budgets import read_stats

ROOT = Path(__file__).resolve().parent.parent
ENTRIES = {
    ("grpc", "user.echo"), ("grpc", "user.profile.get"), ("grpc", "user.profile.update"),
    ("grpc", "SubscribeEvents"), ("stream", "event delivery"),
    ("http", "send-email-code"), ("http", "stub mailbox"), ("http", "confirm-email-code"),
    ("http", "stub event post"),
}


def test_smoke_run_reports_every_entry_without_failures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")}  # its own stack
    result = subprocess.run(
        [sys.executable, "-m", "loadtest", "--smoke", "--results", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    entries, total = read_stats(tmp_path / "smoke_stats.csv")
    by_entry = {(e.request_type, e.name): e for e in entries}
    assert set(by_entry) == ENTRIES, result.stdout
    for key, entry in by_entry.items():
        assert entry.requests > 0, key
        assert entry.failures == 0, (key, (tmp_path / "smoke_failures.csv").read_text())
    assert total.failures == 0
    assert by_entry["grpc", "SubscribeEvents"].requests == 3  # one stream per user, none reopened
    assert "event delivery" in (tmp_path / "smoke.html").read_text()
