"""Bounded LRU + TTL store of device session records, indexed by user: native twin.

Native twin of ``edgeward.native._session_lru_py`` (the reference): same names, signatures, docstrings,
results, exceptions and clock calls. Import ``edgeward.native.session_lru``, which picks the active twin.

Layout: ``_entries`` maps each id to its ``_Node``; the nodes also form a circular doubly-linked
list through a sentinel, ``_root``. Invariant (as in uvloop's LRU): walking ``next`` from
``_root`` visits the entries least- to most-recently used, so a hit or an insert relinks the node
just before ``_root`` and eviction takes ``_root.next``. A node is linked exactly while it is in
``_entries``; an unlinked node has ``prev is None``. ``_by_user`` holds exactly the ids of the
entries in ``_entries``. Expiry is lazy, as in the reference.

Clock: a cache built with the default clock, ``edgeward.clock.monotonic_ms``, reads
``clock_gettime(CLOCK_MONOTONIC)`` itself and converts it exactly as CPython's ``time.monotonic``
does (same source, same roundings, so the same float), provided that CPython reports that source
for ``time.monotonic`` and that neither ``edgeward.clock.time`` nor ``time.monotonic`` has been
replaced (a test's monkeypatch). Otherwise, and for any other clock, the clock object is called.
"""

cimport cython
from cpython.dict cimport PyDict_GetItemWithError
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport PyObject
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import dataclasses
import operator
import time

import edgeward.clock
from edgeward.clock import monotonic_ms

__all__ = ("SessionLru",)

cdef object _replace = dataclasses.replace
cdef object _index = operator.index
cdef object _default_clock = monotonic_ms
cdef object _time_module = time
cdef object _time_monotonic = time.monotonic
cdef dict _clock_globals = edgeward.clock.__dict__  # what monotonic_ms resolves ``time`` in
cdef dict _time_dict = time.__dict__
# The native read below is what time.monotonic does only where CPython itself uses this source
# (Linux; macOS, for one, uses mach_absolute_time).
cdef bint _same_source = time.get_clock_info("monotonic").implementation == "clock_gettime(CLOCK_MONOTONIC)"


cdef inline bint _default_clock_intact() except -1:
    # monotonic_ms looks up ``time`` and ``time.monotonic`` on each call: only while both are
    # the originals is reading the clock here the same as calling it.
    return (
        PyDict_GetItemWithError(_clock_globals, "time") == <PyObject *>_time_module
        and PyDict_GetItemWithError(_time_dict, "monotonic") == <PyObject *>_time_monotonic
    )


@cython.cdivision(True)  # both operands are non-negative: C and Python division agree
cdef inline double _monotonic_ms_c() noexcept:
    # CPython's time.monotonic on Linux: CLOCK_MONOTONIC as int64 ns, then _PyTime_AsSecondsDouble
    # (an integer division when the value is whole seconds, else a double division by 1e9); then
    # monotonic_ms's `* 1000.0`. Same source, same roundings, so the same double.
    cdef timespec ts
    cdef long long ns
    cdef double seconds
    clock_gettime(CLOCK_MONOTONIC, &ts)
    ns = <long long>ts.tv_sec * 1000000000 + <long long>ts.tv_nsec
    if ns % 1000000000 == 0:
        seconds = <double>(ns // 1000000000)
    else:
        seconds = <double>ns
        seconds /= 1e9
    return seconds * 1000.0


def _monotonic_ms() -> float:
    """What the default clock reads when it is read natively (for the tests)."""
    return _monotonic_ms_c()


def _check_number(name, value):
    if not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")


@cython.final
@cython.freelist(256)
cdef class _Node:
    cdef _Node prev      # None while unlinked
    cdef _Node next
    cdef object key      # str: the device_session_id it is stored under
    cdef object record   # SessionRecord
    cdef double expires  # clock ms; expired when expires <= clock()


cdef void _unlink_ring(_Node root) noexcept:
    # Unlinks every node of the ring through root. After a gc tp_clear (the cache was part of a
    # reference cycle) root may be None and any node's links may be None: stop there.
    cdef _Node node
    cdef _Node following
    if root is None:
        return
    node = root.next
    while node is not None and node is not root:
        following = node.next
        node.prev = None
        node.next = None
        node = following
    root.prev = None
    root.next = None


@cython.final
cdef class SessionLru:
    """Positive records (active or revoked) up to ``max_entries``, each trusted for ``ttl_ms``.

    ``max_entries`` is an int (TypeError otherwise) and must be positive (ValueError); ``ttl_ms``
    is an int or a float (TypeError otherwise). Both are fixed for the life of the cache.
    """

    cdef dict _entries        # device_session_id -> _Node
    cdef dict _by_user        # user_id -> set of device_session_id
    cdef _Node _root          # list sentinel: _root.next is the LRU entry, _root.prev the MRU
    cdef object _clock        # Callable[[], float]
    cdef bint _native_clock   # _clock is the default: read CLOCK_MONOTONIC here when allowed
    cdef object _max_entries  # int, as given (for the property)
    cdef object _ttl_ms       # int | float, as given (for the property)
    cdef Py_ssize_t _max      # _max_entries, clamped to what a dict can hold
    cdef double _ttl

    def __cinit__(self, *args, **kwargs):
        self._reset()

    def __init__(self, max_entries, ttl_ms, clock=monotonic_ms):
        max_entries = _index(max_entries)
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        _check_number("ttl_ms", ttl_ms)
        self._max = max_entries if max_entries < PY_SSIZE_T_MAX else PY_SSIZE_T_MAX
        self._ttl = ttl_ms
        self._max_entries = max_entries
        self._ttl_ms = ttl_ms
        self._clock = clock
        self._native_clock = _same_source and clock is _default_clock
        # Entries of an earlier __init__ are dropped only once the new state is complete: freeing
        # them may run a record's __del__, which may call this cache.
        old_entries, old_root = self._entries, self._root
        self._reset()
        _unlink_ring(old_root)
        del old_entries

    def __dealloc__(self):
        # Break the ring so the nodes are freed now, not at the next full gc collection.
        _unlink_ring(self._root)

    @property
    def max_entries(self):
        """The most records kept; a ``put`` beyond it evicts the least recently used."""
        return self._max_entries

    @property
    def ttl_ms(self):
        """How long a record is trusted after its ``put``, in clock milliseconds."""
        return self._ttl_ms

    def __len__(self):
        """How many records are held, expired ones not yet dropped included."""
        return len(self._entries)

    def get(self, device_session_id):
        """The cached record, or None when absent or expired."""
        cdef PyObject *found = PyDict_GetItemWithError(self._entries, device_session_id)
        if found is NULL:
            return None
        cdef _Node node = <_Node>found
        cdef double now = self._now()
        if node.prev is None:  # the clock itself removed the entry
            raise KeyError(device_session_id)
        if node.expires <= now:
            self._remove(node)
            return None
        if node.next is not self._root:
            node.prev.next = node.next
            node.next.prev = node.prev
            self._link_last(node)
        return node.record

    def put(self, record):
        """Insert or replace ``record``, trusted for ``ttl_ms`` from now."""
        cdef _Node node
        dsid = record.device_session_id
        user_id = record.user_id
        cdef double expires = self._now() + self._ttl
        cdef PyObject *found = PyDict_GetItemWithError(self._entries, dsid)
        if found is not NULL:
            node = <_Node>found
            old_user_id = node.record.user_id
            if old_user_id != user_id:
                self._unindex(dsid, old_user_id)
            node.record = record
            node.expires = expires
            if node.prev is not None:
                self._unlink(node)
            self._link_last(node)
        else:
            node = _Node.__new__(_Node)
            node.key = dsid
            node.record = record
            node.expires = expires
            self._entries[dsid] = node
            self._link_last(node)
        ids = self._by_user.get(user_id)
        if ids is None:
            ids = self._by_user[user_id] = set()
        (<set>ids).add(dsid)
        while len(self._entries) > self._max:
            self._remove(self._root.next)

    def mark_revoked(self, device_session_id, revoked_at_ms=None):
        """Turn a cached record into a revoked one (kept, so revoked traffic stops at the edge).

        True when the id is held (even expired, not yet dropped); its LRU position and expiry do not
        change, and a record that is already revoked is kept as it is.
        """
        return self._mark_revoked(device_session_id, revoked_at_ms)

    def mark_all_revoked_for_user(self, user_id, revoked_at_ms=None):
        """Revoke every cached session of ``user_id``; returns how many were cached."""
        ids = self._by_user.get(user_id, ())
        for dsid in tuple(ids):
            self._mark_revoked(dsid, revoked_at_ms)
        return len(ids)

    def sessions_of_user(self, user_id):
        """The ids of the records held for ``user_id``, expired ones not yet dropped included."""
        return frozenset(self._by_user.get(user_id, ()))

    cdef inline double _now(self) except? -1.0:
        if self._native_clock and _default_clock_intact():
            return _monotonic_ms_c()
        return self._clock()

    cdef bint _mark_revoked(self, device_session_id, revoked_at_ms) except -1:
        cdef PyObject *found = PyDict_GetItemWithError(self._entries, device_session_id)
        if found is NULL:
            return False
        cdef _Node node = <_Node>found
        record = node.record
        if not record.revoked:
            node.record = _replace(record, revoked=True, revoked_at_ms=revoked_at_ms)
        return True

    cdef int _remove(self, _Node node) except -1:
        if node.prev is None or node is self._root:  # only if a callback re-entered the cache
            raise KeyError(node.key)
        self._unlink(node)
        del self._entries[node.key]
        self._unindex(node.key, node.record.user_id)
        return 0

    cdef int _unindex(self, device_session_id, user_id) except -1:
        ids = self._by_user.get(user_id)
        if ids is not None:
            (<set>ids).discard(device_session_id)
            if not ids:
                del self._by_user[user_id]
        return 0

    cdef inline void _unlink(self, _Node node) noexcept:
        node.prev.next = node.next
        node.next.prev = node.prev
        node.prev = None
        node.next = None

    cdef inline void _link_last(self, _Node node) noexcept:
        cdef _Node last = self._root.prev
        node.prev = last
        node.next = self._root
        last.next = node
        self._root.prev = node

    cdef int _reset(self) except -1:
        # Allocate first, assign last: an allocation may run the gc, and so arbitrary code.
        cdef _Node root = _Node.__new__(_Node)
        root.prev = root
        root.next = root
        entries, by_user = {}, {}
        self._entries, self._by_user, self._root = entries, by_user, root
        return 0
