"""The layering of docs/architecture.md, checked against the package's own imports.

Every module of ``skycluster`` belongs to one layer; a module may import only
from its own layer or the layers below it. Imports under ``TYPE_CHECKING`` and
inside functions count too: a lower layer that needs something from above takes
it through a seam (a handler registry, a callback, a small protocol class).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "skycluster"

# From the ground up; the same table is drawn in docs/architecture.md.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "foundation",
        [
            "errors",
            "names",
            "telemetry",
            "events",
            "cookie",
            "_version",
            "_backoff",
            "_counters",
            "_ratelimit",
            "_tasks",
            "_blocking",
            "dns",
            "k8s",
        ],
    ),
    ("distribution", ["distribution"]),
    ("membership", ["membership"]),
    ("configuration", ["config"]),
    ("services", ["messaging", "ops", "strategy", "erlang"]),
    ("assembly", ["runtime", "erlang_processes", "cluster", "cli", "__init__", "__main__"]),
]

# Packages of one layer that stand side by side: neither imports the other.
SIBLINGS = [("messaging", "ops"), ("messaging", "strategy"), ("ops", "strategy")]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _layer_of(module: str) -> int:
    top = _top(module)
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(
        f"skycluster.{module} is in no layer: add {top!r} to LAYERS here and to "
        "docs/architecture.md"
    )


def _imports(module: str, path: Path) -> set[str]:
    """The skycluster modules that ``module`` imports (relative to the package)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("skycluster."):
                    found.add(alias.name.removeprefix("skycluster."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            elif node.module == "skycluster":
                target = ""
            elif node.module and node.module.startswith("skycluster."):
                target = node.module.removeprefix("skycluster.")
            else:
                continue
            if target:
                found.add(target)
            else:  # from skycluster import x, y: each a module or a name of __init__
                for alias in node.names:
                    found.add(alias.name if (PACKAGE / alias.name).exists() or (
                        PACKAGE / f"{alias.name}.py"
                    ).exists() else "__init__")
    return found


MODULES = _modules()
IMPORTS = {module: _imports(module, path) for module, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    mine = _layer_of(module)
    upward = [
        f"skycluster.{target} ({LAYERS[_layer_of(target)][0]})"
        for target in sorted(IMPORTS[module])
        if _layer_of(target) > mine
    ]
    assert not upward, (
        f"skycluster.{module} ({LAYERS[mine][0]}) imports a layer above it: "
        f"{', '.join(upward)}; offer a seam instead (docs/architecture.md)"
    )


def test_siblings_stand_apart() -> None:
    crossing = [
        f"skycluster.{module} -> skycluster.{target}"
        for module, targets in IMPORTS.items()
        for target in targets
        for a, b in SIBLINGS
        if {_top(module), _top(target)} == {a, b}
    ]
    assert not crossing, crossing


def test_no_import_cycles_among_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in IMPORTS.items():
        for target in targets:
            if _top(target) != _top(module) and _top(module) != "__init__":
                graph[_top(module)].add(_top(target))
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(package: str, path: list[str]) -> None:
        seen[package] = 1
        for target in sorted(graph[package]):
            if seen.get(target) == 1:
                cycle = [*path[path.index(target) :], target] if target in path else [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in seen:
                visit(target, [*path, target])
        seen[package] = 2

    for package in sorted(graph):
        if package not in seen:
            visit(package, [package])


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import of messaging from the distribution layer is found."""
    fake = tmp_path / "link.py"
    fake.write_text("from skycluster.messaging import wire\n")
    assert _imports("distribution.link", fake) == {"messaging"}
    assert _layer_of("messaging") > _layer_of("distribution.link")


def test_a_node_without_erlang_imports_no_erlang_module() -> None:
    """The Erlang layer (about a third of the package) loads only on nodes that run
    it: ``import skycluster`` and the CLI, which every agent starts with, leave it out."""
    probe = (
        "import sys, skycluster, skycluster.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('skycluster.erlang')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout
