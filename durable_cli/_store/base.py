"""The storage contract: every store (files, PostgreSQL) provides exactly this, and nothing more.

A store keeps, per run, an append-only journal of events; beside it a due index (when a run next
needs a tick), hook tokens (which run holds a token), an inbox (payloads and wake-ups addressed to
a run) and output streams. Only the journal is the truth; the rest can be rebuilt from it.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .._status import ended
from .._status import FINAL_EVENTS
from .._errors_core import DurableError, JournalEmpty, RunNotFound

if TYPE_CHECKING:
    from .._queues import QueueLimits
    from .stats import Tally

Event = dict[str, Any]
StateChange = Callable[[dict[str, Any] | None], dict[str, Any]]
"""What `update_schedule_state` makes of a saved state (None when there is none)."""


def state_of(data: str | bytes | None) -> dict[str, Any] | None:
    """The JSON object a schedule state was saved as; None when there is none (or another value)."""
    import json

    try:
        state = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


class RunQuery:
    """Which runs a listing wants: newest first by (created_at, run_id), each filter optional.

    `before` is the (created_at, run_id) of the last row of the previous page (the cursor);
    `hidden` includes runs that continued as new (only the newest of a chain shows otherwise).
    A plain class, not a dataclass: dataclasses stays off `durable tick`'s start.
    """

    def __init__(self, workflow: str | None = None, tags: dict[str, str] | None = None,
                 since: str | None = None, until: str | None = None,
                 before: tuple[str, str] | None = None, limit: int = 50, hidden: bool = False) -> None:
        self.workflow = workflow
        self.tags: dict[str, str] = {} if tags is None else tags
        self.since = since
        self.until = until
        self.before = before
        self.limit = limit
        self.hidden = hidden

    def __repr__(self) -> str:
        return f"RunQuery({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunQuery) and vars(self) == vars(other)

    def admits(self, run_id: str, entry: dict[str, Any]) -> bool:
        """Whether an index entry (see `index_entry`) passes every filter."""
        created = str(entry.get("created_at", ""))
        if self.workflow is not None and entry.get("workflow") != self.workflow:
            return False
        tags = entry.get("tags") or {}
        if any(tags.get(key) != value for key, value in self.tags.items()):
            return False
        if (self.since is not None and created < self.since) or (self.until is not None and created > self.until):
            return False
        if self.before is not None and (created, run_id) >= self.before:
            return False
        return self.hidden or not entry.get("hidden")


def index_entry(events: list[Event]) -> dict[str, Any]:
    """A run's entry in the listing index, from its journal: when it was created, its workflow's
    name, its tags (`run_started`, then each `tags_set`) and whether it continued as new."""
    first = events[0]
    tags = dict(first.get("tags") or {})
    for event in events:
        if event["type"] == "tags_set":
            tags.update(event["tags"])
    return {"created_at": str(first.get("at", "")), "workflow": first.get("name", ""), "tags": tags,
            "hidden": events[-1]["type"] == "run_continued"}

_RUN_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}"


@functools.cache
def _run_id_pattern() -> re.Pattern[str]:
    """`_RUN_ID` compiled at first use, not at every start (and kept: `re`'s own cache costs a
    lookup of the pattern text at every call)."""
    return re.compile(_RUN_ID)


def check_run_id(run_id: str) -> str:
    """`run_id` if it is a safe name (letters, digits, `_.:-`, at most 200); else a DurableError.

    The one check of run ids: every store method taking a run id and every door (the CLI, the
    client, `durable serve`) passes it through here, so a run id is safe as a file name anywhere."""
    if not isinstance(run_id, str) or not _run_id_pattern().fullmatch(run_id) or ".." in run_id:
        raise DurableError(
            f"invalid run id {run_id!r}: use 1-200 letters, digits, '_', '.', ':' or '-'"
        )
    return run_id


def is_run_id(name: str) -> bool:
    """Whether `name` passes `check_run_id` (a directory entry that can be a run's)."""
    try:
        check_run_id(name)
    except DurableError:
        return False
    return True


def check_stream_name(name: str) -> str:
    """`name` if it can name an output stream in every store: 1-100 characters of valid Unicode,
    none of them a control character; else a DurableError naming it."""
    problem = None
    if not isinstance(name, str) or not 0 < len(name) <= 100:
        problem = "use 1-100 characters"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "control characters are not allowed"
    else:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            problem = "it is not valid Unicode (a lone surrogate)"
    if problem:
        raise DurableError(f"invalid stream name {name!r}: {problem}")
    return name


def post_unless_ended(store: Store, run_id: str, message: dict[str, Any]) -> str | None:
    """`store.post` unless the run has ended or does not exist (None): `post_live`'s rule, for a
    store that holds the run's inbox gate around it."""
    try:
        _, last = store.run_summary(run_id)
    except RunNotFound:
        return None
    return None if ended(last) else store.post(run_id, message)


def empty_journal(run_id: str, where: str) -> JournalEmpty:
    """The error for a run whose journal holds no event (reported by ticks, `damaged` in `ls`)."""
    return JournalEmpty(
        f"journal empty: {where}: its creator died before run_started was durable, or it was cut "
        f"to nothing; run `durable run --id {run_id} ...` again, or remove the run"
    )


class RunSession(ABC):
    """A run held by this process: its journal as read under the claim, and appends to it."""

    run_id: str
    events: list[Event]

    @abstractmethod
    def stage(self, event: Event) -> Event:
        """Give `event` the next seq and buffer it; nothing is durable until `flush`."""

    def stage_encoded(self, event: Event, tail: str) -> Event:
        """`stage`, for an event whose fields after its type and seq the caller JSON-encoded as a
        line holds them (`tail`: see `_journal.encoded_line`); a store that writes lines uses it."""
        return self.stage(event)

    @abstractmethod
    def flush(self) -> None:
        """Make every staged (or written) event durable, in order, or raise and keep none of the
        staged ones."""

    def write(self) -> None:
        """Store every staged event so that it survives the death of this process (not yet a power
        loss or a crash of the storage host); the next `flush` makes it durable. A store that
        cannot tell the two apart flushes."""
        self.flush()

    @property
    @abstractmethod
    def has_pending(self) -> bool:
        """Whether events are staged or written but not yet flushed."""

    @abstractmethod
    def stream_append(self, name: str, chunks: list[Event]) -> list[int]:
        """`Store.stream_append` for this run, fenced like `flush`: a holder that lost the run
        writes nothing (StoreError)."""

    @abstractmethod
    def close(self) -> None:
        """Release the run (flushing nothing): another process may now execute it."""


class Store(ABC):
    """One place where runs live; the engine and the CLI see storage only through this."""

    location: str

    # runs and journals
    @abstractmethod
    def create_run(self, run_id: str) -> RunSession | None:
        """Claim a new run id exclusively; None when the id is taken by a run that has events."""

    @abstractmethod
    def open_run(self, run_id: str, wait: bool = False,
                 due_by: datetime | None = None) -> RunSession | None:
        """Claim an existing run (None when another process holds it and `wait` is false).

        `due_by` is given by a tick driving the run's due entry: a store may then also return None
        when the run has no entry due by then (another worker drove it since the tick listed it:
        nothing is due), sparing that worker the claim of a finished run."""

    @abstractmethod
    def read_events(self, run_id: str) -> list[Event]:
        """The run's journal without claiming it (a torn tail is left out); RunNotFound if none."""

    @abstractmethod
    def export_lines(self, run_id: str) -> list[bytes]:
        """The run's journal as stored: JSONL lines (CRC included), each ending in a newline."""

    def skim_journal(self, run_id: str, where: str) -> tuple[list[Event], list[bytes]]:
        """`_journal.skim` of the run's journal, errors naming `where`: for readers that show a few
        events of a long one (`durable inspect`). The file store checks its lines once, not twice."""
        from .. import _journal as journal

        return journal.skim(b"".join(self.export_lines(run_id)), where, run_id)

    @abstractmethod
    def run_ids(self) -> list[str]:
        """Every run id in the store, in no particular order."""

    def run_ids_after(self, after: str, limit: int) -> list[str]:
        """The first `limit` run ids after `after` in the store's order of ids (a slice of a pass
        over the store, such as retention's; "" starts the pass): stores with an ordered index
        read only the slice."""
        import heapq

        return heapq.nsmallest(limit, (run_id for run_id in self.run_ids() if run_id > after))

    def run_stamps(self) -> dict[str, object] | None:
        """Every run id with a token that changes whenever its `run_summary` may have, in one cheap
        pass, so a listing kept between calls re-reads only the runs whose token changed
        (`_inspection.RunRows`); None where the store has no such token (each listing reads all)."""
        return None

    def run_summary(self, run_id: str) -> tuple[Event, Event]:
        """The first and the last event of a run (stores may read less than the whole journal)."""
        events = self.read_events(run_id)
        return events[0], events[-1]

    def journal_location(self, run_id: str) -> str:
        """Where the run's journal lives, for people (`inspect` shows it)."""
        return self.location

    def identity(self) -> object:
        """What this store's data is, as the place that keeps it says (None: its location says
        all), so that two locations naming one store are seen as one (`migrate` refuses that)."""
        return None

    @abstractmethod
    def delete_run(self, run_id: str) -> None:
        """Remove a finished run and everything kept for it (prune)."""

    # the listing index (`durable ls --tag/--workflow/--since/--limit`)
    def index_run(self, run_id: str, entry: dict[str, Any]) -> None:
        """Record (replace) the run's listing entry (`index_entry`). The engine writes it before
        the facts it reflects are durable, so the index may name more than the journals hold:
        readers check each run they list against its journal. A store without an index reads the
        journals (`search_runs` below)."""

    def search_runs(self, query: RunQuery) -> list[tuple[str, str]]:
        """(created_at, run id) of up to `query.limit` runs whose index entry passes `query`,
        newest first."""
        found = []
        for run_id in self.run_ids():
            try:
                entry = index_entry(self.read_events(run_id))
            except (DurableError, OSError):
                continue
            if query.admits(run_id, entry):
                found.append((entry["created_at"], run_id))
        found.sort(reverse=True)
        return found[:query.limit]

    # the due index
    @abstractmethod
    def set_due(self, run_id: str, at: datetime | None) -> None:
        """Index the run as due at `at` (None: not due). A run has one entry at most: this one
        replaces whatever was set before, whoever set it."""

    @abstractmethod
    def due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        """(due time, run id) of entries due at `now`, earliest first; touches nothing later."""

    def adopt_due(self, entries: list[tuple[datetime, str]]) -> None:
        """Count `entries` as listed by this store's `due`: another store listed them (a forked tick
        worker's parent's) and they are driven through this one, so what `set_due` replaces goes as
        it would had this store listed them (a stale entry too). A no-op where `due` keeps nothing."""

    cancel_poll_seconds = 0.0
    """How long the executor of a run may go on trusting its last look at the run's cancel request
    (0: it looks before every step; a store where a look is a network round trip sets a bound)."""

    claims_due = False
    """Whether `claim_due` hands out due runs (else a tick walks the list `due` gives)."""

    def claim_due(self, now: datetime, after: tuple[datetime, str] | None,
                  more: bool = False) -> tuple[datetime, str] | None:
        """Claim the first run, in (due time, run id) order after `after`, whose entry is due at
        `now` and that nobody holds; its (due time, id), its claim handed to the next `open_run`
        of it in this store. None when none is left. Workers that take runs this way never visit
        a run another holds or has driven (only stores with `claims_due`): every claim of a tick's
        pass names the same `now`, and a run handed out at `now` that its drive leaves unfinished
        (suspended or failed) is due again only after it. `more`: the caller will ask for the run
        after this one, which the store may then claim ahead."""
        return None

    # queues (flow control): per queue, the runs it started that have not left it, and those waiting
    @abstractmethod
    def queue_enter(self, limits: QueueLimits, run_id: str, key: str | None, priority: int,
                    now: datetime) -> bool:
        """Atomically, whoever else enters or admits at once: count the run as started and return
        True if the queue has room for it at `now` (concurrency, per key, rate, and nobody waiting
        ahead of it); else add it to the queue's waiting runs and return False. A run already counted
        as started returns True (it holds its slot: a creation taken over from a dead creator)."""

    @abstractmethod
    def queue_admit(self, limits: QueueLimits, now: datetime) -> list[str]:
        """Atomically start as many waiting runs as the limits allow at `now`, lowest priority
        number first, then first come (a run whose key is full is passed over); each is made due
        at `now` before it counts as started, so a crash never strands one. Their ids, in order.
        A full queue is answered without reading its waiting runs, and a full key's waiting runs
        are not read at every admission: the cost grows with the runs that may start, not with
        those held back."""

    @abstractmethod
    def queue_admitted(self, queue: str, run_id: str) -> bool:
        """Whether the queue counts the run as started."""

    @abstractmethod
    def queue_leave(self, queue: str, run_id: str, key: str | None, started: bool) -> None:
        """Forget the run in the queue: a started run frees its slot (its start, once counted in
        the rate window, stays counted); with `started` false, a waiting one also stops waiting
        (`key` is then the key it entered with: a store may file waiting runs by key)."""

    @abstractmethod
    def queue_started(self, queue: str) -> list[str]:
        """The runs the queue counts as started, in no particular order."""

    @abstractmethod
    def queue_waiting(self, queue: str) -> bool:
        """Whether any run waits in the queue (reading no further than the first)."""

    @abstractmethod
    def queue_stats(self, limits: QueueLimits, now: datetime) -> dict[str, Any]:
        """`in_flight`, `queued`, `oldest` (when the longest-waiting run was enqueued, wall clock, or
        None) and `rate_free_at` (when the rate window next has room, if it is full now)."""

    # hook tokens
    @abstractmethod
    def claim_token(self, token: str, run_id: str) -> str | None:
        """Record that `run_id` holds `token`; returns the other run holding it, if any."""

    @abstractmethod
    def token_owner(self, token: str) -> str | None:
        """The run recorded as holding `token`, or None."""

    @abstractmethod
    def release_token(self, token: str, run_id: str) -> None:
        """Forget `token` if `run_id` holds it."""

    # the inbox
    @abstractmethod
    def post(self, run_id: str, message: dict[str, Any]) -> str:
        """Durably leave a message for a run (a hook payload, a child's outcome); returns its id."""

    @abstractmethod
    def post_live(self, run_id: str, message: dict[str, Any]) -> str | None:
        """`post`, unless the run has ended (its journal ends in a final event, or it has none):
        then None, and nothing is written. It never lands inside a `closing` of the run."""

    @abstractmethod
    def closing(self, run_id: str) -> AbstractContextManager[None]:
        """Hold `post_live` back for the run while its holder delivers what waits and journals its
        final event: every message `post_live` acknowledged is then in the journal, never rejected."""

    @abstractmethod
    def messages(self, run_id: str) -> list[tuple[str, dict[str, Any] | str]]:
        """(id, message) for each message waiting for the run, oldest first; a str is why it is bad."""

    @abstractmethod
    def ack(self, run_id: str, message_id: str) -> None:
        """Drop a message once its content is durable in the run's journal."""

    @abstractmethod
    def reject(self, run_id: str, message_id: str, reason: str) -> None:
        """Set an undeliverable message aside with its reason."""

    @abstractmethod
    def inbox_run_ids(self) -> list[str]:
        """Runs that have messages waiting."""

    @abstractmethod
    def request_cancel(self, run_id: str) -> None:
        """Ask whoever executes the run to cancel it before its next step."""

    @abstractmethod
    def cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel request is waiting for the run (checked before every step)."""

    def cancel_probe(self, run_id: str) -> Callable[[], bool]:
        """`cancel_requested` of one run as a call without arguments, for its executor to make
        before every step (a store may make it cheaper than the general call)."""
        return functools.partial(self.cancel_requested, check_run_id(run_id))

    @abstractmethod
    def clear_cancel(self, run_id: str) -> None:
        """Drop the run's cancel request, if any, once its end (or its retry) is journaled."""

    # problems (why a tick could not drive a run), shown by `ls` and `inspect`
    @abstractmethod
    def note_problem(self, run_id: str, reason: str) -> None:
        """Record why the last tick could not drive the run (replacing what was recorded)."""

    @abstractmethod
    def clear_problem(self, run_id: str) -> None:
        """Forget the run's problem once a tick drove it."""

    @abstractmethod
    def problems(self) -> dict[str, str]:
        """Run id -> the problem recorded for it, for every run that has one."""

    # output streams
    @abstractmethod
    def stream_append(self, run_id: str, name: str, chunks: list[Event]) -> list[int]:
        """Durably append chunks to a run's named output stream; returns the indexes they got.

        Indexes are unique and increasing per stream (0, 1, 2, ...), whoever writes at once;
        each chunk is read back with its `index`.
        """

    @abstractmethod
    def stream_read(self, run_id: str, name: str, start: int = 0) -> list[Event]:
        """Chunks of a run's named stream whose index is `start` or more, in index order."""

    @abstractmethod
    def stream_names(self, run_id: str) -> list[str]:
        """Names of the streams a run has written to."""

    # waking workers
    @abstractmethod
    def wait_for_work(self, timeout: float) -> bool:
        """Block up to `timeout` seconds until a message may be waiting; True if one arrived."""

    # schedule bookkeeping (which instants a tick has already considered)
    @abstractmethod
    def schedule_state(self, name: str) -> dict[str, Any] | None:
        """What ticks recorded for the named schedule, or None before any tick saw it."""

    @abstractmethod
    def save_schedule_state(self, name: str, state: dict[str, Any]) -> None:
        """Durably replace the named schedule's state (a JSON object)."""

    @abstractmethod
    def update_schedule_state(self, name: str, change: StateChange) -> dict[str, Any]:
        """Durably save what `change` makes of the named state (None before any save) and return
        it, with no other update of that name between the read and the write (overlapping ticks
        merge their records). Nothing is written when it returns the state unchanged. `change` may
        be called again with a newer state, so it must only compute; a process killed within
        holds up no later update."""

    # figures for `durable stats`
    def journal_stats(self, since: datetime | None) -> dict[str, Tally]:
        """Per workflow name: runs per status, step attempts, failures and durations, queue waits
        (the rules are in stats.py). This reads every journal's lines; stores compute it closer to
        the data. A journal that cannot be read is left out (`ls` and `inspect` report it)."""
        from .stats import scan

        tallies: dict[str, Tally] = {}
        for run_id in self.run_ids():
            try:
                scan(self.export_lines(run_id), since, tallies)
            except (DurableError, OSError):
                continue
        return tallies

    def close(self) -> None:
        """Release connections or handles the store keeps."""
