"""The gRPC form of a rejection (docs/protocol.md §3).

The status message is the stable reason code; the ``grpc-status-details-bin`` trailer carries a
``google.rpc.Status`` whose details hold ``google.rpc.ErrorInfo`` (reason, domain "edgeward",
metadata) and, for rate_limited, ``google.rpc.RetryInfo``. Rejections without metadata are
serialized once per reason and reused.
"""

from __future__ import annotations

import functools

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from edgeward.reasons import Reason, Rejection

__all__ = ("DOMAIN", "STATUS_DETAILS_KEY", "status_details", "trailers_for")

DOMAIN = "edgeward"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_details(rejection: Rejection) -> bytes:
    """Serialized ``google.rpc.Status`` for ``rejection``."""
    info = error_details_pb2.ErrorInfo(
        reason=rejection.reason.wire, domain=DOMAIN, metadata=rejection.metadata
    )
    details = [_pack(info)]
    if rejection.retry_after_ms is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(rejection.retry_after_ms)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(
        code=rejection.reason.code.value[0], message=rejection.reason.wire, details=details
    )
    return bytes(status.SerializeToString())


def trailers_for(rejection: Rejection) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying the status details of ``rejection``."""
    if not rejection.metadata and rejection.retry_after_ms is None:
        return _plain_trailers(rejection.reason)
    return ((STATUS_DETAILS_KEY, status_details(rejection)),)


@functools.cache
def _plain_trailers(reason: Reason) -> tuple[tuple[str, bytes], ...]:
    return ((STATUS_DETAILS_KEY, status_details(Rejection(reason))),)


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.RetryInfo) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
