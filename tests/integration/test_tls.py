"""TLS of the gRPC and public HTTP listeners (issue 13.4), against a throwaway CA made by ``openssl``.

A device logs in over HTTPS with ``curl --cacert`` and sends a signed command with the SDK over a
secure channel trusting that CA; plaintext to either listener, and HTTPS without the CA, fail; a
client that opens TCP and never starts the TLS handshake is cut at the header timeout; a reload
serves the new certificate to new connections on both listeners and keeps open ones, and SIGHUP
to ``edgeward serve`` reloads.
Commands reach an https stub backend that requires a client certificate (mutual TLS) when the
gateway has the CA bundle and its client certificate, and fail without the certificate. The admin
listener, given a client CA, admits only clients with a certificate that CA signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import orjson
import pytest

from edgeward.client import AuthError, EdgewardClient, confirm_email_code, read_stub_mailbox, send_email_code
from edgeward.config import ConfigError
from edgeward.devtools.ports import free_ports, wait_listening
from edgeward.gateway.server import Gateway
from edgeward.gateway.settings import GatewaySettings
from edgeward.native.crypto import Signer
from edgeward.stub import StubBackend, StubSettings
from tests.integration.conftest import EXECUTE, GATEWAY_SIGNER, LOOPBACK_ANY, GatewayFactory, settings_for
from tests.integration.streams import eventually, spawn
from tests.support.pki import Pki, make_pki, server_certificate

DEADLINE_S = 30.0
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def tls_gateway(start_gateway: GatewayFactory, pki: Pki, **overrides: object) -> Gateway:
    return await start_gateway(tls_cert_file=str(pki.cert), tls_key_file=str(pki.key), **overrides)


async def curl(*args: str) -> tuple[int, bytes]:
    """curl's exit status and body, from a thread so the loop serving the gateway keeps running.

    ``subprocess`` (vfork) rather than the loop's own spawning: a plain fork of this process, whose
    gRPC threads are busy, could crash the child before it runs curl.
    """
    argv = ["curl", "-sS", "--max-time", "20", *args]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, check=False)
    return done.returncode, done.stdout


async def curl_json(url: str, ca: Path, body: object) -> dict[str, str]:
    data = orjson.dumps(body).decode()
    status, out = await curl("--fail", "--cacert", str(ca), "-H", "Content-Type: application/json", "--data", data, url)
    assert status == 0, f"curl {url}: exit {status}"
    answer = orjson.loads(out)
    assert isinstance(answer, dict)
    return answer


async def test_a_device_logs_in_with_curl_and_sends_a_command_with_the_sdk_over_tls(
    start_gateway: GatewayFactory, stub: StubBackend, pki: Pki
) -> None:
    gateway = await tls_gateway(start_gateway, pki)
    public = f"https://127.0.0.1:{gateway.public_http_port}/api/v1/public/auth"
    email, signer = "tls@example.com", Signer.generate()
    challenge = await curl_json(f"{public}/send-email-code", pki.ca, {"email": email})
    code = await read_stub_mailbox(stub.base_url, email)
    confirmed = await curl_json(
        f"{public}/confirm-email-code",
        pki.ca,
        {"challenge_id": challenge["challenge_id"], "code": code, "client_public_key": signer.public_key_b64},
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    async with EdgewardClient(
        f"127.0.0.1:{gateway.grpc_port}",
        GATEWAY_SIGNER.public_key,
        signer,
        confirmed["device_session_id"],
        credentials=credentials,
    ) as client:
        result = await client.execute("user.echo", {"over": "tls"})
    assert result.result_code == "ok" and result.json()["echo"] == {"over": "tls"}


async def test_plaintext_and_an_untrusted_certificate_are_refused(start_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = await tls_gateway(start_gateway, pki)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(EXECUTE)(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    url = f"127.0.0.1:{gateway.public_http_port}/"  # any answer, a 404 too, means TLS worked
    plain, _ = await curl(f"http://{url}")
    untrusted, _ = await curl(f"https://{url}")  # the system store does not hold the test CA
    trusted, _ = await curl("--cacert", str(pki.ca), "-o", "/dev/null", f"https://{url}")
    assert plain != 0 and untrusted == 60 and trusted == 0  # 60: peer certificate cannot be authenticated


async def test_a_connection_that_never_starts_the_handshake_is_cut(start_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = await tls_gateway(start_gateway, pki, http_header_timeout_ms=300)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.public_http_port)
    try:
        async with asyncio.timeout(DEADLINE_S):  # asyncio's own handshake timeout is 60 s
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def test_a_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="EDGEWARD_TLS_KEY_FILE"):
        GatewaySettings(tls_cert_file="/etc/edgeward/cert.pem")
    with pytest.raises(ConfigError, match="EDGEWARD_BACKEND_CLIENT_KEY_FILE"):
        GatewaySettings(backend_client_cert_file="/etc/edgeward/client.pem")
    with pytest.raises(ConfigError, match="EDGEWARD_ADMIN_TLS_CLIENT_CA_FILE needs EDGEWARD_TLS_CERT_FILE"):
        GatewaySettings(admin_tls_client_ca_file="/etc/edgeward/ca.pem")


async def test_the_admin_listener_admits_only_client_certificates_of_its_ca(
    start_gateway: GatewayFactory, pki: Pki, tmp_path: Path
) -> None:
    gateway = await tls_gateway(start_gateway, pki, admin_tls_client_ca_file=str(pki.ca))
    url = f"https://127.0.0.1:{gateway.admin_http_port}/healthz"
    stranger = make_pki(tmp_path)  # another CA and a client certificate it signed

    def with_client(cert: Path, key: Path) -> tuple[str, ...]:
        return ("--fail", "--cacert", str(pki.ca), "--cert", str(cert), "--key", str(key), url)

    no_cert, _ = await curl("--fail", "--cacert", str(pki.ca), url)
    foreign, _ = await curl(*with_client(stranger.client_cert, stranger.client_key))
    admitted, body = await curl(*with_client(pki.client_cert, pki.client_key))
    assert no_cert != 0 and foreign != 0
    assert admitted == 0 and "implementation" in orjson.loads(body)


async def served_name(port: int, ca: Path) -> str:
    """The common name of the certificate a new TLS connection to ``port`` is served (h2 offered, for gRPC)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        subject = writer.get_extra_info("peercert")["subject"]
    finally:
        writer.transport.abort()  # no TLS close_notify exchange: gRPC never answers one
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return str(dict(field[0] for field in subject)["commonName"])


async def test_reload_serves_the_new_certificate_to_new_connections_and_keeps_open_ones(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)  # its own files: the test overwrites them
    gateway = await tls_gateway(start_gateway, pki)
    assert gateway.tls is not None
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{gateway.grpc_port}", credentials) as channel:
        before = await channel.unary_unary(HEALTH_CHECK)(b"", timeout=10)  # the connection opens here
        assert {await served_name(gateway.grpc_port, pki.ca), await served_name(gateway.public_http_port, pki.ca)} == {
            "first"
        }
        cert, key = server_certificate(pki.ca.parent, "second")
        pki.cert.write_bytes(cert.read_bytes())
        pki.key.write_bytes(key.read_bytes())
        gateway.tls.reload()
        assert await served_name(gateway.grpc_port, pki.ca) == "second"
        assert await served_name(gateway.public_http_port, pki.ca) == "second"
        assert channel.get_state() == grpc.ChannelConnectivity.READY  # not dropped by the reload
        assert await channel.unary_unary(HEALTH_CHECK)(b"", timeout=10) == before


def mutual_tls_backend(pki: Pki) -> StubBackend:
    """A stub backend whose REST listener serves HTTPS and requires a client certificate from the CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(pki.cert, pki.key)
    return StubBackend(StubSettings(stub_http_addr=LOOPBACK_ANY, stub_grpc_addr=LOOPBACK_ANY), ssl_context=context)


def read_mailbox(stub: StubBackend, pki: Pki, email: str) -> str:
    """The stub's last code for ``email``, read with curl and the client certificate the stub requires."""
    url = f"{stub.base_url}/api/v1/internal/stub/mailbox/{email}"
    client = ["--cert", str(pki.client_cert), "--key", str(pki.client_key)]
    argv = ["curl", "-sS", "--fail", "--cacert", str(pki.ca), *client, url]
    answer = orjson.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    return str(answer["code"])


async def test_commands_reach_an_https_backend_with_the_ca_bundle_and_client_certificate(pki: Pki) -> None:
    stub = mutual_tls_backend(pki)
    await stub.start()
    trusted = settings_for(
        stub,
        backend_ca_file=str(pki.ca),
        backend_client_cert_file=str(pki.client_cert),
        backend_client_key_file=str(pki.client_key),
    )
    no_cert = settings_for(stub, backend_ca_file=str(pki.ca))
    gateways = [Gateway(trusted, signer=GATEWAY_SIGNER), Gateway(no_cert, signer=GATEWAY_SIGNER)]
    try:
        for gateway in gateways:
            await gateway.start()
        with_cert, without_cert = (f"http://127.0.0.1:{g.public_http_port}" for g in gateways)
        assert stub.base_url.startswith("https://")
        with pytest.raises(AuthError) as refused:  # the backend's handshake refuses a gateway without one
            await send_email_code(without_cert, "nocert@example.com")
        assert refused.value.status >= 500
        email, signer = "mtls@example.com", Signer.generate()
        challenge_id = await send_email_code(with_cert, email)
        code = await asyncio.to_thread(read_mailbox, stub, pki, email)
        dsid = await confirm_email_code(with_cert, challenge_id, code, signer.public_key_b64)
        target = f"127.0.0.1:{gateways[0].grpc_port}"
        async with EdgewardClient(target, GATEWAY_SIGNER.public_key, signer, dsid) as client:
            result = await client.execute("user.echo", {"over": "mtls"})
        assert result.result_code == "ok" and result.json()["echo"] == {"over": "mtls"}
    finally:
        for gateway in gateways:
            await gateway.stop(grace=0)
        await stub.stop()


@pytest.mark.asyncio(loop_factories=["asyncio"])  # a process of its own: one run is enough
async def test_sighup_to_edgeward_serve_re_reads_the_certificate(stub: StubBackend, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    grpc_port, public_port, admin_port = free_ports("grpc", "public", "admin").values()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")} | {
        "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{public_port}",
        "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{admin_port}",
        "EDGEWARD_BACKEND_BASE_URL": stub.base_url,
        "EDGEWARD_BACKEND_PUSH_ADDR": stub.push_addr,
        "EDGEWARD_WORKERS": "1",  # run_gateway itself, not a supervisor's rolling restart
        "EDGEWARD_TLS_CERT_FILE": str(pki.cert),
        "EDGEWARD_TLS_KEY_FILE": str(pki.key),
    }
    log = tmp_path / "serve.log"
    proc = await spawn([sys.executable, "-m", "edgeward", "serve"], env, log)
    try:
        for port in (grpc_port, public_port):
            await asyncio.to_thread(wait_listening, port, proc, what="edgeward serve")
        assert await served_name(public_port, pki.ca) == "first"
        cert, key = server_certificate(tmp_path, "second")
        pki.cert.write_bytes(cert.read_bytes())
        pki.key.write_bytes(key.read_bytes())
        proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "TLS certificate re-read" in log.read_text(), "the SIGHUP reload", DEADLINE_S)
        assert await served_name(public_port, pki.ca) == "second"
        assert await served_name(grpc_port, pki.ca) == "second"
        assert proc.poll() is None  # SIGHUP did not stop it
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait)
