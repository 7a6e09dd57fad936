"""Lint, types and generated code are part of the test suite, so CI cannot skip them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_ruff() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_protobuf_modules_are_up_to_date(tmp_path: Path) -> None:
    result = run(sys.executable, "tools/gen_proto.py", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    checked_in = ROOT / "src" / "edgeward" / "_pb"
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in checked_in.iterdir() if p.suffix in (".py", ".pyi"))
    for name in fresh:
        assert (tmp_path / name).read_text() == (checked_in / name).read_text(), f"run `make proto`: {name}"
