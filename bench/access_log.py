"""What one access line costs (docs/logging.md): ``python -m bench.access_log``.

Times an accepted ExecuteCommand's line as the gRPC service writes it (``wants``, the ids decoded
from the request bytes, ``AccessLog.write``) through a real ``StreamHandler`` writing to
/dev/null, in JSON and in text; then the decode alone, and the cost of a call that gets no line.
Prints microseconds, the best of five runs; not a budget (the numbers depend on the machine).
"""

from __future__ import annotations

import logging
import timeit
from collections.abc import Callable

from bench.test_ratio_hot_path import _request
from edgeward.clock import now_ms
from edgeward.gateway.grpc_service import _request_ids
from edgeward.runtime import AccessLog, JsonFormatter, TextFormatter

LINES = 50_000
CHECKS = 200_000


def _best_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    data = _request(now_ms())
    root = logging.getLogger()
    with open("/dev/null", "w") as devnull:
        for name, formatter in (("json", JsonFormatter()), ("text", TextFormatter())):
            handler = logging.StreamHandler(devnull)
            handler.setFormatter(formatter)
            root.handlers[:] = [handler]
            root.setLevel(logging.INFO)
            access = AccessLog()

            def line(access: AccessLog = access) -> None:
                if access.wants(accepted=True):
                    fields = {"peer": "ipv4:127.0.0.1:50000", "grpc_code": "OK", "duration_ms": 1.234}
                    access.write("ExecuteCommand", "ok", fields | _request_ids(data, "execute"))

            print(f"{name} line, ids decode included: {_best_us(line, LINES):.2f} µs")
        print(f"ids decode alone: {_best_us(lambda: _request_ids(data, 'execute'), CHECKS):.2f} µs")
        sampled_out = AccessLog(sample=0.0)
        print(f"sampled out: {_best_us(lambda: sampled_out.wants(accepted=True), CHECKS):.3f} µs")
        root.setLevel(logging.WARNING)
        below = AccessLog()
        print(f"below the log level: {_best_us(lambda: below.wants(accepted=True), CHECKS):.3f} µs")
        root.handlers.clear()


if __name__ == "__main__":
    main()
