"""Build script for the native hot path; the package metadata lives in pyproject.toml.

The Cython sources are in ``ext/edgeward/native/`` (mirroring the package path, so Cython derives
the modules' qualified names); each native module has a pure-Python twin beside it in
``src/edgeward/native/``.

Switches (environment variables):
- ``EDGEWARD_NO_EXTENSIONS=1``: a pure-Python build, announced on stderr.
- ``EDGEWARD_DEBUG_BUILD=1``: ``-O0 -g3``, assertions on, Cython annotate HTML.
- ``EDGEWARD_CYTHON_TRACE=1``: line tracing for Cython.Coverage.

Otherwise a missing Cython, C compiler or libsodium is a hard error that says what to install:
a build that silently fell back to pure Python would hide a 5x slower gateway.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup

# Every ext/edgeward/native/_<concern>_c.pyx becomes the module edgeward.native._<concern>_c.
NATIVE_DIR = "ext/edgeward/native"
NATIVE_MODULES = sorted(path.stem for path in Path(NATIVE_DIR).glob("_*_c.pyx"))
# Development: build only these (comma-separated), e.g. while another module is being written:
#   EDGEWARD_BUILD_ONLY=_envelope_c .venv/bin/python setup.py build_ext --inplace
if os.environ.get("EDGEWARD_BUILD_ONLY"):
    NATIVE_MODULES = [name for name in NATIVE_MODULES if name in os.environ["EDGEWARD_BUILD_ONLY"].split(",")]
_HELP = "apt-get install libsodium-dev pkg-config (or `make deps`), or set EDGEWARD_NO_EXTENSIONS=1"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(["pkg-config", *args, "libsodium"], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit(f"edgeward build: pkg-config is not installed: {_HELP}") from None
    except subprocess.CalledProcessError:
        raise SystemExit(f"edgeward build: libsodium was not found by pkg-config: {_HELP}") from None
    return shlex.split(out.stdout)


def _extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError:
        raise SystemExit(
            "edgeward build: Cython is required to build the native modules: "
            "pip install 'Cython>=3.1,<4' (make test does), or set EDGEWARD_NO_EXTENSIONS=1"
        ) from None
    debug = _flag("EDGEWARD_DEBUG_BUILD")
    trace = _flag("EDGEWARD_CYTHON_TRACE")
    cflags = ["-O0", "-g3", "-UNDEBUG", "-DEDGEWARD_DEBUG=1"] if debug else ["-O2"]
    cflags += ["-Wall", "-Wsign-compare"]
    macros = [("CYTHON_TRACE_NOGIL", "1")] if trace else []
    sodium_cflags = _pkg_config("--cflags")
    sodium_libs = _pkg_config("--libs")

    def ext(name: str) -> Extension:
        return Extension(
            f"edgeward.native.{name}",
            [f"{NATIVE_DIR}/{name}.pyx"],
            extra_compile_args=cflags + sodium_cflags,
            extra_link_args=sodium_libs,
            define_macros=macros,
        )

    directives = {"language_level": 3, "embedsignature": True, "emit_code_comments": True}
    if trace:
        directives["linetrace"] = True
    return cythonize(
        [ext(name) for name in NATIVE_MODULES],
        include_path=["ext"],
        compiler_directives=directives,
        annotate=debug,
    )


if _flag("EDGEWARD_NO_EXTENSIONS"):
    print("*" * 60 + "\nedgeward: Pure Python build (EDGEWARD_NO_EXTENSIONS=1)\n" + "*" * 60, file=sys.stderr)
    setup()
else:
    setup(ext_modules=_extensions())
