"""Lean protocol clients on the hot path: HTTP/1.1 on httptools (``http11``), RESP on hiredis (``resp``).

Each replaced a library client after a measurement in ``bench/``. ``cluster`` routes commands over
a Redis Cluster with one ``resp`` connection per master, and ``redis.connect`` gives a node or a
cluster client for a URL. This layer imports nothing of edgeward but the shared base.
"""
