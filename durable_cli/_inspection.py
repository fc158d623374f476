"""Runs as people and scripts look at them: `ls` rows and `inspect` documents, from the journal."""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any, Callable, Iterator

from .errors import DurableError, JournalDamaged, RunNotFound
from ._store import Store

from ._engine.history import status_of


def row_for(run_id: str, first: dict[str, Any], last: dict[str, Any], problems: dict[str, str],
            tags: dict[str, str]) -> dict[str, Any]:
    """A run's `ls` row from its first and last journal events."""
    row = {
        "run_id": run_id, "status": status_of(last), "workflow": first.get("name", ""),
        "created_at": first["at"], "updated_at": last["at"], "parent": (first.get("parent") or {}).get("run_id"),
        "tags": tags,
    }
    if first.get("continued_from"):
        row["continued_from"] = first["continued_from"]
    if last["type"] == "run_blocked":
        row["reason"] = blocked_reason(last)
    if run_id in problems:
        row["error"] = problems[run_id]
    return row


def blocked_reason(event: dict[str, Any]) -> str:
    """Why a run is blocked, from its `run_blocked` event: the divergence and the code's location."""
    message = str((event.get("error") or {}).get("message", "replay diverged"))
    return f"{message} ({event['location']})" if event.get("location") else message


def list_runs(store: Store, status: str | None = None, all: bool = False) -> list[dict[str, Any]]:
    """One row per run, newest first. A run whose journal is damaged (or empty) is listed as
    `damaged`, one that cannot be opened as `unreadable`, each with its `error`; a run the last
    tick could not drive keeps its status and carries that tick's `error`. A run that continued
    as new is left out (the newest of its chain shows) unless `all` (or `status="continued"`).
    Tags are those given at start (read from the first line only; `search` sees `set_tags`)."""
    problems = store.problems()
    read = (_read_row(store, run_id) for run_id in store.run_ids())
    rows = kept(_with_problems([row for row in read if row is not None], problems), status, all)
    rows.sort(key=lambda row: (row["created_at"], row["run_id"]), reverse=True)
    return rows


def _with_problems(rows: list[dict[str, Any]], problems: dict[str, str]) -> list[dict[str, Any]]:
    """The rows as `_read_row` reads them with the last tick's problems added (to copies: the rows
    stay as read; a damaged or unreadable run's row keeps its own error)."""
    return [{**row, "error": problems[row["run_id"]]} if row["run_id"] in problems and "error" not in row else row
            for row in rows]


def kept(rows: list[dict[str, Any]], status: str | None, all: bool) -> list[dict[str, Any]]:
    """The rows of that status; or, unless `all`, those of every status but `continued`."""
    if status is not None:
        return [row for row in rows if row["status"] == status]
    return rows if all else [row for row in rows if row["status"] != "continued"]


def _read_row(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run's row without the last tick's problem; None for a run pruned while we listed."""
    from ._reasons import problem

    try:
        first, last = store.run_summary(run_id)
    except RunNotFound:
        return None
    except (DurableError, OSError) as exc:
        return {"run_id": run_id, "status": "damaged" if isinstance(exc, DurableError) else "unreadable",
                "workflow": "", "created_at": "", "updated_at": "", "error": problem(exc)}
    return row_for(run_id, first, last, {}, dict(first.get("tags") or {}))


class RunRows:
    """`list_runs(store, all=True)` kept between calls, for a process that lists often (`durable
    serve`): where the store hands out `run_stamps`, each call re-reads only the runs whose stamp
    changed (new runs read, pruned ones dropped, a run whose row was an error read again every
    time); elsewhere every run, as `list_runs`. Not thread-safe: one caller at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[str, tuple[object, dict[str, Any], tuple[str, str]]] = {}  # newest first

    def rows(self) -> list[dict[str, Any]]:
        """Every run's row, newest first, as `list_runs(store, all=True)` answers now (the rows are
        shared between calls: do not change them)."""
        stamps = self.store.run_stamps()
        if stamps is None:
            return list_runs(self.store, all=True)
        problems = self.store.problems()
        known = self._known
        for run_id in known.keys() - stamps.keys():
            del known[run_id]  # pruned
        for run_id, stamp in stamps.items():
            before = known.get(run_id)
            if before is not None and before[0] == stamp:
                continue
            row = _read_row(self.store, run_id)  # read after its stamp: never older than the stamp says
            if row is None:
                known.pop(run_id, None)
            else:
                known[run_id] = (stamp if "error" not in row else None, row, (row["created_at"], run_id))
        # kept in order, so the next sort has only the new runs to place
        self._known = {entry[1]["run_id"]: entry for entry in sorted(known.values(), key=itemgetter(2), reverse=True)}
        return _with_problems([entry[1] for entry in self._known.values()], problems)


def describe_run(store: Store, run_id: str, follow: bool = True) -> dict[str, Any]:
    """Everything `inspect --json` shows: status, workflow, args, outcome, times and every event.

    A run that continued as new is shown as the newest run of its chain (`requested` names the
    run asked for), unless `follow` is false."""
    from ._engine.chains import newest
    from ._engine.history import History

    requested = run_id
    read: dict[str, list[dict[str, Any]]] = {}

    def folded(run: str) -> History:
        read[run] = store.read_events(run)
        return History(read[run])

    run_id, history = newest(store, run_id, folded) if follow else (run_id, folded(run_id))
    events = read[run_id]  # read and folded once, following the chain or not
    entries = list(_entries(history, history.ops.__getitem__))
    return _document(store, run_id, requested, history, events, entries, events)


_BATCH = 256  # lines decoded at once when a stub is shown


def _where(store: Store, run_id: str) -> str:
    """How a store's reads name a run's journal in errors: its file, or the store and the run."""
    location = store.journal_location(run_id)
    return location if location != store.location else f"{store.location} run {run_id}"


class RunView:
    """What `durable inspect` prints, read so that its first screen does not wait for the rest:
    `document` is `describe_run`'s without its timeline and events, and `timeline()` and
    `events()` decode each event of a step's or a sleep's (the bulk of a long journal) only as they
    come to it (`_journal.skim`)."""

    def __init__(self, store: Store, run_id: str, follow: bool = True) -> None:
        from ._engine.chains import newest
        from ._engine.history import History

        read: dict[str, tuple[list[dict[str, Any]], list[bytes]]] = {}

        def skimmed(run: str) -> History:
            events, lines = store.skim_journal(run, _where(store, run))
            read[run] = events, lines
            return History(events)

        requested = run_id
        run_id, self.history = newest(store, run_id, skimmed) if follow else (run_id, skimmed(run_id))
        self._events, self._lines = read[run_id]
        self._whole: dict[int, dict[str, Any]] = {}  # stubs decoded so far, by line index
        self.where = _where(store, run_id)
        events = [*self._events[:-1], self._full(self._events[-1])]  # the header shows the last one's time
        self.document = _document(store, run_id, requested, self.history, events, [], [])

    def _full(self, event: dict[str, Any]) -> dict[str, Any]:
        """`event` whole: a stub is decoded from its line, with the stubs of the next lines (one
        parse for many lines is twice as fast as one a line)."""
        from . import _journal as journal

        if event["type"] not in journal.SKIMMED:
            return event
        index = event["seq"] - 1
        whole = self._whole.get(index)
        if whole is None:
            batch = [i for i in range(index, min(index + _BATCH, len(self._events)))
                     if self._events[i]["type"] in journal.SKIMMED and i not in self._whole]
            try:
                self._whole.update(zip(batch, journal.decode_lines([self._lines[i] for i in batch])))
            except ValueError:  # one a line: the first that does not decode is named
                self._whole.update((i, self._decode(i)) for i in batch)
            whole = self._whole[index]
        return whole

    def _decode(self, index: int) -> dict[str, Any]:
        from . import _journal as journal

        try:
            return journal.decode(self._lines[index])
        except ValueError as exc:
            raise JournalDamaged(f"journal damaged: {self.where}: line {index + 1} is unreadable ({exc})") from None

    def _op(self, pos: int) -> Any:
        from ._engine.history import Op

        skimmed = self.history.ops[pos]
        events = [self._full(event) for event in skimmed.events]
        op = Op(pos, skimmed.kind, str(events[0].get("name", "")))  # a stub has no name: as `History.add`
        op.retry_base = skimmed.retry_base
        op.events = events
        # the completion is one of the op's events, and `_full` hands out one object per line
        op.completion = None if skimmed.completion is None else self._full(skimmed.completion)
        return op

    def timeline(self) -> Iterator[dict[str, Any]]:
        return _entries(self.history, self._op)

    def events(self) -> Iterator[dict[str, Any]]:
        return (self._full(event) for event in self._events)


def _document(store: Store, run_id: str, requested: str, history: Any, events: list[dict[str, Any]],
              entries: list[dict[str, Any]], shown: list[dict[str, Any]]) -> dict[str, Any]:
    """`describe_run`'s document from a run's history, with `entries` as its timeline and `shown`
    as its events (`events` holds every event, skimmed or not: the header reads only whole ones)."""
    first, last = events[0], events[-1]
    outcome = history.outcome or history.blocked or {}
    return {
        "run_id": run_id, "status": status_of(last), "workflow": first.get("name", ""),
        "reference": first.get("workflow"), "args": first.get("args", []),
        "kwargs": first.get("kwargs", {}), "result": outcome.get("result"),
        "error": outcome.get("error"), "created_at": first["at"], "updated_at": last["at"],
        "wait": (history.suspended or {}).get("waits") if not history.finished else None,
        "wake_at": (history.suspended or {}).get("wake_at") if not history.finished else None,
        "parent": first.get("parent"), "children": [
            op.events[0]["child_run_id"] for op in history.ops.values() if op.kind == "child"
        ], "timeline": entries, "events": shown, "journal": store.journal_location(run_id),
        "problem": store.problems().get(run_id),
        "tags": dict(history.tags),
        "published": {key: event["value"] for key, event in history.published.items()},
        "continued_from": first.get("continued_from"), "requested": requested,
        "continued_as": outcome.get("continued_as"),
        "forked_from": first.get("forked_from"),
        "forks": [{"run_id": e["fork_run_id"], "from_step": e["from_step"]} for e in events if e["type"] == "run_forked"],
        "blocked": None if history.blocked is None else {
            "reason": blocked_reason(history.blocked), "position": history.blocked.get("position"),
            "journal": history.blocked.get("journal"), "code": history.blocked.get("code"),
            "location": history.blocked.get("location")},
    }


def _seconds(start: str, end: str) -> float:
    from ._timeparse import parse_instant

    return round((parse_instant(end) - parse_instant(start)).total_seconds(), 6)


def _step_entry(op: Any) -> dict[str, Any]:
    attempts = [e for e in op.events if e["type"] == "step_started"]
    errors = [e["error"] for e in op.events if e["type"] == "step_failed"]
    done = op.completion
    entry: dict[str, Any] = {
        "kind": "step", "pos": op.pos, "name": op.name, "attempts": len(attempts),
        "status": "running" if done is None else ("completed" if done["type"] == "step_completed" else "failed"),
        "started_at": attempts[0]["at"] if attempts else None,
        "errors": [f"{e.get('type')}: {e.get('message')}" for e in errors],
    }
    if done is not None and attempts:
        entry["duration"] = _seconds(attempts[0]["at"], done["at"])
    if done is not None and done["type"] == "step_completed":
        entry["result"] = done.get("result")
    retry = op.last("step_failed")
    if done is None and retry is not None and retry.get("retry_at"):
        entry["retry_at"] = retry["retry_at"]
    return entry


def timeline(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run as a list of its durable calls in position order, each summarised for people."""
    from ._engine.history import History

    history = History(events)
    return list(_entries(history, history.ops.__getitem__))


def _entries(history: Any, op_at: Callable[[int], Any]) -> Iterator[dict[str, Any]]:
    """The timeline's entries, one at a time; `op_at(pos)` gives the operation with whole events."""
    for pos in sorted(history.ops):
        op = op_at(pos)
        first = op.events[0]
        done = op.completion is not None
        if op.kind == "step":
            yield _step_entry(op)
        elif op.kind == "sleep":
            yield {"kind": "sleep", "pos": pos, "until": first.get("until"),
                   "status": "completed" if done else "sleeping"}
        elif op.kind == "hook":
            payloads = history.payloads.get(first["token"], [])
            sizes = [len(json.dumps(p["payload"])) for p in payloads]
            yield {"kind": "hook", "pos": pos, "name": op.name, "token": first["token"],
                   "deadline": first.get("until"), "payloads": len(payloads), "sizes": sizes}
        elif op.kind == "wait":
            outcome = op.completion or {}
            yield {"kind": "wait", "pos": pos, "name": op.name, "token": first.get("token"),
                   "status": "timed out" if outcome.get("timed_out") else
                   "cancelled" if outcome.get("cancelled") else
                   (f"payload {outcome['n']}" if done else "waiting"),
                   "deadline": (op.first("hook_wait") or {}).get("until")}
        elif op.kind in ("child", "join"):
            yield {"kind": op.kind, "pos": pos, "name": op.name,
                   "child_run_id": first.get("child_run_id"),
                   "status": (op.completion or {}).get("status", "started" if op.kind == "child" else "waiting")}
        else:
            yield {"kind": op.kind, "pos": pos, "name": op.name, "value": first.get("value")}
    if history.suspended is not None and not history.finished:
        for wait in history.suspended.get("waits", []):
            if wait["pos"] not in history.ops:
                kind = {"hook": "wait", "child": "join"}.get(wait["kind"], wait["kind"])
                yield {"kind": kind, "pos": wait["pos"], "name": "", "status": "waiting",
                       "token": wait.get("token"), "child_run_id": wait.get("child_run_id"),
                       "deadline": wait.get("until")}
