"""The native twins expose what their pure-Python references expose, documented the same way.

Behaviour parity is tested per concern (test_<concern>.py with both twins, and the property
tests); this checks the surface: public names, docstrings and, where Cython exposes them,
signatures.
"""

from __future__ import annotations

import importlib
import inspect
import re
from types import ModuleType

import pytest

from edgeward.native.loader import CONCERNS

pytestmark = pytest.mark.native


def _pair(concern: str) -> tuple[ModuleType, ModuleType]:
    native = importlib.import_module(f"edgeward.native._{concern}_c")
    return native, importlib.import_module(f"edgeward.native._{concern}_py")


def _public_members(obj: object) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(obj).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property | classmethod))
    }


_EMBEDDED_SIGNATURE = re.compile(r"[\w.]+(\(.*\)|: .+)( -> .+)?")


def _doc(obj: object) -> str | None:
    """The docstring without the signature line Cython's ``embedsignature`` puts first."""
    doc = inspect.getdoc(obj)
    if doc is None:
        return None
    first, _, rest = doc.partition("\n")
    if _EMBEDDED_SIGNATURE.fullmatch(first) and (not rest or rest.startswith("\n")):
        return rest.strip() or None
    return doc


def _signature(obj: object) -> str | None:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize("concern", CONCERNS)
def test_same_public_names(concern: str) -> None:
    native, pure = _pair(concern)
    assert sorted(native.__all__) == sorted(pure.__all__)
    for name in pure.__all__:
        assert hasattr(native, name), f"edgeward.native._{concern}_c lacks {name}"


@pytest.mark.parametrize("concern", CONCERNS)
def test_same_docstrings_and_signatures(concern: str) -> None:
    native, pure = _pair(concern)
    for name in pure.__all__:
        ref, twin = getattr(pure, name), getattr(native, name)
        if not callable(ref):
            assert twin == ref, f"{concern}.{name}"
            continue
        assert _doc(twin) == _doc(ref), f"{concern}.{name} docstring"
        if inspect.isclass(ref):
            for member, value in _public_members(ref).items():
                assert hasattr(twin, member), f"{concern}.{name}.{member} missing"
                assert _doc(getattr(twin, member)) == _doc(value), f"{concern}.{name}.{member}"
        else:
            native_sig, pure_sig = _signature(twin), _signature(ref)
            if native_sig is not None:
                assert _names(native_sig) == _names(pure_sig), f"{concern}.{name} signature"


def _names(signature: str | None) -> list[str]:
    """Parameter names only: annotations render differently in Cython and Python."""
    if signature is None:
        return []
    inner = signature[signature.index("(") + 1 : signature.rindex(")")]
    return [part.split(":")[0].split("=")[0].strip() for part in inner.split(",") if part.strip()]
