"""TLS of the gateway's listeners: one certificate and key for the gRPC and public HTTP ports.

gRPC (its own TLS stack) and asyncio's listeners (``ssl``) cannot share one object, so the files
are held in two forms: ``grpc_credentials`` for ``add_secure_port`` and ``http_context`` for
``GuardedSite``. Unset, both listeners stay plaintext, as behind a TLS-terminating load balancer
(docs/operations.md, TLS). With a client CA the admin listener serves the same certificate and
admits only clients presenting one that CA signed (``admin_context``).

``reload`` (SIGHUP to a single-process gateway) re-reads the files without closing a connection:
the live SSL context loads the new chain, and gRPC's dynamic credentials pick the new pair up
before the next handshake; connections already open keep the certificate they were made with.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import grpc

__all__ = ("ListenerTls", "backend_ssl_context")


def backend_ssl_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """The client context of an https backend: ``ca_file`` to verify it, ``cert_file`` for mutual TLS.

    None when nothing is set: the backend client then trusts the system CAs. Read once at start;
    the worker's rolling restart (docs/workers.md) is how a new bundle or client certificate is taken up.
    """
    if not ca_file and not cert_file:
        return None
    context = ssl.create_default_context(cafile=ca_file)  # hostname checked, TLS 1.2+
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def _server_context() -> ssl.SSLContext:
    """TLS 1.2 or later; no CA loaded (``create_default_context`` would trust the system CAs for clients)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ListenerTls:
    """The certificate and key of the gRPC, public HTTP (and admin) listeners, re-readable while serving.

    A missing file, or a key that does not match its certificate, raises ``OSError`` or
    ``ssl.SSLError``: at start, before anything listens; on ``reload``, leaving the certificate in use.
    """

    def __init__(self, cert_file: str, key_file: str, admin_client_ca_file: str | None = None) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.http_context = _server_context()
        self.admin_context: ssl.SSLContext | None = None
        if admin_client_ca_file:
            self.admin_context = _server_context()
            self.admin_context.load_verify_locations(admin_client_ca_file)
            self.admin_context.verify_mode = ssl.CERT_REQUIRED
        first = self._read()
        self._load_chain()
        self._lock = threading.Lock()  # gRPC calls the fetcher from its own threads
        self._pending: grpc.ServerCertificateConfiguration | None = None
        # grpcio's stub types the fetcher without its documented None ("no change").
        self.grpc_credentials = grpc.dynamic_ssl_server_credentials(first, self._fetch)  # type: ignore[arg-type]

    def reload(self) -> None:
        """Serve the files' current contents to new connections on both listeners."""
        configuration = self._read()
        with self._lock:
            self._pending = configuration
        self._load_chain()

    def _load_chain(self) -> None:
        for context in (self.http_context, self.admin_context):
            if context is not None:
                context.load_cert_chain(self.cert_file, self.key_file)

    def _read(self) -> grpc.ServerCertificateConfiguration:
        """The files as gRPC's configuration, checked first (a mismatched pair must not reach a listener)."""
        _server_context().load_cert_chain(self.cert_file, self.key_file)
        pair = (Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())
        return grpc.ssl_server_certificate_configuration([pair])

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC asks before each handshake: a configuration once after a reload, else None (no change)."""
        with self._lock:
            configuration, self._pending = self._pending, None
        return configuration
