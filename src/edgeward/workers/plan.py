"""How many workers a host runs, what each worker's settings are, and what is refused.

More than one worker must share what one process keeps in memory: the replay store (else a
request replayed on another connection could be accepted by another worker) and the limiter
(else each worker would allow a full budget). Their ports must be fixed: with port 0 each worker
would bind a port of its own, not share one.
"""

from __future__ import annotations

import dataclasses
import os

from edgeward.config import Address
from edgeward.gateway.settings import GatewaySettings

__all__ = ("Refused", "for_worker", "worker_count")


class Refused(ValueError):
    """These settings cannot run as several workers; ``str()`` is the one line an operator needs."""


def worker_count(settings: GatewaySettings) -> int:
    """``EDGEWARD_WORKERS``, else the usable CPUs with a shared replay store, else 1; raises ``Refused``."""
    if settings.workers is not None:
        count = settings.workers
    else:
        count = len(os.sched_getaffinity(0)) if settings.redis_url else 1
    if count == 1:
        return 1
    if not settings.redis_url:
        raise Refused(
            f"{count} workers need a shared replay store: set EDGEWARD_REDIS_URL, or EDGEWARD_WORKERS=1"
        )
    if settings.admin_tls_client_ca_file:  # the host's admin listener would serve without it: refuse, never ignore
        raise Refused(
            f"{count} workers: the host's admin listener does not support EDGEWARD_ADMIN_TLS_CLIENT_CA_FILE yet; "
            "unset it, or run EDGEWARD_WORKERS=1"
        )
    shared = {"EDGEWARD_GRPC_ADDR": settings.grpc_addr, "EDGEWARD_PUBLIC_HTTP_ADDR": settings.public_http_addr}
    if settings.grpc_web_addr is not None:
        shared["EDGEWARD_GRPC_WEB_ADDR"] = settings.grpc_web_addr
    for name, addr in shared.items():
        if addr.port == 0:
            raise Refused(f"{count} workers share their ports: {name} needs a fixed port, not 0")
    return count


def for_worker(settings: GatewaySettings) -> GatewaySettings:
    """A worker's settings: a private admin port, and the limiter on the replay store's Redis unless set."""
    return dataclasses.replace(
        settings,
        admin_http_addr=Address("127.0.0.1", 0),
        limiter_redis_url=settings.limiter_redis_url or settings.redis_url,
    )
