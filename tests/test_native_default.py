"""Which twin loads, checked in fresh interpreters: native by default, pure on request, fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from edgeward.native.loader import CONCERNS

_REPORT = "import json; from edgeward.native import loader; print(json.dumps([loader.load_all(), loader.FALLBACKS]))"

# Makes one native module unimportable, as a build without it (or a broken libsodium) would.
_BLOCK_CRYPTO_C = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "edgeward.native._crypto_c":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWARD_")}
    return subprocess.run(
        [sys.executable, "-c", code], env=clean | env, capture_output=True, text=True, timeout=60, check=False
    )


def test_native_twins_load_by_default() -> None:
    result = _run(_REPORT)
    assert result.returncode == 0, result.stderr
    active, fallbacks = json.loads(result.stdout)
    assert active == dict.fromkeys(CONCERNS, "c")
    assert fallbacks == {}
    assert result.stderr == ""  # no fallback warning


def test_no_extensions_selects_every_pure_twin() -> None:
    result = _run(_REPORT, EDGEWARD_NO_EXTENSIONS="1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0] == dict.fromkeys(CONCERNS, "py")


def test_a_native_module_that_fails_to_import_falls_back_with_one_warning() -> None:
    code = _BLOCK_CRYPTO_C + "import logging; logging.basicConfig()\n" + _REPORT
    result = _run(code)
    assert result.returncode == 0, result.stderr
    active, fallbacks = json.loads(result.stdout)
    assert active == dict.fromkeys(CONCERNS, "c") | {"crypto": "py"}
    assert fallbacks == {"crypto": "blocked for the test"}
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "edgeward.native._crypto_c" in warnings[0]


def test_doctor_reports_the_active_twins() -> None:
    ok = _run("from edgeward.cli import main; main(['doctor'])")
    assert ok.returncode == 0, ok.stderr
    assert "implementation: native" in ok.stdout
    fallback = _run(_BLOCK_CRYPTO_C + "from edgeward.cli import main; main(['doctor'])")
    assert fallback.returncode == 1
    assert "implementation: mixed" in fallback.stdout and "blocked for the test" in fallback.stdout
    pure = _run("from edgeward.cli import main; main(['doctor'])", EDGEWARD_NO_EXTENSIONS="1")
    assert pure.returncode == 0 and "implementation: pure" in pure.stdout
