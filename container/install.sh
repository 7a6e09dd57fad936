#!/bin/sh
# The image's runtime stage install (Dockerfile, stage "runtime"), runnable outside Docker.
#
#   container/install.sh VENV WHEEL_DIR [PIP_OPTION...]
#
# Makes a virtualenv at VENV with PYTHON (default python3) and installs the edgeward wheel of
# WHEEL_DIR into it, with its dependencies from the package index; PIP_OPTIONs go to pip (the
# test passes --no-deps --no-index: docs/container.md). Only the wheel: no compiler, no sources.
# pip byte-compiles the package, so the non-root user the image runs as writes no __pycache__.
set -eu

python=${PYTHON:-python3}
if [ $# -lt 2 ]; then
    echo "usage: container/install.sh VENV WHEEL_DIR [PIP_OPTION...]" >&2
    exit 2
fi
venv=$1
wheels=$2
shift 2
set -- "$wheels"/edgeward-*.whl "$@"
if [ ! -f "$1" ]; then
    echo "container/install.sh: no edgeward wheel in $wheels" >&2
    exit 2
fi

"$python" -m venv "$venv"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --no-cache-dir "$@"
