"""One execution of a run: matching the workflow's calls to journal positions, and recording new facts.

The workflow's Nth durable call is position N. A call whose position the journal already holds
gets the recorded outcome; a call of another kind or name than the journal holds there is a
non-determinism error naming both, and nothing unexpected runs. In async workflows, recorded
outcomes are handed back in the order they were journaled by the scheduler (engine/scheduler.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from ..errors import EngineError, NonDeterminismError, StorageFailure, StoreError, Suspend
from .._store.base import RunSession, Store
from .._timeparse import iso, parse_instant, utcnow, wall_iso
from .._telemetry import NO_TRACE, NOOP, Trace
from .context import WorkflowMetadata
from .history import Event, History, Op

if TYPE_CHECKING:
    from .waits import Wait

Clock = Callable[[], datetime]


def describe(kind: str, name: str) -> str:
    """How an operation is named in messages: `step 'charge'`, `a sleep`, `hook 'approval'`."""
    if kind == "sleep":
        return "a sleep"
    return f"{kind} {name!r}"


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ASYNCIO = os.path.dirname(os.path.abspath(asyncio.__file__))


def call_site() -> str:
    """Where the workflow's code made the current durable call (`file:line in function`): the
    innermost frame outside durable-cli and asyncio; "" when there is none."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith((_PACKAGE + os.sep, _ASYNCIO + os.sep)) and not path.startswith("<frozen"):
            return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return ""


def divergence(pos: int, journal: str, code: str, message: str | None = None) -> NonDeterminismError:
    """The error for a call that does not match the journal: both sides named, and the call site."""
    text = message or (f"workflow is not deterministic: at position {pos} the journal holds {journal} "
                       f"but the workflow asked for {code}")
    return NonDeterminismError(text, position=pos, journal=journal, code=code, location=call_site())


class Execution:
    """The state of one run while this process executes it under its claim."""

    def __init__(
        self, store: Store, session: RunSession, clock: Clock, definition: Any, options: Any,
        create_run: Callable[..., Any] | None = None,
    ) -> None:
        self.store = store
        self.session = session
        self.run_id = session.run_id
        self.history = History(session.events)
        self.clock = clock
        self.wall = clock is utcnow
        """Whether the run executes under the wall clock: its lines' `at` is then read as text
        (`wall_iso`), the same text `iso(clock())` makes, without a datetime."""
        self.definition = definition
        self.options = options
        timeout = (getattr(options, "defaults", None) or {}).get("timeout")
        self.default_timeout = None if timeout is None else float(timeout)
        """durable.yaml's `defaults: timeout:` for steps, in seconds (None: no timeout)."""
        self.create_run = create_run
        """How this run starts a child: the lifecycle's `create_run`, handed in by whoever
        executes it, so the engine never imports the layers above it."""
        self.position = 0
        """The position of the workflow's latest durable call."""
        self.derived = 0
        self.closing = False
        """Set once the workflow must unwind (suspended, aborted, cancelled, storage lost)."""
        self.fatal: BaseException | None = None
        """The error the run fails with (journaled as `run_failed`)."""
        self.storage_failure: StorageFailure | None = None
        self.engine_error: EngineError | None = None
        """An error of the engine that stopped the workflow (reported; the run stays recoverable)."""
        self.cancelled = False
        self.timed_out = False
        """Set once the run's deadline has passed: it ends as `timed_out` (docs/queues.md)."""
        self._cancel_checked = -float("inf")
        self.suspension: tuple[str, datetime | None, list[Wait]] | None = None
        """(status, earliest wake time, waits) when the run suspends."""
        self.marked = False
        """Whether the run is indexed as due now (recoverable by a tick if this process dies)."""
        self.continuation: tuple[list[Any], dict[str, Any]] | None = None
        """The arguments of `continue_as_new`, once the workflow asked for it."""
        self.successor: tuple[str, datetime] | None = None
        """The run this one continued as, and when it was made due."""
        self.trace: Trace = getattr(options, "telemetry", NOOP).trace(self)
        """This execution's spans and metrics (`_telemetry`; a no-op unless observability is on)."""
        self.traced = self.trace is not NO_TRACE
        """Whether `trace` does anything (else the step path skips its calls)."""
        self._cancel_probe: Callable[[], bool] | None = None
        self.unsynced: set[str] = set()
        """Types of the events recorded since the last flush (children.start_child skips the flush
        when they are only its own `child_started`/`child_finished`)."""
        self.children: Any = None
        """The children started and not yet journaled (`children.Starting`): settled before any
        line of this run is stored."""
        self.handed: list[str] = []
        """Children whose outcome was handed to this run in-process (not through its inbox): each
        stays due until this run's journal holds its `child_finished` durably (lifecycle._finish)."""

    @property
    def metadata(self) -> WorkflowMetadata:
        start = self.history.start
        instant = (start.get("schedule") or {}).get("instant")
        return WorkflowMetadata(self.run_id, start.get("name", ""), parse_instant(start["at"]),
                                parse_instant(instant) if instant else None, dict(self.history.tags))

    def index(self) -> None:
        """Write the run's listing entry (creation time, workflow, tags, whether it continued)."""
        start = self.history.start
        self.store.index_run(self.run_id, {
            "created_at": start["at"], "workflow": start.get("name", ""), "tags": dict(self.history.tags),
            "hidden": self.history.status == "continued"})

    def cancel_requested(self) -> bool:
        """Whether someone asked to cancel the run: asked of the store before every step, or at
        most every `store.cancel_poll_seconds` where a store sets one (the PostgreSQL store answers
        from the flag its last write read, trusted 20 ms, so a step may still start within 20 ms
        of an acknowledged `durable cancel` there; on the file and memory stores a look is a stat
        or a dict read, and no step starts once the request is recorded).
        A passed deadline counts as a request (to end the run as `timed_out`).
        """
        if not self.cancelled:
            probe = self._cancel_probe or self._probe()
            poll = self.store.cancel_poll_seconds
            if not poll:
                self.cancelled = probe()
            else:
                now = time.monotonic()
                if now - self._cancel_checked >= poll:
                    self._cancel_checked = now
                    self.cancelled = probe()
        deadline = self.history.deadline
        if deadline is not None and not self.timed_out and not self.history.finished:
            self.timed_out = iso(self.clock()) >= deadline
        return self.cancelled or self.timed_out

    def _probe(self) -> Callable[[], bool]:
        self._cancel_probe = self.store.cancel_probe(self.run_id)
        return self._cancel_probe

    def pause(self, seconds: float) -> None:
        """Wait in-process (a short retry back-off); a virtual clock just moves on."""
        sleep = getattr(self.clock, "sleep", None)
        if sleep is not None:
            sleep(seconds)
        else:
            time.sleep(seconds)

    async def pause_async(self, seconds: float) -> None:
        sleep = getattr(self.clock, "sleep", None)
        if sleep is not None:
            sleep(seconds)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)

    # recording
    def record(self, event_type: str, **fields: Any) -> Event:
        """Stage one event (durable at the next flush) and fold it into the history."""
        at = wall_iso() if self.wall else iso(self.clock())
        event = self.session.stage({"type": event_type, "seq": 0, "at": at, **fields})
        self.history.add(event)
        self.unsynced.add(event_type)
        if self.traced:
            self.trace.recorded(event)
        return event

    def record_encoded(self, event_type: str, fields: dict[str, Any], tail: str) -> Event:
        """`record`, for an event whose `fields` the caller JSON-encoded, in their order, as a line
        holds them (`tail`: `,"pos":3,...`; see `_journal.encoded_line`): a step's start and result,
        the most frequent lines, skip `json.dumps`."""
        at = wall_iso() if self.wall else iso(self.clock())
        event = self.session.stage_encoded({"type": event_type, "seq": 0, "at": at, **fields},
                                           f',"at":"{at}"{tail}')
        self.history.add(event)
        self.unsynced.add(event_type)
        if self.traced:
            self.trace.recorded(event)
        return event

    def settle_children(self) -> None:
        """Journal the children this run started that are not yet journaled, once each is created
        and driven to its first suspension (`children.Starting.settle`): before any line of this
        run is stored, and before it waits on a child or ends."""
        if self.children is not None and self.children.pending:
            self.children.settle(self)

    def flush(self, terminal: bool = False) -> None:
        """Make staged events durable; the first flush of a live run marks it for recovery first.
        (Events recorded since the last flush are pending: the session is asked only otherwise.)"""
        if not self.unsynced and not self.session.has_pending:
            return
        if not terminal and not self.marked:
            self.store.set_due(self.run_id, self.clock())
            self.marked = True
        self._store(self.session.flush)
        self.unsynced.clear()

    def write(self) -> None:
        """Store staged events before control returns to the workflow (a step's outcome): they
        survive a crash of this process at once and become durable with the next flush."""
        self._store(self.session.write)

    def _store(self, action: Callable[[], None]) -> None:
        if self.children is not None and self.children.pending:  # (settle_children, inlined: twice a step)
            self.children.settle(self)  # no line of this run is stored while a child it started is being made
        try:
            action()
        except (OSError, StoreError) as exc:
            self.storage_lost(exc)

    def storage_lost(self, error: OSError | StoreError) -> NoReturn:
        """Unwind the workflow: a fact could not be stored; the drive re-raises `error` and the run,
        not failed, stays recoverable; user code cannot catch the unwinding."""
        self.closing = True
        self.storage_failure = StorageFailure(error)
        raise self.storage_failure from error

    # positions and determinism
    def begin(self, kind: str, name: str) -> tuple[int, Op | None]:
        """Take the next position for a call of `kind`/`name`; check it against the journal."""
        if self.closing:
            raise Suspend()
        self.position += 1
        pos = self.position
        op = self.history.ops.get(pos)
        if op is not None and (op.kind != kind or op.name != name):
            self.abort(divergence(pos, describe(op.kind, op.name), describe(kind, name)))
        return pos, op

    def abort(self, error: BaseException) -> None:
        """Stop the workflow for good with `error`; user code cannot catch the unwinding."""
        self.fatal = error
        self.closing = True
        raise Suspend()

    def halt(self, error: EngineError) -> NoReturn:
        """Stop the workflow for an error of the engine: the run is not failed, the drive reports
        `error` and the run stays recoverable; user code cannot catch the unwinding."""
        self.engine_error = error
        self.closing = True
        raise Suspend()

    def check_finished(self) -> None:
        """At the workflow's return: the journal must not hold calls the workflow no longer makes."""
        extra = [pos for pos in self.history.ops if pos > self.position]
        if extra:
            op = self.history.ops[min(extra)]
            journal = describe(op.kind, op.name)
            self.abort(divergence(op.pos, journal, "the workflow to return", (
                f"workflow is not deterministic: at position {op.pos} the journal holds {journal} "
                "but the workflow returned")))
