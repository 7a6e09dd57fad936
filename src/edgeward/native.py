"""Which implementation of each hot-path concern is active: the native twin or the pure one.

Every concern (``crypto``, ``envelope``, ``session_lru``) has a Cython module
``edgeward._<concern>_c`` built from ``ext/`` and a pure-Python twin ``edgeward._<concern>_py``
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

__all__ = ("ACTIVE", "CONCERNS", "extensions_disabled", "implementation", "load")

log = logging.getLogger(__name__)

CONCERNS = ("crypto", "envelope", "session_lru")

# concern -> "c" (native) or "py" (pure twin), filled as the concerns are imported.
ACTIVE: dict[str, str] = {}


def extensions_disabled() -> bool:
    return os.environ.get("EDGEWARD_NO_EXTENSIONS", "") not in ("", "0")


def load(concern: str) -> ModuleType:
    """The active module for ``concern``, recording the choice in ``ACTIVE``."""
    if concern not in CONCERNS:
        raise ValueError(f"unknown native concern {concern!r}")
    if not extensions_disabled():
        try:
            module = importlib.import_module(f"edgeward._{concern}_c")
        except ImportError as exc:
            log.warning("native edgeward._%s_c unavailable (%s); using the pure-Python twin", concern, exc)
        else:
            ACTIVE[concern] = "c"
            return module
    ACTIVE[concern] = "py"
    return importlib.import_module(f"edgeward._{concern}_py")


def implementation() -> str:
    """"native" when every concern is native, "pure" when none is, otherwise "mixed"."""
    for concern in CONCERNS:  # make sure every concern has been chosen
        importlib.import_module(f"edgeward.{concern}")
    kinds = {ACTIVE[concern] for concern in CONCERNS}
    if kinds == {"c"}:
        return "native"
    return "pure" if kinds == {"py"} else "mixed"
