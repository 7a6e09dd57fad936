"""Worker mode's rules (edgeward.workers.plan) and the host's summed /metrics (edgeward.workers.admin)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from edgeward.config import Address
from edgeward.gateway.settings import GatewaySettings
from edgeward.workers.admin import sum_metrics
from edgeward.workers.plan import Refused, for_worker, worker_count

REDIS = "redis://127.0.0.1:7000/0"
TLS = {"tls_cert_file": "/etc/edgeward/tls.pem", "tls_key_file": "/etc/edgeward/tls.key"}


def settings(**values: object) -> GatewaySettings:
    return dataclasses.replace(GatewaySettings(), **values)


def test_the_default_is_one_worker_without_redis_and_every_usable_cpu_with_it() -> None:
    assert worker_count(settings()) == 1
    assert worker_count(settings(redis_url=REDIS)) == len(os.sched_getaffinity(0))
    assert worker_count(settings(redis_url=REDIS, workers=1)) == 1


def test_several_workers_without_a_shared_replay_store_are_refused() -> None:
    with pytest.raises(Refused, match=r"^3 workers need a shared replay store: set EDGEWARD_REDIS_URL"):
        worker_count(settings(workers=3))


@pytest.mark.parametrize("field", ["grpc_addr", "public_http_addr", "grpc_web_addr"])
def test_several_workers_on_port_0_are_refused(field: str) -> None:
    with pytest.raises(Refused, match=f"EDGEWARD_{field.upper()} needs a fixed port"):
        worker_count(settings(workers=2, redis_url=REDIS, **{field: Address("127.0.0.1", 0)}))


def test_admin_client_certificates_with_several_workers_are_refused_not_ignored() -> None:
    with pytest.raises(Refused, match="EDGEWARD_ADMIN_TLS_CLIENT_CA_FILE"):
        worker_count(settings(workers=2, redis_url=REDIS, **TLS, admin_tls_client_ca_file="/etc/edgeward/admin-ca.pem"))
    assert worker_count(settings(workers=1, **TLS, admin_tls_client_ca_file="/etc/edgeward/admin-ca.pem")) == 1


def test_a_worker_limits_through_the_replay_store_redis_unless_told_otherwise() -> None:
    worker = for_worker(settings(workers=2, redis_url=REDIS))
    assert worker.limiter_redis_url == REDIS and worker.admin_http_addr == Address("127.0.0.1", 0)
    other = "redis://127.0.0.1:7001/0"
    assert for_worker(settings(redis_url=REDIS, limiter_redis_url=other)).limiter_redis_url == other


PAGE = """# HELP edgeward_requests_total Requests.
# TYPE edgeward_requests_total counter
edgeward_requests_total{outcome="ok",rpc="ExecuteCommand"} %d
edgeward_requests_created{outcome="ok",rpc="ExecuteCommand"} 1.7e9
# HELP edgeward_streams_open Open streams.
# TYPE edgeward_streams_open gauge
edgeward_streams_open %d
# HELP edgeward_request_duration_seconds Time.
# TYPE edgeward_request_duration_seconds histogram
edgeward_request_duration_seconds_bucket{le="0.01",rpc="ExecuteCommand"} %d
edgeward_request_duration_seconds_bucket{le="+Inf",rpc="ExecuteCommand"} %d
edgeward_request_duration_seconds_count{rpc="ExecuteCommand"} %d
edgeward_request_duration_seconds_sum{rpc="ExecuteCommand"} 0.5
"""


def test_pages_are_summed_sample_by_sample_without_created_times() -> None:
    metrics = {m.name: m for m in sum_metrics([PAGE % (3, 1, 2, 3, 3), PAGE % (4, 2, 4, 4, 4)])}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics.values() for s in m.samples}
    ok = (("outcome", "ok"), ("rpc", "ExecuteCommand"))
    assert samples[("edgeward_requests_total", ok)] == 7
    assert samples[("edgeward_streams_open", ())] == 3
    assert samples[("edgeward_request_duration_seconds_bucket", (("le", "0.01"), ("rpc", "ExecuteCommand")))] == 6
    assert samples[("edgeward_request_duration_seconds_sum", (("rpc", "ExecuteCommand"),))] == 1.0
    assert not [name for name, _ in samples if name.endswith("_created")]
    assert metrics["edgeward_requests"].type == "counter"


def test_process_start_times_are_dropped_and_other_process_series_summed() -> None:
    page = (
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %d\n"
        "# TYPE process_open_fds gauge\nprocess_open_fds %d\n"
    )
    samples = {s.name: s.value for m in sum_metrics([page % (1.7e9, 20), page % (1.8e9, 30)]) for s in m.samples}
    assert samples == {"process_open_fds": 50}
