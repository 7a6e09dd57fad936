"""Key files: one line holding the 32-byte Ed25519 seed as standard base64.

Written with mode 0600. Used for the gateway's signing key (EDGEWARD_SIGNING_KEY_FILE) and the
client SDK's device keys.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from edgeward.native.crypto import SEED_BYTES, Signer

__all__ = ("KeyFileError", "load_signer", "save_signer")


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or not a base64 32-byte seed."""


def load_signer(path: str | Path) -> Signer:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        seed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"key file {path} is not standard base64") from exc
    if len(seed) != SEED_BYTES:
        raise KeyFileError(f"key file {path} must hold a {SEED_BYTES}-byte seed, got {len(seed)} bytes")
    return Signer(seed)


def save_signer(signer: Signer, path: str | Path) -> None:
    """Write the seed atomically with owner-only permissions."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(signer.seed).decode() + "\n")
    os.replace(tmp, target)
