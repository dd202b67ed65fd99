"""The package's layering: the core never imports the demo (streams.demo), so the library ships without it."""

from __future__ import annotations

import ast
from pathlib import Path

STREAMS = Path(__file__).resolve().parents[1] / "streams"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions (absolute names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_core_module_imports_the_demo() -> None:
    core = [path for path in STREAMS.rglob("*.py") if STREAMS / "demo" not in path.parents]
    assert len(core) > 50  # the walk found the package
    offenders = {
        str(path.relative_to(STREAMS)): sorted(
            name for name in imported_modules(path) if name == "streams.demo" or name.startswith("streams.demo.")
        )
        for path in core
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_demo_command_is_reached_lazily_by_name() -> None:
    """cli.py names the demo command's module as text (LAZY_COMMANDS); importing the CLI loads no demo code."""
    from streams.cli import LAZY_COMMANDS  # noqa: PLC0415

    assert LAZY_COMMANDS["demo"][0] == "streams.demo.command"
    assert imported_modules(STREAMS / "cli.py").isdisjoint({"streams.demo", "streams.demo.command"})
