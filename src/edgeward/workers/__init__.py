"""Worker processes: ``edgeward serve --workers N`` runs N gateways under one supervisor (docs/workers.md).

``plan`` decides how many workers a host runs and refuses what would not be shared; ``worker``
runs one gateway as a worker; ``supervisor`` starts, restarts and replaces them; ``admin`` is the
host's admin listener, aggregating every worker's.
"""
