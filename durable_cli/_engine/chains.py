"""Continue-as-new: a long-lived loop ends its run's history and goes on as a fresh run.

`continue_as_new(*args)` unwinds the workflow like a suspension; the drive then, under the old
run's `closing` (no payload lands meanwhile):
1. delivers what waits in the old run's inbox, so every acknowledged payload is in a journal;
2. creates the next run of the chain exclusively (its id derived from the chain's first run and
   its generation, so a crash and a replay find it instead of making a second): same workflow,
   `parent`, queue, tags and deadline, the published events, the hooks the old run holds
   (`hooks`) and the payloads delivered to them but not yet taken (`hook_payload` copies),
   `continued_from`;
3. hands the hook tokens over in the store (they keep working), and makes the new run due now;
4. journals `run_continued` {`continued_as`} in the old run: it has ended.
A crash anywhere leaves the old run recoverable; its replay reaches `continue_as_new` again and
finishes whatever of 2-4 is missing. The drive that ended the old run goes on with the new one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, NoReturn

from ..errors import EngineError, RunNotFound, Suspend
from .._store.base import Store
from .execution import Execution
from .history import History

# run_started fields a new run of the chain inherits as they are
INHERITED = ("workflow", "name", "import_root", "parent", "queue", "schedule")


def chain_of(start: dict[str, Any], run_id: str) -> tuple[str, int]:
    """(first run id, generation) of the chain a run belongs to (a run that never continued: its own id, 0)."""
    chain = start.get("chain") or {}
    return str(chain.get("root", run_id)), int(chain.get("generation", 0))


def next_run_id(root: str, generation: int) -> str:
    """The id of the chain's run number `generation` (hashed when it would grow too long)."""
    run_id = f"{root}.g{generation}"
    if len(run_id) <= 200:
        return run_id
    return "g-" + hashlib.sha256(f"{root}:{generation}".encode()).hexdigest()[:32] + f".g{generation}"


def request(ex: Execution, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NoReturn:
    """`continue_as_new(*args, **kwargs)` in a workflow: check the call, then unwind the workflow."""
    if ex.closing:
        raise Suspend()
    ex.definition.check_call(args, kwargs)
    from .._payloads import stored

    stored([list(args), kwargs], "the arguments of continue_as_new")
    ex.continuation = (list(args), dict(kwargs))
    ex.closing = True
    raise Suspend()


def _unconsumed(history: History) -> list[dict[str, Any]]:
    """Payloads delivered to the run's hooks that no `next()` has taken yet."""
    taken: dict[str, int] = {}
    for op in history.ops.values():
        done = op.completion
        if op.kind == "wait" and done is not None and done.get("n"):
            taken[done["token"]] = max(taken.get(done["token"], 0), int(done["n"]))
    left = []
    for token, payloads in history.payloads.items():
        left += payloads[taken.get(token, 0):]
    return sorted(left, key=lambda event: event["seq"])


def _hooks(history: History) -> list[dict[str, Any]]:
    """The hooks the run holds (created or handed to it), as the next run's `hooks` field."""
    hooks = [dict(hook) for hook in history.start.get("hooks") or ()]
    for op in history.ops.values():
        if op.kind == "hook":
            created = op.events[0]
            hooks.append({"token": created["token"], "name": op.name, "until": created.get("until"),
                          **({"webhook": created["webhook"]} if created.get("webhook") else {})})
    return hooks


def carry_over(ex: Execution) -> str:
    """Steps 2 and 3 of the module docstring; returns the new run's id (`ex.successor` says when
    it was made due)."""
    history, store = ex.history, ex.store
    args, kwargs = ex.continuation or ([], {})
    root, generation = chain_of(history.start, ex.run_id)
    new_id = next_run_id(root, generation + 1)
    fields = {key: history.start[key] for key in INHERITED if key in history.start}
    fields.update({
        "v": history.start.get("v", 1), "run_id": new_id, "args": args, "kwargs": kwargs,
        "tags": dict(history.tags), "events": {k: e["value"] for k, e in history.published.items()},
        "hooks": _hooks(history), "continued_from": ex.run_id,
        "chain": {"root": root, "generation": generation + 1},
    })
    if history.deadline:  # the chain's deadline (a start's or its workflow's timeout) holds on
        fields["deadline"] = history.deadline
    payloads = _unconsumed(history)
    session = store.create_run(new_id)
    if session is None:
        session = store.open_run(new_id, wait=True)
        if session is None or session.events[0].get("continued_from") != ex.run_id:
            raise EngineError(f"run {ex.run_id} cannot continue as {new_id}: that id is taken by another run")
    try:
        known = {e.get("message_id") for e in session.events}
        if not session.events:
            session.stage({"type": "run_started", "seq": 0, "at": _now(ex), **fields})
        for payload in payloads:
            if payload.get("message_id") not in known:
                copied = {k: v for k, v in payload.items() if k not in ("type", "seq", "at")}
                session.stage({"type": "hook_payload", "seq": 0, "at": _now(ex), **copied})
        if not session.events:
            session.stage(due_now(_now(ex)))
        session.flush()
    finally:
        session.close()
    started = store.read_events(new_id)[0]
    store.index_run(new_id, {"created_at": started["at"], "workflow": fields.get("name", ""),
                             "tags": fields["tags"], "hidden": False})
    for hook in fields["hooks"]:
        store.release_token(hook["token"], ex.run_id)
        store.claim_token(hook["token"], new_id)
    due = ex.clock()
    store.set_due(new_id, due)
    ex.successor = (new_id, due)
    return new_id


def due_now(at: str) -> dict[str, Any]:
    """The `run_suspended` that ends a journal made by another run (a continuation, a fork): the
    run is due at once, and its first drive is no crash recovery."""
    return {"type": "run_suspended", "seq": 0, "at": at, "status": "sleeping", "wake_at": at, "waits": []}


def _now(ex: Execution) -> str:
    from .._timeparse import iso

    return iso(ex.clock())


def newest(store: Store, run_id: str, history_of: Callable[[str], History] | None = None) -> tuple[str, History]:
    """The newest run of the chain `run_id` belongs to (following `continued_as`), with its history
    (each run's as `history_of` reads it: by default folded from all its events)."""
    if history_of is None:
        history_of = lambda run: History(store.read_events(run))  # noqa: E731
    history = history_of(run_id)
    seen = {run_id}
    while history.status == "continued":
        following = str((history.outcome or {}).get("continued_as"))
        if following in seen:
            break
        try:
            history = history_of(following)
        except RunNotFound:
            break  # the new run's creation was cut short: the old run is the newest there is
        run_id = following
        seen.add(run_id)
    return run_id, history
