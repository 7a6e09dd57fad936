"""Start libFuzzer (atheris) on one oracle: ``fuzz(module)`` from a ``fuzz_<target>.py`` script.

The edgeward modules (and any other ``instrument`` prefixes) are imported under
``atheris.instrument_imports`` so that coverage of their Python code guides the fuzzer; the
oracles and the rest are not instrumented. hiredis, httptools, orjson, upb and the native twins
are C, which only a clang build could instrument (docs/fuzzing.md). atheris's regex and str
hooks turn the checks' patterns and prefixes into comparisons the fuzzer can solve.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]


def fuzz(oracle: str, instrument: Sequence[str] = ("edgeward",)) -> None:
    """Run libFuzzer with ``sys.argv`` (its flags, then corpus directories) on ``oracle.check``."""
    sys.path.insert(0, str(ROOT))  # the script's own directory is first; tests.fuzz needs the root
    atheris.enabled_hooks.add("RegEx")
    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=list(instrument)):
        module = importlib.import_module(oracle)
    atheris.Setup(sys.argv, module.check)
    atheris.Fuzz()
