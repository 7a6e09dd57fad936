"""A private Redis Cluster for tests: 3 masters and 3 replicas, real ``redis-server`` processes.

Each node listens on an ephemeral loopback port with its cluster bus on another (``cluster-port``,
so a high ephemeral port never pushes the bus past 65535), keeps no data on disk and fails over
quickly (``cluster-node-timeout`` 1000 ms). ``cluster-require-full-coverage no`` keeps the other
masters serving while one slot range has no master, which is what the fail-closed tests look at
(with ``yes`` every node refuses every command meanwhile, which fails closed too, only wider).

``kill()`` sends SIGKILL to a node; ``restart()`` brings it back with its node id (it rejoins as
a replica of whoever took over); ``wait_ok()`` waits until every running node reports
``cluster_state:ok``, with all 16384 slots served by masters that run. Waits poll with a generous
deadline: they only turn a hang into a clean failure. ``close()`` kills every node, also after a
failure in between.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import hiredis

from edgeward.devtools.ports import free_port

__all__ = ("RedisCluster", "command")

DEADLINE_S = 60.0  # generous: a loaded 2-core machine elects slowly; no assertion of speed
NODE_TIMEOUT_MS = 1000


def command(port: int, *args: str | int | bytes, timeout: float = 30.0) -> object:
    """One command to the node on ``port``, synchronously; error replies come back as values."""
    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(hiredis.pack_command(args))
        while (reply := reader.gets()) is False:
            data = s.recv(65536)
            if not data:
                raise ConnectionError(f"node {port} closed the connection")
            reader.feed(data)
    return reply


def _info(port: int, *section: str) -> dict[str, str]:
    """``CLUSTER INFO``, or ``INFO <section>`` when one is named, as a dict."""
    text = command(port, "INFO", *section) if section else command(port, "CLUSTER", "INFO")
    assert isinstance(text, bytes), text
    return dict(line.split(":", 1) for line in text.decode().split("\r\n") if ":" in line)


class RedisCluster:
    """``nodes`` = 6: 3 masters with a replica each; 1: a single master serving every slot."""

    def __init__(self, nodes: int = 6) -> None:
        exe = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if exe is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed: apt-get install redis-server redis-tools")
        self.exe, self.cli = exe, cli
        ports: list[int] = []
        while len(ports) < 2 * nodes:  # distinct: the OS may hand the same free port out twice
            if (port := free_port()) not in ports:
                ports.append(port)
        self.ports = ports[:nodes]
        self.bus_ports = dict(zip(self.ports, ports[nodes:], strict=True))
        self.dir = Path(tempfile.mkdtemp(prefix="edgeward-cluster-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Two seeds when there are two, so the client has a second one to ask."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def start(self) -> None:
        try:
            for port in self.ports:
                self._spawn(port)
            for port in self.ports:
                self._wait_pong(port)
            if len(self.ports) == 1:  # one master owning every slot (redis-cli wants three)
                assert command(self.ports[0], "CLUSTER", "ADDSLOTSRANGE", 0, 16383) == b"OK"
            else:
                subprocess.run(
                    [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                     "--cluster-replicas", "1", "--cluster-yes"],
                    check=True, capture_output=True, timeout=DEADLINE_S,
                )
            self.wait_ok()
        except BaseException:
            self.close()
            raise

    def _spawn(self, port: int) -> None:
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                self.exe,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-port", str(self.bus_ports[port]),
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-require-full-coverage", "no",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(node_dir),
                "--logfile", str(node_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_pong(self, port: int) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            proc = self.procs[port]
            if proc.poll() is not None:
                log = (self.dir / str(port) / "redis.log").read_text()
                raise RuntimeError(f"redis-server {port} exited: {log[-2000:]}")
            try:
                if command(port, "PING", timeout=1) == b"PONG":
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server {port} did not answer within {DEADLINE_S}s")

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Each running master's port and its slot ranges, as a running node sees them now."""
        ranges = command(self.running()[0], "CLUSTER", "SLOTS")
        assert isinstance(ranges, list), ranges
        owners: dict[int, list[tuple[int, int]]] = {}
        for start, end, (_, port, *_), *_ in ranges:
            owners.setdefault(port, []).append((start, end))
        return owners

    def running(self) -> list[int]:
        return [port for port, proc in self.procs.items() if proc.poll() is None]

    def wait_ok(self) -> None:
        """Every running node: cluster_state ok, all slots served, the slot owners all running, and
        every replica linked to its master."""
        deadline = time.monotonic() + DEADLINE_S
        last: object = None
        while time.monotonic() < deadline:
            try:
                infos = [_info(port) for port in self.running()]
                roles = [_info(port, "replication") for port in self.running()]
                owners = set(self.masters())
                if (
                    all(i["cluster_state"] == "ok" and i["cluster_slots_ok"] == "16384" for i in infos)
                    and owners <= set(self.running())
                    and all(i["cluster_known_nodes"] == str(len(self.ports)) for i in infos)
                    # replicas in sync: one that never synced refuses to take over (its data is too old)
                    and all(r["role"] == "master" or r.get("master_link_status") == "up" for r in roles)
                ):
                    return
                last = infos
            except (OSError, AssertionError, KeyError) as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"the cluster did not settle within {DEADLINE_S}s: {last!r}")

    def kill(self, port: int) -> None:
        """SIGKILL, as a crash: no goodbye to the other nodes."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart(self, port: int) -> None:
        """Bring a killed node back (it keeps its id through nodes.conf) and wait for the cluster."""
        self._spawn(port)
        self._wait_pong(port)
        self.wait_ok()

    def flushall(self) -> None:
        for port in self.masters():
            command(port, "FLUSHALL")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
