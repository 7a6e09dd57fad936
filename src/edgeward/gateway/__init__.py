"""The gateway itself and its composition root: settings, the request pipeline and its stores,
the gRPC service, the admin listener, metrics, and ``server`` (start and stop order).

The only layer below the entry point that may import every other one.
"""
