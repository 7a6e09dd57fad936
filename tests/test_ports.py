"""``free_ports``: the ports a local stack is given, one per listener, never the same one twice."""

from __future__ import annotations

import socket

from edgeward.devtools.ports import free_ports


def test_free_ports_are_distinct_and_each_can_be_bound() -> None:
    names = ("stub_http", "stub_grpc", "grpc", "public", "admin", "grpc_web")
    for _ in range(200):  # picked one after another and released, ports did repeat (bench.latency's smoke leg)
        ports = free_ports(*names)
        assert list(ports) == list(names) and len(set(ports.values())) == len(names)
    listeners = [socket.create_server(("127.0.0.1", port)) for port in ports.values()]
    for listener in listeners:
        listener.close()
