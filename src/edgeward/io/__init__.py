"""Lean protocol clients on the hot path: HTTP/1.1 on httptools (``http11``), RESP on hiredis (``resp``).

Each replaced a library client after a measurement in ``bench/``; this layer imports nothing of
edgeward but the shared base.
"""
