"""A wheel built from the sdist has every native module, and they need nothing but the C library.

The sdist once shipped generated C without the ``.pyx`` sources while setup.py globbed ``.pyx``,
so a wheel built from it was pure Python and said nothing (issue 10). These tests go the way a
user's install does: an sdist from a fresh copy of the tree (the files git knows, so no generated
C and no ``.so``), a wheel from that sdist, that wheel installed into a directory. Everything runs
with this interpreter and offline: ``--no-build-isolation`` takes setuptools, wheel and Cython
from the running venv, ``--no-index`` keeps pip off the network. One build serves every test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeward.native.loader import CONCERNS

ROOT = Path(__file__).resolve().parent.parent
NATIVE_MODULES = tuple(f"_{concern}_c" for concern in CONCERNS)
# What a module may need where only the Python runtime is present: the C library (glibc's parts).
_C_RUNTIME = re.compile(r"(libc|libm|libpthread|libdl|librt)\.so\.\d+|ld-linux[-\w]*\.so\.\d+")


@dataclass(frozen=True)
class Build:
    tracked: frozenset[str]  # the tree's files, as paths relative to it
    sdist: Path
    wheel: Path
    installed: Path  # the directory the wheel was installed into


def _run(*args: str | Path, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEWARD_", "PIP_"))}
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _fresh_tree(dest: Path) -> frozenset[str]:
    """Copy what a git checkout of ROOT would hold (tracked and new files, not the ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert listed.returncode == 0, f"these tests copy the files git knows, so need a git checkout: {listed.stderr}"
    # A file git tracks may have been deleted in the working tree; the copy is of what is there.
    files = frozenset(name for name in listed.stdout.split("\0") if name and (ROOT / name).is_file())
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return files


def _only(directory: Path, pattern: str) -> Path:
    (found,) = directory.glob(pattern)
    return found


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    tree, dist, wheels, installed = (tmp_path_factory.mktemp(name) for name in ("tree", "dist", "wheels", "site"))
    tracked = _fresh_tree(tree)
    # The PEP 517 hook a front end calls for an sdist (what `python -m build --sdist --no-isolation` does).
    _run(sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})", cwd=tree)
    sdist = _only(dist, "*.tar.gz")
    pip = (sys.executable, "-m", "pip")
    _run(*pip, "wheel", "--no-build-isolation", "--no-deps", "--no-index", "--no-cache-dir", "-w", wheels, sdist,
         cwd=tree.parent)
    wheel = _only(wheels, "*.whl")
    _run(*pip, "install", "--no-deps", "--no-index", "--no-compile", "--target", installed, wheel, cwd=tree.parent)
    return Build(tracked, sdist, wheel, installed)


def test_the_sdist_ships_the_native_sources_and_the_contract_but_no_generated_c(build: Build) -> None:
    with tarfile.open(build.sdist) as sdist:
        # Names are edgeward-<version>/<path in the tree>.
        shipped = {member.name.split("/", 1)[1] for member in sdist.getmembers() if member.isfile()}
    sources = {name for name in build.tracked if name.startswith(("ext/", "proto/"))}
    assert {f"ext/edgeward/native/{name}.pyx" for name in NATIVE_MODULES} <= sources
    assert {name for name in shipped if name.startswith(("ext/", "proto/"))} == sources
    assert {"README.md", "pyproject.toml", "setup.py", "MANIFEST.in"} <= shipped


def test_the_wheel_built_from_the_sdist_has_every_native_module(build: Build) -> None:
    with zipfile.ZipFile(build.wheel) as wheel:
        native = [Path(name) for name in wheel.namelist() if name.startswith("edgeward/native/")]
    compiled = {path.name.split(".")[0] for path in native if path.suffix == ".so"}  # _crypto_c.cpython-311-....so
    assert compiled == set(NATIVE_MODULES)
    assert not build.wheel.name.endswith("-none-any.whl")


def _needed(shared_object: Path) -> list[str]:
    """The libraries the dynamic loader must find for ``shared_object`` (readelf ships with the
    binutils the build itself needs)."""
    dynamic = subprocess.run(["readelf", "-d", str(shared_object)], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)


def test_the_native_modules_need_only_the_c_library(build: Build) -> None:
    modules = sorted((build.installed / "edgeward" / "native").glob("_*_c.*.so"))
    assert len(modules) == len(NATIVE_MODULES)
    needed = {module.name: _needed(module) for module in modules}
    assert all(libs and all(_C_RUNTIME.fullmatch(lib) for lib in libs) for libs in needed.values()), needed


# RFC 8032 section 7.1, TEST 1 (empty message) and FIPS 180-2 "abc": libsodium linked into the
# module computes them, and no shared libsodium is mapped into the process.
_RUN_INSTALLED = """
import json, edgeward.native._crypto_c as crypto, edgeward.native._envelope_c, edgeward.native._session_lru_c
seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
signer = crypto.Signer(seed)
signature = signer.sign(b"")
print(json.dumps({
    "files": [m.__file__ for m in (crypto, edgeward.native._envelope_c, edgeward.native._session_lru_c)],
    "public_key": signer.public_key.hex(),
    "signature": signature.hex(),
    "verifies": crypto.verify(signer.public_key, b"", signature),
    "sha256_abc": crypto.sha256(b"abc").hex(),
    "mapped_libsodium": sorted({line.split()[-1] for line in open("/proc/self/maps") if "libsodium.so" in line}),
}))
"""


def test_the_installed_wheel_runs_without_a_shared_libsodium(build: Build) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | {"PYTHONPATH": str(build.installed)}
    result = subprocess.run([sys.executable, "-c", _RUN_INSTALLED], cwd=build.installed, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(Path(file).is_relative_to(build.installed) for file in report["files"]), report["files"]
    assert report["public_key"] == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert report["signature"] == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert report["verifies"] is True
    assert report["sha256_abc"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert report["mapped_libsodium"] == []
