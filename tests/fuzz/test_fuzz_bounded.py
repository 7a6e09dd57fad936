"""The bounded fuzz leg of ``make test``: every target under libFuzzer for its share of a minute.

Each target runs as a subprocess (``fuzz_<target>.py``, atheris) on a fresh copy of its seeds
(``seeds.write``) for ``SECONDS[target]``; any finding (an exception out of the oracle, a
disagreement, a hang past ``-timeout``, a crash of the interpreter) fails the test, which prints
the reproducer's bytes and the end of the fuzzer's log. ``make fuzz`` runs the same targets for
longer on a corpus kept in build/fuzz/ (docs/fuzzing.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.seeds import HERE, TARGETS, write

# About a minute in all on one core with start-up, which is about 1 s a target and 8 s for the
# wire target (instrumenting protobuf's Python, replaying the seeds on it). grpc_web is pure
# Python on small inputs and runs fast; its share is the smallest.
SECONDS = {"envelope": 9, "envelope_wire": 8, "public": 8, "resp": 11, "http11": 11, "grpc_web": 5}
assert set(SECONDS) == set(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_bounded_fuzz_finds_nothing(target: str, tmp_path: Path) -> None:
    write(tmp_path / "seeds")
    grown, artifacts = tmp_path / "grown", tmp_path / "artifacts"
    grown.mkdir()
    artifacts.mkdir()
    seconds = SECONDS[target]
    command = [
        sys.executable,
        str(HERE / f"fuzz_{target}.py"),
        f"-max_total_time={seconds}",
        "-timeout=10",
        "-rss_limit_mb=1024",
        f"-artifact_prefix={artifacts}/",
        str(grown),
        str(tmp_path / "seeds" / target),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90, check=False)
    findings = sorted(artifacts.iterdir())
    if result.returncode != 0 or findings:
        reproducers = "\n".join(f"{path.name}: {path.read_bytes()!r}" for path in findings)
        pytest.fail(
            f"fuzz_{target} exited {result.returncode}; reproducers:\n{reproducers or '(none)'}\n"
            f"end of its log:\n{result.stderr[-4000:]}"
        )
    assert "Done" in result.stderr, result.stderr[-2000:]
