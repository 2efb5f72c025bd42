"""The distribution layer imports none of the layers above it: they plug into the
node's hooks (skycluster.distribution.hooks) instead. Every import counts, those
inside functions and under TYPE_CHECKING too."""

from __future__ import annotations

import ast
from pathlib import Path

import skycluster.distribution

ABOVE = (
    "skycluster.messaging",
    "skycluster.ops",
    "skycluster.strategy",
    "skycluster.cluster",
    "skycluster.cli",
    "skycluster.runtime",
    "skycluster.metrics",
    "skycluster.logs",
    "skycluster.members",
)


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_no_module_of_the_distribution_layer_imports_a_layer_above() -> None:
    package = Path(skycluster.distribution.__file__).parent
    files = sorted(package.rglob("*.py"))
    assert len(files) > 5
    upward = {
        f"{path.relative_to(package)} imports {module}"
        for path in files
        for module in imported_modules(path)
        if module in ABOVE or module.startswith(tuple(f"{layer}." for layer in ABOVE))
    }
    assert not upward, sorted(upward)


def test_the_check_sees_imports_in_every_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "import skycluster.ops.status\n"
        "from skycluster import messaging\n"
        "if TYPE_CHECKING:\n"
        "    from skycluster.runtime import Runtime\n"
        "def later():\n"
        "    from skycluster.strategy.base import Strategy\n"
    )
    found = imported_modules(sample)
    assert {
        "skycluster.ops.status",
        "skycluster.messaging",
        "skycluster.runtime",
        "skycluster.strategy.base",
    } <= found
