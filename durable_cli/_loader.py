"""Finding workflow functions: `module:function` references, and the code a resume runs.

Like flask's `locate_app`, loading tells apart a module that does not exist, a module that raised
while importing, a missing attribute and an attribute that is not a workflow, each with its own
message; a module that cannot be imported raises WorkflowImportError (its name and the reason).

A resume runs the code deployed now: it imports the run's module by name from the current import
path (the directory durable runs in, durable.yaml's `import_paths`, PYTHONPATH, installed
packages). The directory recorded in the run's journal (`import_root`) is only a last resort, for a
module found nowhere else, and only when it is a directory of this user that nobody else can write
to: a journal never makes durable import from someone else's directory.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from contextvars import ContextVar
from typing import Any, Iterator, Sequence

from ._engine.definitions import WorkflowDef
from .errors import InvalidReference, WorkflowImportError

_importing: ContextVar[str | None] = ContextVar("durable_importing", default=None)  # per thread


def _add_path(root: str) -> None:
    if root and root not in sys.path:
        sys.path.insert(0, root)


def use_import_paths(import_paths: Sequence[str]) -> None:
    """Put durable.yaml's `import_paths` in front of sys.path, in their order (a resume puts the
    directory durable runs in before them; PYTHONPATH and installed packages follow)."""
    for root in reversed(list(import_paths)):
        while root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)


def _import(module_name: str, ref: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise _ModuleMissing(module_name, f"no module named {module_name!r}",
                                 f"no module named {module_name!r} (from {ref!r})") from None
        raise WorkflowImportError(module_name, f"raised while importing: {exc}",
                                  f"module {module_name!r} raised while importing: {exc}") from exc
    except Exception as exc:
        reason = f"raised while importing: {type(exc).__name__}: {exc}"
        raise WorkflowImportError(module_name, reason, f"module {module_name!r} {reason}") from exc


class _ModuleMissing(WorkflowImportError):
    """The module itself is on no import path (not one of its own imports)."""


def _attribute(module: Any, qualname: str, ref: str) -> Any:
    target = module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise WorkflowImportError(module.__name__, f"it has no attribute {qualname!r}",
                                      f"module {module.__name__!r} has no attribute {qualname!r}") from None
    return target


def resolve(ref: str, cwd: str | None = None, import_paths: Sequence[str] = ()) -> WorkflowDef:
    """The workflow named by `module:function` (or `path/file.py:function`), importable from `cwd`
    (durable.yaml's `import_paths` go in front of sys.path first)."""
    use_import_paths(import_paths)
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
    """How a run's journal names its workflow: module, qualified name, import root (and file).

    A workflow of the script run as `python script.py` (`__main__`) is refused: a resume could only
    import the script again by file name, running its top-level code (and any `start()` in it) again.
    So is one defined inside a function (`<locals>`): no import can find it again, so the run would
    never resume.
    """
    known = definition.journal_reference
    if known is not None:
        return known
    fn = definition.fn
    module = sys.modules.get(fn.__module__)
    file = os.path.abspath(getattr(module, "__file__", "") or "") if module else ""
    name = fn.__module__
    if name == "__main__":
        raise InvalidReference(
            f"workflow {fn.__qualname__!r} is defined in the script being run (__main__): a resume "
            "would import the script again and rerun its top-level code; define the workflow in a "
            "module and import it from the script")
    if "<locals>" in fn.__qualname__:
        raise InvalidReference(
            f"workflow {fn.__qualname__!r} is defined inside a function: a resume could not import "
            "it again, so the run would never wake; define the workflow at the top level of a module")
    root = os.path.dirname(file)
    if os.path.basename(file).startswith("__init__."):
        root = os.path.dirname(root)
    for _ in range(name.count(".")):
        root = os.path.dirname(root)
    definition.journal_reference = {"workflow": f"{name}:{fn.__qualname__}", "import_root": root}
    return definition.journal_reference


def importing_for_resume() -> str | None:
    """The module being imported to resume a run right now, if any (`start()` refuses to run then)."""
    return _importing.get()


@contextlib.contextmanager
def _resuming(module_name: str) -> Iterator[None]:
    reset = _importing.set(module_name)
    try:
        yield
    finally:
        _importing.reset(reset)


def load_workflow(start: dict[str, Any], import_paths: Sequence[str] = (),
                  allow_shared: str | None = None) -> WorkflowDef:
    """The workflow of a run, imported by name from the current import path (see the module doc),
    durable.yaml's `import_paths` first; `allow_shared` is $DURABLE_ALLOW_SHARED as the entry point
    read it (a group-shared import root is trusted with "group")."""
    use_import_paths(import_paths)
    module_name, _, qualname = str(start.get("workflow", "")).partition(":")
    ref = start.get("workflow", "")
    if module_name == "__main__" or not module_name or not qualname:
        raise InvalidReference(f"run {start.get('run_id')} names no importable workflow ({ref!r})")
    module = sys.modules.get(module_name)  # imported already (a tick resuming many runs of it)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        # (one another thread is still importing: the import below waits for it to finish)
        module = _import_for_resume(module_name, ref, start.get("import_root"), allow_shared)
    target = _attribute(module, qualname, ref)
    if not isinstance(target, WorkflowDef):
        raise InvalidReference(f"{ref!r} is not a workflow (decorate it with @workflow)")
    return target


def _import_for_resume(module_name: str, ref: str, import_root: Any, allow_shared: str | None) -> Any:
    """Import the run's module by name, the directory durable runs in first; from the run's recorded
    `import_root` only where it is found nowhere else and that directory is trusted."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    with _resuming(module_name):
        try:
            return _import(module_name, ref)
        except _ModuleMissing as missing:
            root = _trusted_root(import_root, allow_shared)
            if root is None:
                raise WorkflowImportError(missing.module, missing.reason, str(missing)) from None
            sys.path.append(root)
            importlib.invalidate_caches()
            return _import(module_name, ref)


def _trusted_root(root: Any, allow_shared: str | None) -> str | None:
    """The recorded import root, if it is a directory of ours that nobody else can write to."""
    from ._store.fsutil import shared_group_allowed, unsafe_reason

    if not isinstance(root, str) or not os.path.isabs(root) or root in sys.path:
        return None
    try:
        info = os.stat(root)
    except OSError:
        return None
    shared = shared_group_allowed(allow_shared)
    return root if os.path.isdir(root) and unsafe_reason(info, shared) is None else None
