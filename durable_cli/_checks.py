"""`durable check`: replay runs (from a store, or exported journals) against the code importable
now, executing nothing and writing nothing, and say for each whether it still fits.

A row per run: `ok`, `diverges` (position, what the journal holds, what the code asked for, the
code's location), `cannot import` (the module and the reason) or `damaged` (its journal cannot be
read). Runs are read without being claimed: a run being executed meanwhile is checked as its
journal stood when read.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from ._engine.checking import ReplayOutcome, replay_only
from ._engine.history import Event
from ._store import Store
from ._status import FINAL_EVENTS
from .errors import DurableError, JournalDamaged, RunNotFound, WorkflowImportError

if TYPE_CHECKING:
    from ._engine.definitions import WorkflowDef

OK, DIVERGES, CANNOT_IMPORT, DAMAGED = "ok", "diverges", "cannot import", "damaged"


class _Definitions:
    """Workflow definitions by reference, each imported once per check (as a resume would import
    it: durable.yaml's `import_paths` first, shared dirs trusted as the options say)."""

    def __init__(self, options: Any) -> None:
        self._found: dict[str, Any] = {}
        self._options = options

    def load(self, start: Event) -> Any:
        from ._loader import load_workflow

        key = f"{start.get('workflow')}\0{start.get('import_root')}"
        if key not in self._found:
            try:
                self._found[key] = load_workflow(start, self._options.import_paths, self._options.allow_shared)
            except DurableError as exc:
                self._found[key] = exc
        found = self._found[key]
        if isinstance(found, Exception):
            raise found
        return found


def _import_row(row: dict[str, Any], exc: DurableError, start: Event) -> dict[str, Any]:
    module = exc.module if isinstance(exc, WorkflowImportError) else str(start.get("workflow", "")).partition(":")[0]
    reason = exc.reason if isinstance(exc, WorkflowImportError) else str(exc)
    return {**row, "status": CANNOT_IMPORT, "module": module, "reason": reason}


def check_events(run_id: str, events: list[Event], definitions: _Definitions,
                 clock: Callable[[], datetime], store: Store | None, options: Any) -> dict[str, Any]:
    """The row for one run's journal."""
    from ._engine.history import status_of

    start = events[0]
    row: dict[str, Any] = {"run_id": run_id, "workflow": start.get("workflow", ""), "run_status": status_of(events[-1])}
    try:
        definition = definitions.load(start)
    except DurableError as exc:
        return _import_row(row, exc, start)
    outcome: ReplayOutcome = replay_only(events, definition, clock, store, options)
    row.update(outcome.to_json())
    row["status"] = outcome.status
    return row


def check_store(store: Store, run_ids: list[str], workflow: str | None, finished: bool,
                clock: Callable[[], datetime], options: Any, workers: int = 1,
                reopen: Callable[[], Store] | None = None) -> list[dict[str, Any]]:
    """Rows for the named runs, or every run, in run id order: finished runs only with `finished`.

    With `workers` > 1 and `reopen` (a store of its own for each), forked processes share the runs,
    as tick's workers do: the replays are CPU work, and a busy machine gives each process its turn.
    """
    for run_id in run_ids:
        try:
            store.run_summary(run_id)
        except JournalDamaged:
            pass  # reported as damaged below; RunNotFound goes to the caller (an unknown run id)
    names = sorted(run_ids or store.run_ids())
    share = workers if workers > 1 and reopen is not None and len(names) >= 2 * workers else 1
    children = [_fork(names[k::share], reopen, workflow, finished, clock, options)
                for k in range(1, share)] if reopen is not None else []
    rows = _check_runs(store, names[::share], workflow, finished, clock, options)
    for pid, pipe in children:
        rows += _join(pid, pipe)
    return sorted(rows, key=lambda row: str(row["run_id"]))


def _fork(names: list[str], reopen: Callable[[], Store], workflow: str | None, finished: bool,
          clock: Callable[[], datetime], options: Any) -> tuple[int, int]:
    """Check `names` in a forked process that writes its rows to a pipe; (pid, read end)."""
    import json
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    os.close(read)
    try:
        store = reopen()
        try:
            rows = _check_runs(store, names, workflow, finished, clock, options)
        finally:
            store.close()
        with os.fdopen(write, "w") as out:
            out.write(json.dumps(rows))
    finally:
        os._exit(0)


def _join(pid: int, read: int) -> list[dict[str, Any]]:
    """The rows a forked worker wrote (a DurableError if it died without writing them)."""
    import json
    import os

    with os.fdopen(read) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    try:
        rows: list[dict[str, Any]] = json.loads(data)
    except ValueError:
        raise DurableError(f"check worker {pid} died (status {status})") from None
    return rows


def _check_runs(store: Store, names: list[str], workflow: str | None, finished: bool,
                clock: Callable[[], datetime], options: Any) -> list[dict[str, Any]]:
    """The rows of one share of the runs."""
    definitions = _Definitions(options)
    rows = []
    for run_id in names:
        try:
            events = store.read_events(run_id)
        except RunNotFound:
            continue  # pruned meanwhile
        except (JournalDamaged, OSError) as exc:
            rows.append({"run_id": run_id, "workflow": "", "status": DAMAGED, "reason": str(exc)})
            continue
        last = events[-1]["type"]
        if last == "run_migrated" or (last in FINAL_EVENTS and not finished):
            continue
        if workflow is not None and workflow not in (events[0].get("name"), events[0].get("workflow")):
            continue
        rows.append(check_events(run_id, events, definitions, clock, store, options))
    return rows


def check_files(paths: Iterable[str], finished: bool, clock: Callable[[], datetime],
                options: Any) -> list[dict[str, Any]]:
    """Rows for exported journals (a run's export or an archive of them), finished runs only with
    `finished`; an unreadable file is a `damaged` row."""
    from ._portable import read_path

    definitions = _Definitions(options)
    rows = []
    for path in paths:
        try:
            runs = read_path(path)
        except DurableError as exc:
            rows.append({"run_id": "", "file": path, "workflow": "", "status": DAMAGED, "reason": str(exc)})
            continue
        for run in runs:
            if run.events[-1]["type"] in FINAL_EVENTS and not finished:
                continue
            rows.append({"file": path, **check_events(run.run_id, run.events, definitions, clock, None, options)})
    return rows


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many rows have each status (every status named, zeros included)."""
    tally = Counter(row["status"] for row in rows)
    return {status: tally[status] for status in (OK, DIVERGES, CANNOT_IMPORT, DAMAGED)}


def check_replay(journal: str | os.PathLike[str] | Iterable[str] | Iterable[bytes] | Iterable[Mapping[str, Any]],
                 workflow: WorkflowDef[..., Any] | str) -> ReplayOutcome:
    """Replay a recorded journal against `workflow` (a workflow, or its `module:function`),
    executing nothing: a pytest test that keeps exported journals (`durable export RUN > FILE`) as
    fixtures proves that the code of today still fits them.

    `journal` is a path, an iterable of lines (str or bytes) or an iterable of events (dicts).
    Raises NonDeterminismError naming what the journal holds and what the code asked for (and
    where); else returns the outcome so far: `status` "ok", `reached` ("end of journal",
    "suspended", "completed" with `result`, "failed" with `error`) and `position`. The replay's
    clock stands at the journal's last event, so the outcome does not depend on the day it runs.
    """
    from ._loader import resolve
    from ._portable import read_export
    from ._timeparse import parse_instant
    from .errors import NonDeterminismError

    if isinstance(journal, (str, os.PathLike)):
        with open(journal, "rb") as handle:
            events = read_export(handle.read(), os.fspath(journal)).events
    else:
        items: list[Any] = list(journal)
        if items and all(isinstance(item, Mapping) for item in items):
            events = [dict(item) for item in items]
        else:
            data = b"".join((item.encode() if isinstance(item, str) else bytes(item)).rstrip(b"\n") + b"\n"
                            for item in items)
            events = read_export(data, "the journal given").events
    if not events or events[0].get("type") != "run_started":
        raise ValueError("a journal begins with run_started")
    definition = resolve(workflow) if isinstance(workflow, str) else workflow
    stamp = parse_instant(events[-1]["at"])
    outcome = replay_only(events, definition, lambda: stamp)
    if outcome.status != "ok":
        raise NonDeterminismError(outcome.message, position=outcome.position, journal=outcome.journal,
                                  code=outcome.code, location=outcome.location)
    return outcome
