"""Bounded LRU + TTL store of device session records, indexed by user: the interface the gateway uses.

The synchronous core of the session cache (``edgeward.gateway.session_cache`` adds single flight and
negative caching on top): no I/O, an injected monotonic clock (ms), O(1) per operation except the
user-wide revocation. The work is done by the active twin (edgeward.native.loader):
``edgeward.native._session_lru_c`` (an intrusive linked list of nodes in Cython) or its reference
``edgeward.native._session_lru_py`` (an ``OrderedDict``); both are driven against each other by a
stateful property test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeward.native import loader

__all__ = ("SessionLru",)

if TYPE_CHECKING:  # the pure twin is the reference for types and docstrings
    from edgeward.native._session_lru_py import SessionLru
else:
    SessionLru = loader.load("session_lru").SessionLru
