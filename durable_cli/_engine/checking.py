"""Replaying a journal against the code importable now, executing nothing and writing nothing.

`durable check` and `durable_cli.testing.check_replay` use this to learn, before a deploy, whether
a run's history still matches its workflow. The replay is an `Execution` whose every way of making
a new fact stops it: a call at a position the journal does not hold, any event it would record
(a step attempt, a sleep's end, a payload taken, a child started), a retry back-off. So no step
body runs, no sleep is waited, no hook or child is created, and its store is a read-only view
whose writes stop the replay too. Stopping there is "ok": the run would simply go on from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, NoReturn, cast

from ..errors import EngineError, NonDeterminismError, StorageFailure, Suspend
from .._store.base import RunSession, Store
from .execution import Execution
from .history import Event, History
from .outcomes import error_info

_READS = frozenset({"read_events", "run_summary", "location"})


class _StopReplay(BaseException):
    """The replay reached something it would have to execute or write (a BaseException, like
    `Suspend`, so that workflow code cannot catch it)."""


class _ReadOnlyStore:
    """The store as a replay may see it: reads pass through; any write stops the replay. Every
    token counts as held (a replayed hook never re-claims its token)."""

    def __init__(self, store: Store | None) -> None:
        self._store = store

    def token_owner(self, token: str) -> str | None:
        return "(checked run)"

    def messages(self, run_id: str) -> list[tuple[str, Any]]:
        return []  # what waits in the inbox is not journaled yet: the replay goes by the journal

    def __getattr__(self, name: str) -> Any:
        if name in _READS and self._store is not None:
            return getattr(self._store, name)

        def refused(*args: Any, **kwargs: Any) -> NoReturn:
            raise _StopReplay(name)

        return refused


class _Journal(RunSession):
    """A journal held in memory, never appended to."""

    def __init__(self, run_id: str, events: list[Event]) -> None:
        self.run_id = run_id
        self.events = events

    def stage(self, event: Event) -> Event:
        raise _StopReplay("record")

    def flush(self) -> None:
        pass

    @property
    def has_pending(self) -> bool:
        return False

    def stream_append(self, name: str, chunks: list[Event]) -> list[int]:
        raise _StopReplay("stream")

    def close(self) -> None:
        pass


class _Replay(Execution):
    """An execution that stops, unharmed, at the first thing it would have to do for real."""

    reached_end = False

    def _stop(self) -> NoReturn:
        self.reached_end = True
        self.closing = True
        raise Suspend()

    def begin(self, kind: str, name: str) -> tuple[int, Any]:
        pos, op = super().begin(kind, name)
        if op is None:
            self._stop()  # a call the journal does not hold yet: the run would go on from here
        return pos, op

    def record(self, event_type: str, **fields: Any) -> Event:
        self._stop()

    def record_encoded(self, event_type: str, fields: dict[str, Any], tail: str) -> Event:
        self._stop()

    def cancel_requested(self) -> bool:
        return False

    def pause(self, seconds: float) -> None:
        self._stop()

    async def pause_async(self, seconds: float) -> None:
        self._stop()


@dataclass
class ReplayOutcome:
    """What replaying a journal on the current code came to.

    `status` is "ok" or "diverges". `reached` says where an ok replay stopped: "end of journal"
    (the run would go on from there), "suspended" (it waits as the journal says), "completed" or
    "failed" (the workflow returned or raised, with `result` or `error`). A divergence names
    `position`, what the journal holds (`journal`) and what the code asked for (`code`), the code's
    `location`, and `message`.
    """

    status: str
    reached: str = ""
    position: int = 0
    result: Any = None
    error: dict[str, Any] | None = None
    journal: str = ""
    code: str = ""
    location: str = ""
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """The outcome as a row of `durable check --json` shows it."""
        document: dict[str, Any] = {"status": self.status, "position": self.position}
        if self.status == "ok":
            document["reached"] = self.reached
            if self.reached == "completed":
                document["result"] = self.result
            if self.error is not None:
                document["error"] = self.error
        else:
            document.update(journal=self.journal, code=self.code, location=self.location, message=self.message)
        return document


def replay_only(events: list[Event], definition: Any, clock: Callable[[], datetime],
                store: Store | None = None, options: Any = None) -> ReplayOutcome:
    """Replay `events` (one run's journal) against `definition`, executing and writing nothing."""
    from .lifecycle import _run_workflow
    from .run import Options

    run_id = str(events[0].get("run_id", "checked-run"))
    ex = _Replay(cast(Store, _ReadOnlyStore(store)), _Journal(run_id, events), clock, definition,
                 options or Options())
    history = ex.history
    start = history.start
    raised: BaseException | None = None
    result: Any = None
    try:
        result = _run_workflow(ex, start.get("args", []), start.get("kwargs", {}))
    except _StopReplay:
        ex.reached_end = True
    except (Suspend, StorageFailure):
        pass
    except EngineError as exc:
        ex.engine_error = exc
    except Exception as exc:
        raised = exc
    if ex.engine_error is not None:  # e.g. blocked on an asyncio primitive: the run could not go on
        return ReplayOutcome("diverges", position=ex.position, journal=_after(history, ex.position),
                             code=f"something the engine cannot run ({ex.engine_error})",
                             message=str(ex.engine_error))
    if isinstance(ex.fatal, NonDeterminismError):
        error = ex.fatal
        return ReplayOutcome("diverges", position=error.position or ex.position, journal=error.journal,
                             code=error.code, location=error.location, message=str(error))
    if ex.fatal is not None and not isinstance(ex.fatal, _StopReplay):
        raised = ex.fatal
    if raised is not None:
        return _raised(history, ex, raised)
    if ex.reached_end or ex.fatal is not None:
        return ReplayOutcome("ok", "end of journal", ex.position)
    if ex.suspension is not None:
        return ReplayOutcome("ok", "suspended", ex.position)
    return _returned(history, ex, result)


def _raised(history: History, ex: Execution, exc: BaseException) -> ReplayOutcome:
    """The workflow raised on replay: fine where the journal says the run failed so; otherwise the
    new code would fail a run the journal shows going on."""
    error = error_info(exc)
    outcome = history.outcome or {}
    if outcome.get("type") == "run_failed" and (outcome.get("error") or {}).get("type") == error["type"]:
        return ReplayOutcome("ok", "failed", ex.position, error=error)
    journal = _after(history, ex.position)
    code = f"the workflow to raise {error['type']}: {error['message']}"
    return ReplayOutcome("diverges", position=ex.position + 1, journal=journal, code=code,
                         message=f"replay diverges: after position {ex.position} the journal holds "
                                 f"{journal} but {code}")


def _returned(history: History, ex: Execution, result: Any) -> ReplayOutcome:
    """The workflow returned on replay: fine unless the journal recorded another ending."""
    outcome = history.outcome or {}
    if outcome.get("type") in (None, "run_completed"):
        return ReplayOutcome("ok", "completed", ex.position, result=result)
    journal = _after(history, ex.position)
    return ReplayOutcome("diverges", position=ex.position + 1, journal=journal, code="the workflow to return",
                         message=f"replay diverges: after position {ex.position} the journal holds "
                                 f"{journal} but the workflow returned")


def _after(history: History, position: int) -> str:
    """What the journal holds after `position`, in words."""
    outcome = history.outcome
    if outcome is None:
        return "a run going on"
    if outcome["type"] == "run_failed":
        error = outcome.get("error") or {}
        return f"the run failing with {error.get('type')}: {error.get('message')}"
    return f"the run {outcome['type'].removeprefix('run_')}"
