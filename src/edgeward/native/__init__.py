"""The hot path: each concern's public dispatcher, its Cython module and its pure-Python twin.

``crypto``, ``envelope`` and ``session_lru`` pick their implementation through ``loader`` (the
import policy); ``_<concern>_c`` is compiled from ``ext/edgeward/native/`` and ``_<concern>_py``
is the reference. ``signing``, ``keys`` and ``session_record`` are the small pure modules those
concerns share. This layer imports nothing of edgeward but the shared base.
"""
