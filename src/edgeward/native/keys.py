"""Key files: one line holding the 32-byte Ed25519 seed as standard base64.

Used for the gateway's signing key (EDGEWARD_SIGNING_KEY_FILE) and the client SDK's device
keys. ``save_signer`` writes mode 0600 through ``edgeward.files.atomic_write``, so no planted
temporary file or symlink is ever written through.

``load_signer`` warns, and does not refuse, when group or others may read or write the file.
OpenSSH refuses such keys, but a gateway's key usually arrives as a container secret, mounted
0644 (Kubernetes' default) or 0444 (Docker) where the container is the boundary: refusing would
stop those gateways from starting, while the warning still tells an operator on a shared host.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path

from edgeward.files import atomic_write
from edgeward.native.crypto import SEED_BYTES, Signer

__all__ = ("KeyFileError", "load_signer", "save_signer")

log = logging.getLogger(__name__)


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or not a base64 32-byte seed."""


def load_signer(path: str | Path) -> Signer:
    """The key in ``path``; a WARNING when group or others may access it (see the module docstring)."""
    try:
        text = _read_key_file(Path(path))
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"key file {path} is not standard base64") from exc
    if len(seed) != SEED_BYTES:
        raise KeyFileError(f"key file {path} must hold a {SEED_BYTES}-byte seed, got {len(seed)} bytes")
    return Signer(seed)


def _read_key_file(path: Path) -> str:
    """Read ``path``, checking the mode of the file actually opened (not of a name that may change)."""
    with open(path, "rb") as file:
        mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
        if mode & 0o077:
            log.warning("key file %s is mode %04o, open to group or others: run `chmod 600 %s`", path, mode, path)
        return file.read().decode("ascii", errors="replace")


def save_signer(signer: Signer, path: str | Path) -> None:
    """Replace ``path`` with the seed, mode 0600, atomically; missing parent folders are made."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, base64.b64encode(signer.seed) + b"\n", mode=0o600)
