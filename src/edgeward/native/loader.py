"""Which implementation of each hot-path concern is active: the native twin or the pure one.

Every concern (``crypto``, ``envelope``, ``session_lru``) has a Cython module
``edgeward.native._<concern>_c`` built from ``ext/`` and a pure-Python twin ``edgeward.native._<concern>_py``
that is the reference. This module is the one place holding the import policy:

- ``EDGEWARD_NO_EXTENSIONS=1`` selects every pure twin;
- otherwise the native module is used, and one that fails to import (a pure build, a broken
  ``libsodium`` at run time) falls back to its twin with one WARNING.

``ACTIVE`` says what was chosen, for ``/healthz``, ``edgeward doctor`` and a metric.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

__all__ = ("ACTIVE", "CONCERNS", "FALLBACKS", "extensions_disabled", "implementation", "load", "load_all")

log = logging.getLogger(__name__)

CONCERNS = ("crypto", "envelope", "session_lru")

# concern -> "c" (native) or "py" (pure twin), filled as the concerns are imported.
ACTIVE: dict[str, str] = {}
# concern -> why its native module could not be imported (only for concerns that fell back).
FALLBACKS: dict[str, str] = {}


def extensions_disabled() -> bool:
    return os.environ.get("EDGEWARD_NO_EXTENSIONS", "") not in ("", "0")


def load(concern: str) -> ModuleType:
    """The active module for ``concern``, recording the choice in ``ACTIVE``."""
    if concern not in CONCERNS:
        raise ValueError(f"unknown native concern {concern!r}")
    if not extensions_disabled():
        try:
            module = importlib.import_module(f"edgeward.native._{concern}_c")
        except ImportError as exc:
            FALLBACKS[concern] = str(exc)
            log.warning("native edgeward.native._%s_c unavailable (%s); using the pure-Python twin", concern, exc)
        else:
            ACTIVE[concern] = "c"
            return module
    ACTIVE[concern] = "py"
    return importlib.import_module(f"edgeward.native._{concern}_py")


def load_all() -> dict[str, str]:
    """Import every concern's dispatcher (so each has chosen its twin); a copy of ``ACTIVE``."""
    for concern in CONCERNS:
        importlib.import_module(f"edgeward.native.{concern}")
    return {concern: ACTIVE[concern] for concern in CONCERNS}


def implementation() -> str:
    """"native" when every concern is native, "pure" when none is, otherwise "mixed"."""
    kinds = set(load_all().values())
    if kinds == {"c"}:
        return "native"
    return "pure" if kinds == {"py"} else "mixed"
