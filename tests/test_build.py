"""The native build fails loudly, saying what to install, rather than falling back in silence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"), "--build-temp", str(tmp_path)],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | env,
        capture_output=True, text=True, timeout=300, check=False,
    )


def test_a_build_without_libsodium_stops_with_what_to_install(tmp_path: Path) -> None:
    # No pkg-config on PATH: the build cannot find libsodium.
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _build(tmp_path, PATH=str(empty))
    assert result.returncode != 0
    assert "apt-get install libsodium-dev pkg-config" in result.stderr
    assert "EDGEWARD_NO_EXTENSIONS=1" in result.stderr


def test_a_pure_build_says_so(tmp_path: Path) -> None:
    result = _build(tmp_path, EDGEWARD_NO_EXTENSIONS="1")
    assert result.returncode == 0, result.stderr
    assert "Pure Python build" in result.stderr
    assert not list((tmp_path / "lib").rglob("*.so"))
