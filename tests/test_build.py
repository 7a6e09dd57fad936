"""The native build fails loudly, saying what is missing, rather than falling back in silence.

Tests that reach past setup.py's first checks build in a copy of the build's inputs, so no test
writes generated C into the shared tree (tests/test_packaging.py builds the whole sdist and wheel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _build(tmp_path: Path, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"), "--build-temp", str(tmp_path)],
        cwd=cwd, env={k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | env,
        capture_output=True, text=True, timeout=300, check=False,
    )


def _copy_of_the_build_inputs(tmp_path: Path) -> Path:
    """setup.py and the Cython sources (not their generated C) in a fresh directory."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "ext", tree / "ext", ignore=shutil.ignore_patterns("*.c", "*.html"))
    shutil.copy2(ROOT / "setup.py", tree)
    return tree


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


def test_a_tree_that_lost_a_module_source_stops_naming_it(tmp_path: Path) -> None:
    # As an sdist without ext/ did: the build must not quietly make a wheel without the module.
    tree = _copy_of_the_build_inputs(tmp_path)
    (tree / "ext/edgeward/native/_envelope_c.pyx").unlink()
    result = _build(tmp_path, cwd=tree)
    assert result.returncode != 0
    assert "native sources missing: ext/edgeward/native/_envelope_c.pyx" in result.stderr
    assert "EDGEWARD_NO_EXTENSIONS=1" in result.stderr
    assert not list((tmp_path / "lib").rglob("*.so"))


def test_build_only_naming_no_module_stops(tmp_path: Path) -> None:
    result = _build(tmp_path, EDGEWARD_BUILD_ONLY="_envelope")
    assert result.returncode != 0
    assert "EDGEWARD_BUILD_ONLY='_envelope' must name modules of: _crypto_c, _envelope_c, _session_lru_c" in (
        result.stderr
    )


def test_a_static_build_without_libsodium_a_stops_with_the_alternatives(tmp_path: Path) -> None:
    # A libsodium that pkg-config finds, installed without its static archive.
    pkgconfig, libdir = tmp_path / "pkgconfig", tmp_path / "sodium"
    pkgconfig.mkdir()
    libdir.mkdir()
    (pkgconfig / "libsodium.pc").write_text(
        f"libdir={libdir}\nName: libsodium\nDescription: shared only\nVersion: 1.0.18\n"
        "Libs: -L${libdir} -lsodium\nCflags:\n"
    )
    result = _build(tmp_path, cwd=_copy_of_the_build_inputs(tmp_path), PKG_CONFIG_PATH=str(pkgconfig))
    assert result.returncode != 0
    assert f"{libdir}/libsodium.a not found (libsodium-dev ships it)" in result.stderr
    assert "EDGEWARD_SODIUM_DYNAMIC=1" in result.stderr
