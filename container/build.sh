#!/bin/sh
# The image's build stage (Dockerfile, stage "build"), runnable outside Docker: docs/container.md.
#
#   container/build.sh [--install-build-requires] SOURCE_TREE WHEEL_DIR
#
# Builds the sdist of SOURCE_TREE, then the wheel from that sdist (the way a user's install goes,
# as tests/test_packaging.py checks), with the native modules and libsodium linked statically
# (setup.py's default; needs a C compiler, libsodium-dev and pkg-config). The wheel lands in
# WHEEL_DIR, and the build fails unless it holds every native module: the image exists to run
# the native hot path. PYTHON picks the interpreter (default python3).
#
# The build runs without build isolation and offline (--no-index), with setuptools, wheel and
# Cython from PYTHON's environment; --install-build-requires first installs pyproject.toml's
# [build-system] requires there from the package index (what the Docker build stage does).
# SOURCE_TREE gets an egg-info directory (git-ignored); the Docker build stage passes a copy.
set -eu

python=${PYTHON:-python3}
install_requires=
if [ "${1:-}" = --install-build-requires ]; then
    install_requires=1
    shift
fi
if [ $# -ne 2 ]; then
    echo "usage: container/build.sh [--install-build-requires] SOURCE_TREE WHEEL_DIR" >&2
    exit 2
fi
if [ -n "${EDGEWARD_NO_EXTENSIONS:-}" ]; then
    echo "container/build.sh: EDGEWARD_NO_EXTENSIONS is set; the image needs the native modules" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "$install_requires" ]; then
    # shellcheck disable=SC2046  # one word per requirement, none has a space
    "$python" -m pip install --no-cache-dir $(cd "$src" && "$python" -c \
        'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
fi

# The PEP 517 hook a front end calls for an sdist (python -m build --sdist --no-isolation).
(cd "$src" && "$python" -c 'import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])' \
    "$work/sdist")
"$python" -m pip wheel --no-build-isolation --no-deps --no-index --no-cache-dir \
    --wheel-dir "$work/wheel" "$work"/sdist/edgeward-*.tar.gz

# Refuse a wheel without its native modules (a pure build would be a 5x slower gateway).
"$python" - "$work"/wheel/edgeward-*.whl <<'PY'
import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
found = {m.group(1) for n in names if (m := re.fullmatch(r"edgeward/native/(_\w+_c)\.[^/]*\.so", n))}
missing = {"_crypto_c", "_envelope_c", "_session_lru_c"} - found
if missing:
    sys.exit(f"container/build.sh: the wheel lacks native modules: {sorted(missing)}")
PY
cp "$work"/wheel/edgeward-*.whl "$out"/
echo "container/build.sh: built $(cd "$work/wheel" && echo edgeward-*.whl) in $out"
