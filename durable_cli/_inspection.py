"""Runs as people and scripts look at them: `ls` rows and `inspect` documents, from the journal."""

from __future__ import annotations

import json
from typing import Any

from .errors import DurableError, RunNotFound
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
    from ._tick import problem

    rows: list[dict[str, Any]] = []
    problems = store.problems()
    for run_id in store.run_ids():
        try:
            first, last = store.run_summary(run_id)
        except (DurableError, OSError) as exc:
            if isinstance(exc, RunNotFound):
                continue  # pruned while we listed
            rows.append({"run_id": run_id, "status": "damaged" if isinstance(exc, DurableError) else "unreadable",
                         "workflow": "", "created_at": "", "updated_at": "", "error": problem(exc)})
            continue
        rows.append(row_for(run_id, first, last, problems, dict(first.get("tags") or {})))
    if status is not None:
        rows = [row for row in rows if row["status"] == status]
    elif not all:
        rows = [row for row in rows if row["status"] != "continued"]
    rows.sort(key=lambda row: (row["created_at"], row["run_id"]), reverse=True)
    return rows


def describe_run(store: Store, run_id: str, follow: bool = True) -> dict[str, Any]:
    """Everything `inspect --json` shows: status, workflow, args, outcome, times and every event.

    A run that continued as new is shown as the newest run of its chain (`requested` names the
    run asked for), unless `follow` is false."""
    from ._engine.chains import newest
    from ._engine.history import History

    requested = run_id
    if follow:
        run_id, _ = newest(store, run_id)
    events = store.read_events(run_id)
    history = History(events)
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
        ], "timeline": timeline(events), "events": events, "journal": store.journal_location(run_id),
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
    entries: list[dict[str, Any]] = []
    for pos in sorted(history.ops):
        op = history.ops[pos]
        first = op.events[0]
        done = op.completion is not None
        if op.kind == "step":
            entries.append(_step_entry(op))
        elif op.kind == "sleep":
            entries.append({"kind": "sleep", "pos": pos, "until": first.get("until"),
                            "status": "completed" if done else "sleeping"})
        elif op.kind == "hook":
            payloads = history.payloads.get(first["token"], [])
            sizes = [len(json.dumps(p["payload"])) for p in payloads]
            entries.append({"kind": "hook", "pos": pos, "name": op.name, "token": first["token"],
                            "deadline": first.get("until"), "payloads": len(payloads), "sizes": sizes})
        elif op.kind == "wait":
            outcome = op.completion or {}
            entries.append({"kind": "wait", "pos": pos, "name": op.name, "token": first.get("token"),
                            "status": "timed out" if outcome.get("timed_out") else
                            "cancelled" if outcome.get("cancelled") else
                            (f"payload {outcome['n']}" if done else "waiting"),
                            "deadline": (op.first("hook_wait") or {}).get("until")})
        elif op.kind in ("child", "join"):
            entries.append({"kind": op.kind, "pos": pos, "name": op.name,
                            "child_run_id": first.get("child_run_id"),
                            "status": (op.completion or {}).get("status", "started" if op.kind == "child" else "waiting")})
        else:
            entries.append({"kind": op.kind, "pos": pos, "name": op.name, "value": first.get("value")})
    if history.suspended is not None and not history.finished:
        for wait in history.suspended.get("waits", []):
            if wait["pos"] not in history.ops:
                kind = {"hook": "wait", "child": "join"}.get(wait["kind"], wait["kind"])
                entries.append({"kind": kind, "pos": wait["pos"], "name": "", "status": "waiting",
                                "token": wait.get("token"), "child_run_id": wait.get("child_run_id"),
                                "deadline": wait.get("until")})
    return entries
