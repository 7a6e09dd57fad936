"""The installed grpcio is a release measured with edgeward's own bench, inside the pinned range.

grpc.aio's per-call cost moves between releases (grpcio 1.84 added an asyncio Task and an
asyncio.wait per RPC to the server's accept loop, about +20% CPU per call for a bare echo here),
so a release is served only once it has been measured. bench/grpc_releases.toml lists the
releases measured, with their figures, the date and the command; pyproject.toml pins the range
that serves best. This fails when the installed grpcio is not listed there, or not in the pin.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
RELEASES = ROOT / "bench" / "grpc_releases.toml"
_COMPANIONS = ("grpcio", "grpcio-status", "grpcio-health-checking", "grpcio-reflection")


def _measured() -> dict[str, dict[str, object]]:
    data = tomllib.loads(RELEASES.read_text())
    return {str(entry["version"]): entry for entry in data["release"]}


def _how_to_measure(release: str) -> str:
    data = tomllib.loads(RELEASES.read_text())
    return (
        f"grpcio {release} is installed, but bench/grpc_releases.toml has no measurement of it. "
        "Measure it against the releases listed there before serving it:\n"
        f"{data['measurement']['how_to_measure_a_new_release']}\n"
        "then add a [[release]] entry with its figures, and move the grpcio* pins in pyproject.toml "
        f"if it serves better (or install the measured, pinned release: {data['pin']['install']})."
    )


def _pins() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = (Requirement(line) for line in project["dependencies"])
    return {req.name: req for req in reqs if req.name in _COMPANIONS}


def test_installed_grpcio_was_measured() -> None:
    installed = version("grpcio")
    if installed not in _measured():
        pytest.fail(_how_to_measure(installed), pytrace=False)


def test_installed_grpcio_is_in_the_pinned_range() -> None:
    installed = version("grpcio")
    pin = _pins()["grpcio"]
    if not pin.specifier.contains(installed):
        pytest.fail(
            f"grpcio {installed} is installed, outside pyproject.toml's {pin}: reinstall the project "
            "(pip install -e '.[dev]') or, to serve another release, measure it first (bench/grpc_releases.toml)",
            pytrace=False,
        )


def test_the_pin_admits_only_releases_that_serve() -> None:
    """Every measured release inside the pin was judged to serve; the file's pin is pyproject's."""
    measured = _measured()
    pins = _pins()
    assert set(pins) == set(_COMPANIONS), f"pyproject.toml should pin all of {_COMPANIONS}"
    assert len({str(req.specifier) for req in pins.values()}) == 1, (
        f"grpcio and its companions should share one range: {[str(r) for r in pins.values()]}"
    )
    data = tomllib.loads(RELEASES.read_text())
    assert str(pins["grpcio"].specifier) == str(Requirement("grpcio" + data["pin"]["range"]).specifier), (
        "bench/grpc_releases.toml [pin] range and pyproject.toml's grpcio pin differ"
    )
    admitted = [release for release in measured if pins["grpcio"].specifier.contains(release)]
    assert admitted, "no measured release is inside the pin"
    for release in admitted:
        assert measured[release]["serves"] is True, f"grpcio {release} is inside the pin but measured as not serving"
