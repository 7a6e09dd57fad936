"""Build script for the native hot path; the package metadata lives in pyproject.toml.

The Cython sources are in ``ext/edgeward/native/`` (mirroring the package path, so Cython derives
the modules' qualified names); each native module has a pure-Python twin beside it in
``src/edgeward/native/``. The sdist ships these sources (MANIFEST.in), and a wheel is rebuilt from
them with the Cython of ``[build-system]``.

libsodium is linked statically by default (``libsodium.a`` from ``libsodium-dev``), so a wheel
runs where only the Python runtime is present: its modules need nothing beyond the C library.

Switches (environment variables):
- ``EDGEWARD_NO_EXTENSIONS=1``: a pure-Python build, announced on stderr.
- ``EDGEWARD_SODIUM_DYNAMIC=1``: link the shared ``libsodium.so`` instead (the wheel then needs
  libsodium installed where it runs), e.g. for a distribution package or a non-GNU linker.
- ``EDGEWARD_DEBUG_BUILD=1``: ``-O0 -g3``, assertions on, Cython annotate HTML.
- ``EDGEWARD_CYTHON_TRACE=1``: line tracing for Cython.Coverage.
- ``EDGEWARD_BUILD_ONLY=_envelope_c,...``: build only these modules (development).

Otherwise a missing source, Cython, C compiler or libsodium is a hard error that says what is
missing: a build that silently fell back to pure Python would hide a 5x slower gateway.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup

NATIVE_DIR = Path("ext/edgeward/native")
# One module per concern of edgeward.native.loader.CONCERNS: ext/edgeward/native/<name>.pyx becomes
# edgeward.native.<name>. Listed rather than globbed, so a tree that lost a .pyx (an sdist without
# ext/ was one) fails the build instead of building a wheel without that module; tests/test_packaging.py
# checks that a wheel holds one module per concern.
NATIVE_MODULES = ("_crypto_c", "_envelope_c", "_session_lru_c")
_HELP = "apt-get install libsodium-dev pkg-config (or `make deps`), or set EDGEWARD_NO_EXTENSIONS=1"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _fail(message: str) -> SystemExit:
    return SystemExit(f"edgeward build: {message}")


def _selected_modules() -> list[str]:
    """NATIVE_MODULES, or the subset EDGEWARD_BUILD_ONLY names (a development shortcut:
    ``EDGEWARD_BUILD_ONLY=_envelope_c .venv/bin/python setup.py build_ext --inplace``).

    A name that is not a module is an error, so a typo never builds nothing in silence.
    """
    only = os.environ.get("EDGEWARD_BUILD_ONLY", "")
    if not only:
        return list(NATIVE_MODULES)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(NATIVE_MODULES))
    if unknown or not names:
        raise _fail(f"EDGEWARD_BUILD_ONLY={only!r} must name modules of: {', '.join(NATIVE_MODULES)}")
    return names


def _check_sources(modules: list[str]) -> None:
    """Stop when a module's .pyx is missing; Cython itself reports a missing cimported .pxd."""
    missing = [str(NATIVE_DIR / f"{name}.pyx") for name in modules if not (NATIVE_DIR / f"{name}.pyx").is_file()]
    if missing:
        raise _fail(
            f"native sources missing: {', '.join(missing)} (an sdist must ship ext/, see MANIFEST.in); "
            "set EDGEWARD_NO_EXTENSIONS=1 to build without the native modules on purpose"
        )


def _pkg_config_output(*args: str) -> str:
    try:
        out = subprocess.run(["pkg-config", *args, "libsodium"], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise _fail(f"pkg-config is not installed: {_HELP}") from None
    except subprocess.CalledProcessError:
        raise _fail(f"libsodium was not found by pkg-config: {_HELP}") from None
    return out.stdout.strip()


def _pkg_config(*args: str) -> list[str]:
    return shlex.split(_pkg_config_output(*args))


def _sodium_link_args() -> list[str]:
    """Linker arguments for libsodium: its static archive unless EDGEWARD_SODIUM_DYNAMIC=1.

    ``pkg-config --static --libs`` gives ``-lsodium`` plus its private dependencies (``-pthread``);
    ``-lsodium`` is replaced by the archive's path because the linker prefers ``libsodium.so`` when
    both exist. ``--exclude-libs,ALL`` keeps the archive's symbols out of the modules' exports: it is
    required, not cosmetic, since Debian's archive is position-independent *executable* code (no
    ``-fPIC``), which links into a shared object only when its symbols cannot be interposed; and it
    keeps each module's copy from clashing with another libsodium in the process (PyNaCl's).
    """
    if _flag("EDGEWARD_SODIUM_DYNAMIC"):
        return _pkg_config("--libs")
    archive = Path(_pkg_config_output("--variable=libdir")) / "libsodium.a"
    if not archive.is_file():
        raise _fail(
            f"{archive} not found (libsodium-dev ships it): {_HELP}, "
            "or set EDGEWARD_SODIUM_DYNAMIC=1 to link the shared libsodium"
        )
    libs = [str(archive) if arg == "-lsodium" else arg for arg in _pkg_config("--static", "--libs")]
    return [*libs, "-Wl,--exclude-libs,ALL"]


def _extensions() -> list[Extension]:
    modules = _selected_modules()
    _check_sources(modules)
    try:
        from Cython.Build import cythonize
    except ImportError:
        raise _fail(
            "Cython is required to build the native modules: "
            "pip install 'Cython>=3.1,<4' (make test does), or set EDGEWARD_NO_EXTENSIONS=1"
        ) from None
    debug = _flag("EDGEWARD_DEBUG_BUILD")
    trace = _flag("EDGEWARD_CYTHON_TRACE")
    cflags = ["-O0", "-g3", "-UNDEBUG", "-DEDGEWARD_DEBUG=1"] if debug else ["-O2"]
    cflags += ["-Wall", "-Wsign-compare"]
    macros = [("CYTHON_TRACE_NOGIL", "1")] if trace else []
    sodium_cflags = _pkg_config("--cflags")
    sodium_libs = _sodium_link_args()

    def ext(name: str) -> Extension:
        return Extension(
            f"edgeward.native.{name}",
            [str(NATIVE_DIR / f"{name}.pyx")],
            extra_compile_args=cflags + sodium_cflags,
            extra_link_args=sodium_libs,
            define_macros=macros,
        )

    directives = {"language_level": 3, "embedsignature": True, "emit_code_comments": True}
    if trace:
        directives["linetrace"] = True
    return cythonize(
        [ext(name) for name in modules],
        include_path=["ext"],
        compiler_directives=directives,
        annotate=debug,
    )


if _flag("EDGEWARD_NO_EXTENSIONS"):
    print("*" * 60 + "\nedgeward: Pure Python build (EDGEWARD_NO_EXTENSIONS=1)\n" + "*" * 60, file=sys.stderr)
    setup()
else:
    setup(ext_modules=_extensions())
