"""Locust's entry point: the virtual device and the selected load shape.

Run it through ``python -m loadtest`` (``make loadtest``), which starts a stack or reads the
target variables, sizes the shape and checks the budgets; see loadtest/README.md.
"""

import gevent
import grpc.experimental.gevent

from loadtest import shapes
from loadtest.device_user import DeviceUser

# grpc's documented gevent support: after gevent patched the standard library (Locust does so on
# import) and before any channel exists (users open theirs in on_start).
grpc.experimental.gevent.init_gevent()
# Under gevent, grpc waits on its completion queues in gevent's native thread pool: each channel's
# polling thread (it serves the user's event stream) and each blocking unary call hold one thread
# while they wait. The pool's default of 10 threads stalls every call once 10 streams are open, so
# it gets four per user at the peak (threads are made only when needed).
gevent.get_hub().threadpool.maxsize = max(16, 4 * shapes.peak_users())

LoadShape = shapes.selected()

__all__ = ("DeviceUser", "LoadShape")
