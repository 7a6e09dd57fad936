"""Bounded LRU + TTL store of device session records, indexed by user: the interface the gateway uses.

The synchronous core of the session cache (``edgeward.session_cache`` adds single flight and
negative caching on top): no I/O, an injected monotonic clock (ms), O(1) per operation except the
user-wide revocation. The work is done by the active twin (edgeward.native):
``edgeward._session_lru_c`` (an intrusive linked list of nodes in Cython) or its reference
``edgeward._session_lru_py`` (an ``OrderedDict``); both are driven against each other by a
stateful property test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeward import native

__all__ = ("SessionLru",)

if TYPE_CHECKING:  # the pure twin is the reference for types and docstrings
    from edgeward._session_lru_py import SessionLru
else:
    SessionLru = native.load("session_lru").SessionLru
