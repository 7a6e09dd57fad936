"""A throwaway CA made by ``openssl``, with server and client certificates for 127.0.0.1 (TLS tests)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

__all__ = ("Pki", "make_pki", "server_certificate")


@dataclasses.dataclass(frozen=True)
class Pki:
    """A CA, a server certificate it signed for 127.0.0.1 and localhost, and a client certificate."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def server_certificate(d: Path, name: str) -> tuple[Path, Path]:
    """A server and client certificate and key for 127.0.0.1 signed by the CA in ``d``, named ``name``."""
    _openssl("req", "-new", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "server.ext", "-out", f"{name}.pem", cwd=d,
    )
    return d / f"{name}.pem", d / f"{name}.key"


def make_pki(d: Path) -> Pki:
    _openssl("req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test CA", cwd=d)
    cert, key = server_certificate(d, "first")
    return Pki(d / "ca.pem", cert, key, *server_certificate(d, "gateway-client"))
