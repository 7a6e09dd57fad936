"""The status details of a rejection decode to the contract's ErrorInfo and RetryInfo."""

from __future__ import annotations

from google.rpc import error_details_pb2, status_pb2

from edgeward.reasons import Reason, Rejection
from edgeward.rpc_errors import STATUS_DETAILS_KEY, trailers_for


def decode(rejection: Rejection) -> tuple[status_pb2.Status, list[object]]:
    ((key, raw),) = trailers_for(rejection)
    assert key == STATUS_DETAILS_KEY
    status = status_pb2.Status.FromString(raw)
    found: list[object] = []
    for any_msg in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if any_msg.Is(cls.DESCRIPTOR):
                msg = cls()
                any_msg.Unpack(msg)
                found.append(msg)
    return status, found


def test_every_reason_has_a_distinct_wire_code() -> None:
    assert len({r.wire for r in Reason}) == len(Reason)


def test_error_info_carries_reason_domain_and_metadata() -> None:
    status, (info,) = decode(Rejection(Reason.STALE_REQUEST, metadata={"server_time_ms": "42"}))
    assert status.message == "stale_request" and status.code == 9  # FAILED_PRECONDITION
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, dict(info.metadata)) == ("stale_request", "edgeward", {"server_time_ms": "42"})


def test_retry_info_when_a_delay_is_given() -> None:
    _, (_info, retry) = decode(Rejection(Reason.RATE_LIMITED, retry_after_ms=1500))
    assert isinstance(retry, error_details_pb2.RetryInfo) and retry.retry_delay.ToMilliseconds() == 1500


def test_plain_rejections_reuse_one_serialization() -> None:
    assert trailers_for(Rejection(Reason.INVALID_SIGNATURE)) is trailers_for(Rejection(Reason.INVALID_SIGNATURE))
