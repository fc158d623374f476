"""One tick: deliver inbox messages, fire due schedules, resume due runs, recover abandoned ones.

A tick touches only due work (the inbox, the due index, schedules) and is idempotent: runs are
claimed one at a time without waiting, so overlapping ticks split the work and never execute the
same run twice. The engine is imported only when there is something to do.
"""

from __future__ import annotations

import functools
import sys
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ._errors_core import RunBusy, RunNotFound
from ._reasons import one_line, problem
from ._store import Store
from ._timeparse import utcnow

if TYPE_CHECKING:
    from ._config import Config
    from ._engine.run import Options

Clock = Callable[[], datetime]
Log = Callable[..., None]
"""`log(level, event, message, run_id=..., workflow=...)`: one structured log record (--log-format json)."""


class TickSummary:
    """What one tick did; `errors` lists runs it could not drive, with the reason. `failed` counts
    every run that ended without completing; `cancelled` and `timed_out` count those among them."""

    FIELDS = ("delivered", "resumed", "fired", "busy", "completed", "failed", "suspended", "blocked",
              "pruned", "admitted", "cancelled", "timed_out")

    def __init__(self) -> None:
        self.delivered = self.resumed = self.fired = self.busy = self.pruned = self.admitted = 0
        self.completed = self.failed = self.suspended = self.blocked = self.cancelled = self.timed_out = 0
        self.errors: list[dict[str, str]] = []
        self.problems: dict[str, str] = {}  # recorded before this pass (cleared when driven)
        self.log: Log | None = None  # each run's outcome and error as a structured record

    def add(self, other: TickSummary) -> None:
        """Sum another pass into this one (`tick --loop`)."""
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors

    def to_json(self) -> dict[str, Any]:
        """The counts and errors as `durable tick --json` prints them."""
        return {**{name: getattr(self, name) for name in self.FIELDS}, "errors": list(self.errors)}


def clock_from(now: datetime | None) -> Clock:
    """The wall clock, or one that starts at `now` and advances with real time (`tick --now`)."""
    if now is None:
        return utcnow
    origin = time.monotonic()
    return lambda: now + timedelta(seconds=time.monotonic() - origin)


def _report(store: Store, summary: TickSummary, run_id: str, exc: BaseException | str) -> None:
    """Name the run and why it could not be driven (an error, or a sentence) in the summary, and
    record it in the store for `ls` and `inspect` (if even that fails, the summary still says it)."""
    reason = one_line(exc) if isinstance(exc, str) else problem(exc)
    summary.errors.append({"run_id": run_id, "error": reason})
    if summary.log is not None:
        summary.log("error", "run_error", f"run {run_id}: {reason}", run_id=run_id)
    try:
        store.note_problem(run_id, reason)
    except Exception:
        pass


def _queue_failed(summary: TickSummary, queue: str, exc: Exception) -> None:
    """Name the queue whose admission failed and why (its runs wait for the next tick), once a
    tick: a tick admits again after the runs it finished, and may fail the same way."""
    error = {"run_id": "", "error": f"queue {queue!r}: {problem(exc)}"}
    if error not in summary.errors:
        summary.errors.append(error)


def _drive(store: Store, run_id: str, clock: Clock, summary: TickSummary, options: Callable[[], Options],
           due_at: datetime | None = None) -> None:
    try:
        run = _lifecycle().drive(store, run_id, clock, options(), due_at=due_at)
    except RunBusy:
        summary.busy += 1
        return
    except RunNotFound:
        if due_at is not None:
            try:
                store.set_due(run_id, None)  # a stale entry of a pruned run
            except Exception as exc:  # (one that cannot be removed stops no other run)
                _report(store, summary, run_id, exc)
        return
    except Exception as exc:
        _report(store, summary, run_id, exc)
        return
    except BaseException as exc:  # the app's own (a stand-in for a crash): that run alone stops
        reason = _lifecycle().abandoned(exc)
        if reason is None:
            raise
        _report(store, summary, run_id, reason)
        return
    if run_id in summary.problems:
        store.clear_problem(run_id)
    if not run.executed:
        return
    if summary.log is not None:
        _log_outcome(summary.log, run)
    summary.resumed += 1
    if run.status == "completed":
        summary.completed += 1
    elif run.status in ("failed", "cancelled", "timed_out"):
        summary.failed += 1
        summary.cancelled += run.status == "cancelled"
        summary.timed_out += run.status == "timed_out"
    elif run.status == "blocked":
        summary.blocked += 1  # replay diverged: it waits for `durable retry` (see `durable ls`)
    else:
        summary.suspended += 1


@functools.cache
def _lifecycle() -> Any:
    """The engine's lifecycle module, imported at the first run driven (an idle tick imports no
    engine), then kept."""
    from ._engine import lifecycle

    return lifecycle


def _log_outcome(log: Log, run: Any) -> None:
    """A structured record of how a drive left the run: completed, failed, cancelled or suspended."""
    ended = run.status in ("completed", "failed", "cancelled", "timed_out")
    message = f"run {run.run_id} {run.status}"
    if run.status == "failed" and run.error:
        message += f": {run.error.get('type')}: {run.error.get('message')}"
    elif run.wake_at:
        message += f" until {run.wake_at}"
    log("warning" if run.status == "failed" else "info", f"run_{run.status}" if ended else "run_suspended",
        message, run_id=run.run_id, workflow=run.workflow)


def _deliver_inbox(store: Store, clock: Clock, summary: TickSummary, options: Callable[[], Options],
                   stop: Callable[[], bool] | None) -> None:
    for run_id in store.inbox_run_ids():
        from ._status import TERMINAL

        if stop is not None and stop():
            return
        try:
            messages = store.messages(run_id)
            finished = store.run_summary(run_id)[1]["type"] in TERMINAL
        except RunNotFound:
            finished = True
        except Exception as exc:
            _report(store, summary, run_id, exc)
            continue
        if finished:
            for message_id, _ in messages:
                store.reject(run_id, message_id, f"run {run_id} does not exist or has finished")
            continue
        summary.delivered += len(messages)
        _drive(store, run_id, clock, summary, options)


def tick_once(store: Store, clock: Clock, options: Callable[[], Options], config: Config | None = None,
              show: Callable[[list[tuple[datetime, str]]], Iterable[tuple[datetime, str]]] | None = None,
              stop: Callable[[], bool] | None = None, workers: int = 1,
              reopen: Callable[[], Store] | None = None, log: Log | None = None,
              summary: TickSummary | None = None) -> TickSummary:
    """One pass over due work in `store` at the time `clock` gives.

    `config` and `options` come from the entry point (loaded once there); `options` is called the
    first time a run is driven, so an idle tick imports no engine. `stop` is asked before each
    run: once it says so, the pass ends after the run in hand. With `workers` > 1, due runs are
    shared with forked processes, each on its own `reopen()` store. A caller that passes
    `summary` still has what the pass did and the runs it reported when the pass fails midway.
    """
    began = time.perf_counter()
    summary = TickSummary() if summary is None else summary
    summary.problems = store.problems()
    summary.log = log
    cache: list[Options] = []

    def lazy_options() -> Options:
        if not cache:
            cache.append(options())
        return cache[0]

    _deliver_inbox(store, clock, summary, lazy_options, stop)
    if config is not None and config.schedules:
        from ._schedules import fire_schedules

        reported = len(summary.errors)
        summary.fired += fire_schedules(store, config, clock, lazy_options(), summary.errors)
        for error in summary.errors[reported:]:  # logged as _report logs a run's
            if log is not None:
                log("error", "run_error", f"run {error['run_id']}: {error['error']}", run_id=error["run_id"])
    queues = config.queues if config is not None else {}
    due = 0
    while True:
        if queues:
            from ._engine.admission import admit

            summary.admitted += admit(store, queues, clock(), functools.partial(_queue_failed, summary))
        finished = summary.completed + summary.failed
        due += _due_pass(store, clock, summary, lazy_options, show, stop, workers, reopen)
        # runs that finished gave their queue slots back: start what now has room, in this tick
        if not queues or summary.completed + summary.failed == finished or (stop is not None and stop()):
            break
    if config is not None and config.retention and not (stop is not None and stop()):
        from ._retention import apply_retention

        try:
            summary.pruned += len(apply_retention(store, config.retention, clock()))
        except Exception as exc:
            summary.errors.append({"run_id": "", "error": f"retention: {problem(exc)}"})
    telemetry = _telemetry(cache, config)
    if telemetry is not None:
        telemetry.tick_ended(time.perf_counter() - began, due)
    return summary


def _due_pass(store: Store, clock: Clock, summary: TickSummary, lazy_options: Callable[[], Any],
              show: Callable[[list[tuple[datetime, str]]], Iterable[tuple[datetime, str]]] | None,
              stop: Callable[[], bool] | None, workers: int, reopen: Callable[[], Store] | None) -> int:
    """Drive every run due now, shared with forked workers when there are enough of them; how many
    were due. Where a worker cannot be forked (a container's process limit), this process drives
    the shares of the workers it could not start. Every claim of the pass names the `now` it listed
    at: a run it drove and left due is due again only after that (`Store.claim_due`), so no worker
    takes a run another already drove in this pass."""
    now = clock()
    due = list(store.due(now))
    share = workers if workers > 1 and reopen is not None and len(due) >= 2 * workers else 1
    children: list[tuple[int, int]] = []
    if share > 1:
        assert reopen is not None
        lazy_options()  # once, before forking: the workers inherit it
        _lifecycle()  # imported once here, not once per worker
        for k in range(1, share):
            try:
                children.append(_fork_worker(due[k::share], reopen, clock, now, lazy_options, stop,
                                             summary.problems, summary.log))
            except OSError as exc:
                if summary.log is not None:
                    summary.log("warning", "tick_workers", f"tick: {share - k} of {share - 1} workers not started "
                                f"({exc.strerror or exc}); their runs are driven by the tick itself")
                break
    cursor: tuple[datetime, str] | None = None
    driven: set[str] = set()
    try:
        for index, (due_at, run_id) in enumerate(show(due) if show is not None else due):
            if 0 < index % share <= len(children):
                continue  # a forked worker's share (it still moves the progress bar along)
            if stop is not None and stop():
                break
            if store.claims_due:  # the next run nobody holds instead of this one (Store.claim_due)
                cursor = store.claim_due(now, cursor, more=index + share < len(due))
                if cursor is None:
                    if share == 1:  # listed runs left due that it did not drive: held elsewhere
                        listed = {listed_id for _, listed_id in due} - driven
                        summary.busy += len(listed & {left_id for _, left_id in store.due(now)})
                    break
                due_at, run_id = cursor
                driven.add(run_id)
            _drive(store, run_id, clock, summary, lazy_options, due_at)
    finally:  # even when this process's share failed (its store lost): no worker outlives the tick
        for child in children:
            summary.add(_join_worker(*child))
    return len(due)


def _telemetry(options: list[Any], config: Any) -> Any:
    """The tick's telemetry: that of its drive options, else the one durable.yaml or OTEL_* ask for;
    None when neither asks and this process never set telemetry up (an idle `durable tick` then
    imports nothing more)."""
    import os

    if options:
        return options[0].telemetry
    flag = getattr(config, "otel", None)
    if flag is None and f"{__package__}._telemetry" not in sys.modules and not any(
            name.startswith("OTEL_") for name in os.environ):
        return None
    from ._telemetry import telemetry_for

    return telemetry_for(flag)


def _fork_worker(due: list[tuple[datetime, str]], reopen: Callable[[], Store], clock: Clock, now: datetime,
                 options: Callable[[], Options], stop: Callable[[], bool] | None,
                 problems: dict[str, str], log: Log | None = None) -> tuple[int, int]:
    """Drive a share of the due runs in a forked process (its own store connection); (pid, pipe)."""
    import json
    import os

    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        raise
    if pid:
        os.close(write)
        return pid, read
    os.close(read)
    summary = TickSummary()
    summary.problems = problems
    summary.log = log
    try:
        store = reopen()
        try:
            store.adopt_due(due)  # the parent listed them: stale entries of runs driven here go too
            cursor: tuple[datetime, str] | None = None
            for index, (due_at, run_id) in enumerate(due):
                if stop is not None and stop():
                    break
                if store.claims_due:  # as many runs as its share, whichever nobody holds
                    cursor = store.claim_due(now, cursor, more=index + 1 < len(due))
                    if cursor is None:
                        break
                    due_at, run_id = cursor
                _drive(store, run_id, clock, summary, options, due_at)
        finally:
            store.close()
    except Exception as exc:
        summary.errors.append({"run_id": "", "error": f"tick worker: {exc}"})
    finally:
        try:
            from ._telemetry import flush

            flush()  # os._exit skips the exporters' own flush at exit
            with os.fdopen(write, "w") as out:
                out.write(json.dumps(summary.to_json()))
        finally:  # even when the report fails (the tick is gone): never return into the tick's code
            os._exit(0)


def _join_worker(pid: int, read: int) -> TickSummary:
    """The summary a forked worker reported (its failure, if it died without reporting)."""
    import json
    import os

    with os.fdopen(read) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    summary = TickSummary()
    try:
        reported = json.loads(data)
    except ValueError:
        summary.errors.append({"run_id": "", "error": f"tick worker {pid} died (status {status})"})
        return summary
    for name in TickSummary.FIELDS:
        setattr(summary, name, reported[name])
    summary.errors = reported["errors"]
    return summary


def must_exit() -> bool:
    """True (with a sentence on stderr) when a timed-out sync step may still be running in this
    process: a looping command then stops after its pass, so that the step's code stops with it."""
    from ._engine.steps import held_runs

    runs = held_runs()
    if runs:
        print(f"a timed-out step may still be running in run(s) {', '.join(runs)}: exiting so that "
              "it stops; the next tick takes the run(s) up again", file=sys.stderr, flush=True)
    return bool(runs)
