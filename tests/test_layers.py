"""The house's layers (docs/ARCHITECTURE.md, "Layers"), checked against the real import graph.

A module may import from its own package or from a lower layer, never from a higher one and
never sideways into another package of the same layer: that is what keeps the layers readable
and the graph free of cycles. Function-level (lazy) imports count like top-level ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

# Lowest first. A name is a package of app/ (`app.log`) or a top-level module (`app.errors`).
LAYERS: list[tuple[str, ...]] = [
    ("app.errors", "app.settings", "app.text", "app.cancellation", "app.auth"),
    ("app.infra",),
    ("app.log",),
    ("app.domain", "app.presence"),
    ("app.core",),
    ("app.notify", "app.analysis"),
    ("app.web",),
    ("app.api", "app.transports"),
    # The process: start-up checks and Hypercorn's fixes, the composition root, serving, the CLI.
    ("app.startup", "app.hypercorn_fixes"),
    ("app.main",),
    ("app.serving",),
    ("app.cli",),
    ("app.__main__",),
]
# Bottom modules that lean on each other (same layer, one direction only).
WITHIN_BOTTOM = {("app.auth", "app.errors"), ("app.auth", "app.settings"), ("app.auth", "app.text")}
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _module(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The layer unit a module belongs to: its package under app/, or itself at the top."""
    parts = module.split(".")
    if len(parts) >= 2 and (APP / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def _imports(path: Path) -> set[str]:
    module = _module(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("app."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base == "app" or base.startswith("app."):
                found.update(f"{base}.{alias.name}" if base in ("app", *RANK) else base for alias in node.names)
    return found


def _edges() -> list[tuple[str, str, str]]:
    edges = []
    for path in sorted(APP.rglob("*.py")):
        source = _module(path)
        for target in _imports(path):
            edges.append((source, _unit(source), _unit(target)))
    return edges


def test_every_module_belongs_to_a_layer() -> None:
    units = {_unit(_module(path)) for path in APP.rglob("*.py")} - {"app"}
    assert units <= set(RANK), f"add these to LAYERS and docs/ARCHITECTURE.md: {sorted(units - set(RANK))}"


def test_imports_only_go_down() -> None:
    wrong = []
    for source, unit, target in _edges():
        if target == unit or target not in RANK or unit not in RANK:
            continue
        down = RANK[target] < RANK[unit] or (unit, target) in WITHIN_BOTTOM
        if not down:
            wrong.append(f"{source} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("module", ["app.log.events", "app.domain.models", "app.infra.migrate"])
def test_lower_layers_do_not_load_the_web_stack(module: str) -> None:
    """Importing a lower module (Alembic's env, a bench script) must not pull in Quart."""
    import subprocess
    import sys

    probe = f"import sys, {module}; print('quart' in sys.modules, 'pywebpush' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
