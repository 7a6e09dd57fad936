"""The image's steps, run outside Docker (no engine runs in CI), and hadolint over the Dockerfile.

The Dockerfile's RUN and CMD steps are the scripts of container/ (docs/container.md); here they
run as the image runs them: ``container/build.sh`` builds the wheel from a fresh copy of the tree
(sdist, then wheel, native modules checked), ``container/install.sh`` installs only that wheel
into a fresh virtualenv, and ``container/start.sh`` starts the gateway as a non-root user
(``nobody`` when the suite runs as root) on loopback, with the Dockerfile's ENV defaults, against
a stub backend started from the same install. ``edgeward healthcheck`` (the image's HEALTHCHECK)
waits for readiness, ``edgeward call`` sends a signed command and verifies the signed answer,
and SIGTERM (the image's STOPSIGNAL) must end the gateway with status 0.

Offline and quick: the build takes setuptools and Cython from this venv, and the wheel is installed
``--no-deps --no-index``; a ``.pth`` file then lends the fresh venv this venv's site-packages
for the dependencies (appended after its own, so the wheel's ``edgeward`` is the one imported,
which the test checks). A dependency this venv lacks for the interpreter the user can run (say
``async-timeout`` for a Python before 3.11.3) is installed from the package index, and only then.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeward.config import ConfigError, load
from edgeward.devtools.ports import free_ports
from edgeward.gateway.settings import GatewaySettings
from tests.test_packaging import _fresh_tree

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WAIT_S = 60.0


def _env_lines(dockerfile: str) -> dict[str, str]:
    """The ``ENV KEY=VALUE`` instructions of the Dockerfile (its continuation lines joined)."""
    env: dict[str, str] = {}
    for instruction in re.sub(r"\\\n\s*", " ", dockerfile).splitlines():
        if instruction.startswith("ENV "):
            for pair in instruction[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


DOCKERFILE = (ROOT / "Dockerfile").read_text()
IMAGE_ENV = _env_lines(DOCKERFILE)


# --- hadolint ----------------------------------------------------------------------------------


def _hadolint(dockerfile: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hadolint"), "--no-color", "-"], input=dockerfile, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run([str(BIN / "hadolint"), "--no-color", "Dockerfile"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_what_the_inline_ignore_hides() -> None:
    """The lint is not vacuous: without its one inline ignore, the Dockerfile has a finding."""
    assert "# hadolint ignore=DL3008\n" in DOCKERFILE
    result = _hadolint(DOCKERFILE.replace("# hadolint ignore=DL3008\n", ""))
    assert result.returncode == 1 and "DL3008" in result.stdout, result.stdout + result.stderr


# --- the image's settings ------------------------------------------------------------------------


def test_the_image_defaults_are_valid_gateway_settings() -> None:
    settings = load(GatewaySettings, env=IMAGE_ENV)
    assert str(settings.grpc_addr) == "0.0.0.0:50051"
    assert str(settings.admin_http_addr) == "0.0.0.0:9090"
    assert settings.workers == 1
    assert settings.shutdown_grace_ms < 10_000  # docker stop's default timeout
    assert IMAGE_ENV["EDGEWARD_HEALTHCHECK_URL"] == f"http://127.0.0.1:{settings.admin_http_addr.port}/readyz"
    for name in ("STOPSIGNAL SIGTERM", 'CMD ["/usr/local/bin/edgeward-start"]', "USER 10001:10001"):
        assert f"\n{name}\n" in DOCKERFILE
    assert 'HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["edgeward", "healthcheck"' in (
        DOCKERFILE
    )


def test_the_image_defaults_are_checked_by_that_test() -> None:
    with pytest.raises(ConfigError):
        load(GatewaySettings, env=IMAGE_ENV | {"EDGEWARD_GRPC_MAX_CONCURRENT_STREAMS": "0"})


def test_the_compose_gateway_environment_is_valid_settings() -> None:
    """compose.yaml's gateway block, read as the flat ``KEY: value`` lines it is written in."""
    text = (ROOT / "compose.yaml").read_text()
    block = text.split("\n  gateway:\n", 1)[1].split("\n    environment:\n", 1)[1]
    env = dict(re.findall(r"^      (EDGEWARD_\w+): \"?([^\"\n]*)\"?$", block.split("\n    volumes:", 1)[0], re.M))
    settings = load(GatewaySettings, env=IMAGE_ENV | env)
    assert settings.workers == 2 and settings.redis_url == "redis://redis:6379/0"
    assert settings.signing_key_file == "/var/lib/edgeward/gateway.key"
    # Each service that serves has a healthcheck through the image's command, and the gateway waits for them.
    assert text.count('test: ["CMD", "edgeward", "healthcheck", "--url"') == 2
    for service in ("redis", "stub-backend"):
        assert f"      {service}: {{condition: service_healthy}}\n" in text


# --- the scripts, as the image runs them -----------------------------------------------------------


@dataclass(frozen=True)
class User:
    """Who runs the image's processes: ``nobody`` when the suite runs as root, else the suite's user."""

    uid: int
    gid: int

    def command(self, *argv: str | Path) -> list[str]:
        args = [str(arg) for arg in argv]
        if os.geteuid() != 0:
            return args
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *args]


def _user() -> User:
    if os.geteuid() != 0:
        return User(os.geteuid(), os.getegid())
    nobody = pwd.getpwnam("nobody")
    return User(nobody.pw_uid, nobody.pw_gid)


def _clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEWARD_", "PIP_", "PYTHON", "VIRTUAL_ENV"))}
    return keep | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"} | extra


def _run(argv: Sequence[str | Path], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False, cwd="/")


def _ok(argv: Sequence[str | Path], env: dict[str, str]) -> str:
    result = _run(argv, env)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _interpreter(user: User) -> str:
    """An interpreter of this Python version that ``user`` runs as this process does (this venv's
    base may sit under a home directory the user cannot enter)."""
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [getattr(sys, "_base_executable", sys.executable), shutil.which(f"python{minor}"),
                  f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}"]
    probe = ("import sys, venv, os; "
             "print('%d.%d' % sys.version_info[:2], sys.version, os.path.realpath(sys.executable))")
    for candidate in filter(None, candidates):
        as_user = _run(user.command(candidate, "-c", probe), _clean_env(), timeout=60)
        as_us = _run([candidate, "-c", probe], _clean_env(), timeout=60)
        if as_user.returncode == 0 and as_user.stdout == as_us.stdout and as_user.stdout.startswith(f"{minor} "):
            return str(candidate)
    pytest.fail(f"no Python {minor} that uid {user.uid} can run among {candidates}")


# The requirements of edgeward, all the way down, that this interpreter does not find installed.
_MISSING = """
import importlib.metadata as md
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
todo, seen, missing = [("edgeward", "")], set(), []
while todo:
    name, extra = todo.pop()
    if (name, extra) in seen:
        continue
    seen.add((name, extra))
    for req in map(Requirement, md.requires(name) or []):
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            version = None
        if version is None or not req.specifier.contains(version, prereleases=True):
            missing.append(f"{canonicalize_name(req.name)}{req.specifier}")
            continue
        todo += [(req.name, e) for e in ("", *req.extras)]
print(" ".join(sorted(set(missing))))
"""


@dataclass(frozen=True)
class Install:
    root: Path  # everything of this test: removed at the end
    wheel: Path
    venv: Path
    user: User


@pytest.fixture(scope="module")
def install() -> Iterator[Install]:
    root = Path(tempfile.mkdtemp(prefix="edgeward-container-"))
    try:
        root.chmod(0o755)  # the non-root user must reach the venv
        tree, wheels, venv = root / "tree", root / "wheels", root / "venv"
        tree.mkdir()
        _fresh_tree(tree)
        env = _clean_env(PYTHON=sys.executable)
        _ok([ROOT / "container" / "build.sh", tree, wheels], env)
        (wheel,) = wheels.glob("edgeward-*.whl")
        user = _user()
        env = _clean_env(PYTHON=_interpreter(user))
        _ok([ROOT / "container" / "install.sh", venv, wheels, "--no-deps", "--no-index"], env)
        # The dependencies: this venv's site-packages, after the fresh venv's own (docstring).
        (site,) = venv.glob("lib/python3.*/site-packages")
        lent = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        (site / "_edgeward_test_deps.pth").write_text("".join(f"{path}\n" for path in lent))
        missing = _ok(user.command(venv / "bin" / "python", "-c", _MISSING), _clean_env()).split()
        if missing:
            pip = (venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-cache-dir")
            _ok([*pip, *missing], _clean_env())
        yield Install(root, wheel, venv, user)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_build_sh_makes_a_wheel_with_every_native_module(install: Install) -> None:
    assert not install.wheel.name.endswith("-none-any.whl"), install.wheel.name


def test_build_sh_refuses_a_pure_build(tmp_path: Path) -> None:
    result = _run([ROOT / "container" / "build.sh", ROOT, tmp_path],
                  _clean_env(PYTHON=sys.executable, EDGEWARD_NO_EXTENSIONS="1"))
    assert result.returncode == 2 and "native modules" in result.stderr
    assert list(tmp_path.iterdir()) == []


class Processes:
    """Processes started as the image's user, each in its own session; all killed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=self.root)
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_the_image_runs_outside_docker(install: Install) -> None:
    user, venv, root = install.user, install.venv, install.root
    edgeward = str(venv / "bin" / "edgeward")
    state = root / "state"
    state.mkdir()
    os.chown(state, user.uid, user.gid)
    base = _clean_env(PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")

    # The wheel's own package runs, all native, as the user (the Dockerfile's `edgeward doctor` step).
    doctor = _ok(user.command(edgeward, "doctor"), base)
    assert doctor.count(f"native  {venv}/lib/") == 3, doctor

    key = state / "gateway.key"
    public_key = _ok(user.command(edgeward, "keygen", key), base).strip()
    stub_http, stub_grpc, grpc_port, public_port, admin_port = free_ports(
        "stub_http", "stub_grpc", "grpc", "public", "admin"
    ).values()
    processes = Processes(root)
    try:
        stub = processes.start("stub", user.command(edgeward, "stub-backend"), base | {
            "EDGEWARD_STUB_HTTP_ADDR": f"127.0.0.1:{stub_http}", "EDGEWARD_STUB_GRPC_ADDR": f"127.0.0.1:{stub_grpc}",
        })
        # The image's ENV lines, then what a deployment sets, on loopback only.
        gateway_env = base | {k: v for k, v in IMAGE_ENV.items() if k.startswith("EDGEWARD_")} | {
            "EDGEWARD_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "EDGEWARD_PUBLIC_HTTP_ADDR": f"127.0.0.1:{public_port}",
            "EDGEWARD_ADMIN_HTTP_ADDR": f"127.0.0.1:{admin_port}",
            "EDGEWARD_BACKEND_BASE_URL": f"http://127.0.0.1:{stub_http}",
            "EDGEWARD_BACKEND_PUSH_ADDR": f"127.0.0.1:{stub_grpc}",
            "EDGEWARD_SIGNING_KEY_FILE": str(key),
            "EDGEWARD_HEALTHCHECK_URL": f"http://127.0.0.1:{admin_port}/readyz",
        }
        gateway = processes.start("gateway", user.command(ROOT / "container" / "start.sh"), gateway_env)

        # The HEALTHCHECK command, as the image runs it, until it says ready.
        deadline = time.monotonic() + WAIT_S
        while _run(user.command(edgeward, "healthcheck", "--quiet"), gateway_env, timeout=30).returncode != 0:
            assert gateway.poll() is None, f"the gateway exited {gateway.returncode}:\n{processes.log('gateway')}"
            assert stub.poll() is None, f"the stub exited {stub.returncode}:\n{processes.log('stub')}"
            assert time.monotonic() < deadline, f"not ready within {WAIT_S}s:\n{processes.log('gateway')}"
            time.sleep(0.2)

        # start.sh exec'd the gateway: the process the runtime signals is `edgeward serve`, not root.
        status = _proc_status(gateway.pid)
        assert status["Uid"].split()[0] == str(user.uid) != "0", status["Uid"]
        cmdline = Path(f"/proc/{gateway.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [edgeward.encode(), b"serve"], cmdline

        # A signed command through the gateway, its answer verified with the gateway's key.
        client_state = state / "client"
        client_state.mkdir()
        os.chown(client_state, user.uid, user.gid)
        call = _run(user.command(edgeward, "call", "user.echo", '{"from":"container"}'), base | {
            "EDGEWARD_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
            "EDGEWARD_PUBLIC_URL": f"http://127.0.0.1:{public_port}",
            "EDGEWARD_STUB_BACKEND_URL": f"http://127.0.0.1:{stub_http}",
            "EDGEWARD_CLIENT_STATE": str(client_state),
            "EDGEWARD_GATEWAY_PUBLIC_KEY": public_key,
        }, timeout=60)
        assert call.returncode == 0, call.stdout + call.stderr
        assert "verified response: result_code=ok" in call.stderr
        assert json.loads(call.stdout)["echo"] == {"from": "container"}

        # STOPSIGNAL SIGTERM: the gateway drains and exits 0; the health check then says not ready.
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(WAIT_S) == 0, processes.log("gateway")
        log = processes.log("gateway")
        assert "container/start.sh: open file limit" in log
        assert _run(user.command(edgeward, "healthcheck"), gateway_env, timeout=30).returncode == 1
        stub.send_signal(signal.SIGTERM)
        assert stub.wait(WAIT_S) == 0, processes.log("stub")
    finally:
        processes.stop_all()
