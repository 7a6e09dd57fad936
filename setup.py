"""Build script.

The package metadata lives in pyproject.toml. This file exists for the native extensions
(ext/ holds the Cython sources): the native-hot-path work adds them to ``ext_modules`` here,
with the EDGEWARD_NO_EXTENSIONS / EDGEWARD_DEBUG_BUILD switches described in docs/development.md.
Until then the build is pure Python.
"""

from setuptools import setup

setup()
