"""Finding workflow functions: `module:function` references, and where their code was imported from.

Like flask's `locate_app`, loading tells apart a module that does not exist, a module that raised
while importing, a missing attribute and an attribute that is not a workflow, each with its own
message. A run's journal records the reference and its import root, so any process (a tick in
another directory, a host after a redeploy) imports the same code again.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from .engine.definitions import WorkflowDef
from .errors import InvalidReference


def _add_path(root: str) -> None:
    if root and root not in sys.path:
        sys.path.insert(0, root)


def _import(module_name: str, ref: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise InvalidReference(f"no module named {module_name!r} (from {ref!r})") from None
        raise InvalidReference(f"module {module_name!r} raised while importing: {exc}") from exc
    except Exception as exc:
        raise InvalidReference(
            f"module {module_name!r} raised while importing: {type(exc).__name__}: {exc}"
        ) from exc


def _attribute(module: Any, qualname: str, ref: str) -> Any:
    target = module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidReference(f"module {module.__name__!r} has no attribute {qualname!r}") from None
    return target


def resolve(ref: str, cwd: str | None = None) -> WorkflowDef:
    """The workflow named by `module:function` (or `path/file.py:function`), importable from `cwd`."""
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise InvalidReference(f"invalid workflow reference {ref!r}: use module:function")
    if module_name.endswith(".py"):
        path = os.path.abspath(os.path.join(cwd or os.getcwd(), module_name))
        if not os.path.isfile(path):
            raise InvalidReference(f"no file {module_name!r} (from {ref!r})")
        _add_path(os.path.dirname(path))
        module_name = os.path.splitext(os.path.basename(path))[0]
    else:
        _add_path(os.path.abspath(cwd or os.getcwd()))
    target = _attribute(_import(module_name, ref), qualname, ref)
    if not isinstance(target, WorkflowDef):
        raise InvalidReference(f"{ref!r} is not a workflow (decorate it with @workflow)")
    return target


def reference(definition: WorkflowDef) -> dict[str, Any]:
    """How a run's journal names its workflow: module, qualified name, import root (and file)."""
    fn = definition.fn
    module = sys.modules.get(fn.__module__)
    file = os.path.abspath(getattr(module, "__file__", "") or "") if module else ""
    name = fn.__module__
    if name == "__main__":
        name = os.path.splitext(os.path.basename(file))[0] if file else name
        root = os.path.dirname(file)
    else:
        root = os.path.dirname(file)
        if os.path.basename(file).startswith("__init__."):
            root = os.path.dirname(root)
        for _ in range(name.count(".")):
            root = os.path.dirname(root)
    return {"workflow": f"{name}:{fn.__qualname__}", "import_root": root}


def load_workflow(start: dict[str, Any]) -> WorkflowDef:
    """The workflow of a run, imported again from the reference its `run_started` event holds."""
    module_name, _, qualname = str(start.get("workflow", "")).partition(":")
    _add_path(str(start.get("import_root", "")))
    ref = start.get("workflow", "")
    if module_name == "__main__" or not module_name:
        raise InvalidReference(f"run {start.get('run_id')} names no importable workflow ({ref!r})")
    target = _attribute(_import(module_name, ref), qualname, ref)
    if not isinstance(target, WorkflowDef):
        raise InvalidReference(f"{ref!r} is not a workflow (decorate it with @workflow)")
    return target
