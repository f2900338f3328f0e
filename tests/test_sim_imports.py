"""The simulator is the yardstick: it must not lean on the perf models it judges."""

from __future__ import annotations

import ast
from pathlib import Path

import inferno_mip.sim

FORBIDDEN = ("inferno_mip.queueing", "inferno_mip.tables")
SIM = Path(inferno_mip.sim.__file__).parent


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of the modules ``source`` (a module of ``package``) imports."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            if not node.level:
                names.add(node.module or "")
            elif node.module:
                names.add(f"{base}.{node.module}")
            else:
                names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_sim_never_imports_the_perf_models_or_tables():
    files = sorted(SIM.rglob("*.py"))
    assert files
    for path in files:
        package = ".".join(("inferno_mip", *path.relative_to(SIM.parent).parent.parts))
        bad = [n for n in imported_modules(path.read_text(encoding="utf-8"), package) if n.startswith(FORBIDDEN)]
        assert not bad, f"{path.name} imports {bad}"


def test_the_check_sees_relative_and_absolute_imports():
    assert "inferno_mip.queueing" in imported_modules("from .. import queueing\n", "inferno_mip.sim")
    assert "inferno_mip.queueing" in imported_modules("from ..queueing import perf\n", "inferno_mip.sim")
    assert "inferno_mip.tables" in imported_modules("import inferno_mip.tables\n", "inferno_mip.sim")
    assert "inferno_mip.sim.replica" in imported_modules("from .replica import x\n", "inferno_mip.sim")
