"""Key and state files as another local user would attack them (issue 10, point 3).

Everything the ``edgeward`` commands write (key files, the client's ``session.json``, the dev
stack's ``gateway.pub``) goes through ``edgeward.files.atomic_write``: a file planted at a
temporary name, or a symlink planted there or at the destination, is never written through; the
mode is exact whatever the umask; a failed write leaves no temporary file. Loading a key file
that others can read warns. Real files, and ``edgeward keygen``/``pubkey`` as real processes.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeward.client.cli import _save_session
from edgeward.devtools.dev import _gateway_key
from edgeward.native.crypto import Signer
from edgeward.native.keys import load_signer, save_signer

EDGEWARD = [sys.executable, "-m", "edgeward"]
# Names a writer might use beside FILE; the first is what keygen used before the fix.
PREDICTABLE = ("{}.tmp", ".{}.tmp", "{}~", "{}.new", ".{}.swp", "{}.lock")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def snapshot(folder: Path) -> dict[str, tuple[str, int, bytes]]:
    """What each entry of ``folder`` is: a link and its target, a folder, or a file's mode and bytes."""
    entries: dict[str, tuple[str, int, bytes]] = {}
    for path in folder.iterdir():
        if path.is_symlink():
            entries[path.name] = ("link", 0, os.readlink(path).encode())
        elif path.is_dir():
            entries[path.name] = ("folder", mode(path), b"")
        else:
            entries[path.name] = ("file", mode(path), path.read_bytes())
    return entries


def test_a_stale_tmp_file_neither_widens_the_key_nor_is_written(tmp_path: Path) -> None:
    key, stale = tmp_path / "device.key", tmp_path / "device.key.tmp"
    stale.write_bytes(b"stale\n")
    stale.chmod(0o644)
    signer = Signer.generate()
    save_signer(signer, key)
    assert mode(key) == 0o600
    assert load_signer(key).seed == signer.seed
    assert (mode(stale), stale.read_bytes()) == (0o644, b"stale\n")


def test_links_planted_at_predictable_names_are_never_written_through(tmp_path: Path) -> None:
    victims = tmp_path / "victims"
    victims.mkdir()
    keys = tmp_path / "keys"
    keys.mkdir()
    for i, pattern in enumerate(PREDICTABLE):
        victim = victims / f"victim-{i}"
        if i % 2:  # a file the attacker wants overwritten, or a name it wants the seed written to
            victim.write_bytes(b"victim\n")
        (keys / pattern.format("gateway.key")).symlink_to(victim)
    victims_before, links_before = snapshot(victims), snapshot(keys)
    signer = Signer.generate()
    save_signer(signer, keys / "gateway.key")
    assert snapshot(victims) == victims_before
    assert snapshot(keys) == links_before | {"gateway.key": ("file", 0o600, (keys / "gateway.key").read_bytes())}
    assert load_signer(keys / "gateway.key").seed == signer.seed


def _key_file(folder: Path) -> tuple[Path, int]:
    save_signer(Signer.generate(), folder / "device.key")
    return folder / "device.key", 0o600


def _session_state(folder: Path) -> tuple[Path, int]:
    _save_session(folder, "dev@example.com", "dsid-1")
    return folder / "session.json", 0o600


def _dev_public_key(folder: Path) -> tuple[Path, int]:
    _gateway_key(folder)
    return folder / "gateway.pub", 0o644  # public: readable by all


@pytest.mark.parametrize(
    ("write", "name"),
    [(_key_file, "device.key"), (_session_state, "session.json"), (_dev_public_key, "gateway.pub")],
    ids=["key file", "client session state", "dev gateway.pub"],
)
def test_a_link_at_the_destination_is_replaced_not_followed(
    tmp_path: Path, write: Callable[[Path], tuple[Path, int]], name: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim\n")
    (state / name).symlink_to(victim)
    path, expected_mode = write(state)
    assert path == state / name
    assert not path.is_symlink() and mode(path) == expected_mode
    assert victim.read_bytes() == b"victim\n"
    assert {p.name for p in state.iterdir()} <= {"device.key", "session.json", "gateway.key", "gateway.pub"}


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277], ids=lambda m: f"umask {m:04o}")
def test_the_key_is_exactly_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """A wide umask must not widen it, a narrow one must not lock the owner out of reading it back."""
    previous = os.umask(umask)
    try:
        save_signer(Signer.generate(), tmp_path / "device.key")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "device.key") == 0o600


def test_a_failed_rename_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "device.key").mkdir()  # the destination cannot be replaced by a file
    before = snapshot(tmp_path)
    with pytest.raises(IsADirectoryError):
        save_signer(Signer.generate(), tmp_path / "device.key")
    assert snapshot(tmp_path) == before


_WRITE_PAST_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from edgeward.native.crypto import Signer
from edgeward.native.keys import save_signer
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, not a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))  # the key line is 45 bytes
try:
    save_signer(Signer.generate(), sys.argv[1])
except OSError as exc:
    print(exc.errno)
"""


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A real short write (a file size limit, in a process of its own) fails cleanly."""
    folder = tmp_path / "keys"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _WRITE_PAST_A_FILE_SIZE_LIMIT, str(folder / "device.key")],
        capture_output=True, text=True, timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, str(errno.EFBIG)), done.stderr
    assert list(folder.iterdir()) == []


def test_loading_a_key_file_others_can_read_warns_and_still_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "gateway.key"
    signer = Signer.generate()
    save_signer(signer, key)
    caplog.set_level(logging.WARNING, logger="edgeward.native.keys")
    assert load_signer(key).seed == signer.seed
    assert caplog.records == []
    key.chmod(0o640)
    assert load_signer(key).seed == signer.seed
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert str(key) in record.getMessage() and "0640" in record.getMessage()
    # What an operator sees: `edgeward pubkey` still prints the key, and the warning on stderr.
    shown = subprocess.run([*EDGEWARD, "pubkey", str(key)], capture_output=True, text=True, timeout=60)
    assert (shown.returncode, shown.stdout.strip()) == (0, signer.public_key_b64)
    assert "open to group or others" in shown.stderr


@pytest.mark.parametrize("planted", ["stale tmp file", "symlinks"])
def test_keygen_writes_through_nothing_planted(tmp_path: Path, planted: str) -> None:
    """``edgeward keygen`` as a user runs it, with a umask of 0 and names planted beside the key."""
    folder, victims = tmp_path / "keys", tmp_path / "victims"
    folder.mkdir()
    victims.mkdir()
    key = folder / "device.key"
    if planted == "stale tmp file":
        (folder / "device.key.tmp").write_bytes(b"stale\n")
        (folder / "device.key.tmp").chmod(0o644)
    else:  # the old temporary name, and the key's own name (dangling, so keygen does not refuse)
        (folder / "device.key.tmp").symlink_to(victims / "via-tmp")
        key.symlink_to(victims / "via-key")
    planted_files = snapshot(folder)
    made = subprocess.run([*EDGEWARD, "keygen", str(key)], capture_output=True, text=True, timeout=60, umask=0)
    assert made.returncode == 0, made.stderr
    assert not key.is_symlink() and mode(key) == 0o600
    assert load_signer(key).public_key_b64 == made.stdout.strip()
    assert list(victims.iterdir()) == []
    assert snapshot(folder) == planted_files | {"device.key": ("file", 0o600, key.read_bytes())}
