"""Writing key and state files so that nobody else can read, redirect or half-see them.

Every file the ``edgeward`` commands write (key files, the client's session state, the dev
stack's public key) goes through ``atomic_write``, because the simple ways each fail:

- a fixed temporary name (``FILE.tmp``) can be planted by another local user: a stale file keeps
  its own wider mode when it is reopened, and a symlink redirects the secret into the link's
  target. So the temporary file gets an unpredictable name and is created exclusively
  (``O_CREAT | O_EXCL``) without following a link (``O_NOFOLLOW``): a planted name is an error,
  never a file we write into;
- writing the destination in place follows a symlink planted at the destination and leaves a
  truncated file behind a crash. ``rename`` instead replaces the destination's directory entry
  (a symlink there is replaced, its target never opened) in one step;
- a mode given to ``open`` is narrowed by the umask, so the mode is set again with ``fchmod``
  before any byte is written: the file has exactly the requested mode from its first byte on.

It lives in the shared base because the native layer (``native.keys``), the client and the
devtools all write such files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ("atomic_write",)

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with a file holding ``data`` and exactly ``mode`` (owner-only by default).

    Readers see the old content or the new, never a part. The data is written to a new file of
    an unpredictable name in the same directory (so the rename stays within one file system),
    fsynced, renamed over ``path``, and the directory is fsynced so the rename survives a crash.
    When creating, writing or renaming fails, the temporary file is removed and ``path`` is left
    as it was; only a failed fsync of the directory is raised after ``path`` was replaced. The
    directory must exist.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(16)}.tmp")
    fd = os.open(tmp, _CREATE_FLAGS, mode)
    try:
        with open(fd, "wb") as file:  # owns fd from here on: closed on leaving the block
            os.fchmod(fd, mode)
            file.write(data)
            file.flush()
            os.fsync(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable: on Linux the entry is stored with the directory."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
