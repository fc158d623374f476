"""Data flows one way: cli -> client -> engine -> store -> journal, and nothing below imports above.

Every import of every module under durable_cli/ counts: those at the top, those inside functions
(a function-level import that hides a cycle is still a cycle) and those under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "durable_cli"

# Lowest first: a module may import modules of its own layer or of a layer below, never above.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_errors_core", "_timeparse", "_faults", "_payloads", "_webhooks", "_status", "_digest", "_queues",
     "_tarread"),  # leaves: no durable_cli imports but these
    ("_telemetry", "_otel"),  # observability hooks: the engine calls them; they import only leaves
    ("_journal", "_reasons"),  # the journal; one-line reasons kept for a run (storable like its text)
    ("_store",),
    ("_engine", "_loader"),  # a run's lifecycle: replay, steps, waits, children; importing workflows
    ("_config", "_location", "_cron", "_transfer"),  # durable.yaml, loaded at the edge and passed down
    ("_schedules", "_retention"),
    ("_tick", "_passes"),  # one pass; passes repeated (tick --loop, serve --tick)
    ("_inspection", "_maintenance", "_listing"),
    ("_client", "_api", "_logs", "_checks", "_portable"),  # what callers and workflow code call
    ("_serve",),
    ("cli", "testing", ""),  # the entry points ("" is durable_cli/__init__.py)
]


def _name(path: Path) -> str:
    """`durable_cli._engine.lifecycle` for durable_cli/_engine/lifecycle.py (a package: its name)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> set[str]:
    """The durable_cli modules `module` imports, wherever in the file the import is."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:  # `from .. import _faults` imports the module _faults
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name == "durable_cli" or name.startswith("durable_cli.")}


def layer_of(module: str) -> int:
    """The index in LAYERS of the layer holding `module` (by its first name under durable_cli)."""
    top = module.split(".")[1] if "." in module else ""
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(module: str) -> None:
    upward = sorted(name for name in _imports(module) if layer_of(name) > layer_of(module))
    assert upward == [], f"{module} (layer {LAYERS[layer_of(module)]}) imports from above: {upward}"


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("durable_cli._serve")))
def test_the_server_calls_the_client_never_the_engine(module: str) -> None:
    engine = sorted(name for name in _imports(module) if name.startswith("durable_cli._engine"))
    assert engine == [], f"{module} imports the engine directly: {engine}"


def test_the_walk_sees_function_level_imports() -> None:
    """The cycle this test was written against hid in a function body: the walk must see those."""
    assert "durable_cli._engine.lifecycle" in _imports("durable_cli._tick")  # imported inside _drive
    assert layer_of("durable_cli._engine.lifecycle") < layer_of("durable_cli._client")


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md's module map stays whole: a new module gets its line there."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    modules = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py"))
    assert [name for name in modules if f"`{name}`" not in page] == []
