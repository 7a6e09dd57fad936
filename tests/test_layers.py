"""The package's layers, read from its imports: a module never imports from a layer above its own.

docs/development.md draws the map this test enforces. Every ``import`` and ``from ... import`` of
``edgeward`` in ``src/edgeward`` counts, at module level or inside a function or an
``if TYPE_CHECKING`` block alike: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "edgeward"

# The shared base: top-level modules every layer may use.
BASE = frozenset({"__init__", "_pb", "clock", "config", "files", "reasons", "rpc_errors", "runtime"})
# The entry point: the one place that may import every layer.
ENTRY = frozenset({"__main__", "cli"})
# layer -> the layers it may import besides itself and the base.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "native": frozenset(),
    "io": frozenset(),
    "protection": frozenset({"io"}),
    "push": frozenset({"native"}),
    "public": frozenset({"native", "protection"}),
    "gateway": frozenset({"native", "io", "protection", "push", "public"}),
    "workers": frozenset({"native", "io", "protection", "push", "public", "gateway"}),
    "client": frozenset({"native"}),
    "stub": frozenset({"native"}),
    "devtools": frozenset({"native"}),
}


def layer_of(module: str) -> str:
    """``edgeward.gateway.server`` -> "gateway"; a base module -> "base"; the entry point -> "entry"."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in BASE:
        return "base"
    if top in ENTRY:
        return "entry"
    if top not in MAY_IMPORT:
        raise AssertionError(f"{module}: {top!r} is in no layer; add it to docs/development.md and this test")
    return top


def allowed(importer: str, imported: str) -> bool:
    if importer == "entry" or imported in ("base", importer):
        return True
    return imported in MAY_IMPORT.get(importer, frozenset())


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def edgeward_imports(path: Path) -> set[str]:
    """Every edgeward module ``path`` imports (``from edgeward.x import y`` counts as ``edgeward.x.y``
    when ``y`` is a module, so ``from edgeward.native import loader`` names the native layer)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "edgeward")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "edgeward":
                found.update(_submodule_or_self(node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; the layer check reads absolute imports only")
    return found


def _submodule_or_self(module: str, name: str) -> str:
    """``module.name`` when that is a module of the package, else ``module`` (``name`` is defined in it)."""
    path = PACKAGE.parent.joinpath(*module.split("."), name)
    return f"{module}.{name}" if path.is_dir() or path.with_suffix(".py").exists() else module


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_pb" not in p.parts)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_its_layer_or_below(path: Path) -> None:
    importer = layer_of(module_name(path))
    wrong = sorted(
        f"{target} ({layer_of(target)})" for target in edgeward_imports(path) if not allowed(importer, layer_of(target))
    )
    assert not wrong, f"{module_name(path)} ({importer}) imports from layers above it: {wrong}"


def test_every_subpackage_is_in_a_layer() -> None:
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")} - {"_pb"}
    assert subpackages == set(MAY_IMPORT)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The check itself: an upward import, even a lazy one, is found."""
    module = tmp_path / "m.py"
    module.write_text(
        "from edgeward import __version__, native\n"
        "def f():\n    from edgeward.gateway import server\n    import edgeward.push.hub\n"
    )
    targets = edgeward_imports(module)
    assert targets == {"edgeward", "edgeward.native", "edgeward.gateway.server", "edgeward.push.hub"}
    assert not allowed("protection", layer_of("edgeward.gateway.server"))
    assert not allowed("native", layer_of("edgeward.io.resp"))
    assert not allowed("stub", layer_of("edgeward.gateway.settings"))
    assert allowed("gateway", layer_of("edgeward.public.listener"))
    assert allowed("entry", layer_of("edgeward.stub.cli"))
