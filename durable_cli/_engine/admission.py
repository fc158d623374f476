"""A tick's admission: start what each queue has room for, and take back slots that runs which
finished never gave back. Kept apart from the rest of flow control (`flow.py`) so that a tick over
full queues imports no more of the engine than it needs: only what can start is touched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from .._queues import QueueLimits
from .._store.base import Store


def admit(store: Store, queues: dict[str, QueueLimits], now: datetime,
          failed: Callable[[str, Exception], None]) -> int:
    """Start what each queue has room for (the admitted runs are due now: the tick drives them);
    how many were admitted. A queue whose admission fails (a full disk as it parks runs) is handed
    to `failed` and the other queues go on: its runs keep waiting for the next tick."""
    count = 0
    for limits in queues.values():
        try:
            count += _admit(store, limits, now)
        except Exception as exc:
            failed(limits.name, exc)
    return count


def _admit(store: Store, limits: QueueLimits, now: datetime) -> int:
    """Admit what one queue has room for. A queue full by concurrency, or one whose waiting runs a
    key may hold back, first gives back the slots of runs that finished (or vanished) without giving
    them back, as a crash between the two leaves them (a dead slot would block its key for good)."""
    admitted = store.queue_admit(limits, now)
    if not admitted and (limits.concurrency is not None or limits.per_key is not None):
        started = store.queue_started(limits.name)
        full = limits.concurrency is not None and len(started) >= limits.concurrency
        keyed = (limits.per_key is not None and len(started) >= limits.per_key
                 and store.queue_waiting(limits.name))
        if (full or keyed) and _free_leaked(store, limits.name, started, now):
            admitted = store.queue_admit(limits, now)
    return len(admitted)


def _free_leaked(store: Store, queue: str, started: list[str], now: datetime) -> bool:
    """Give back the slots of started runs that have finished or are gone; whether any was (their
    keys are not read: the store finds each slot by run id). A started run that never started and
    is not due is made due: a file store of an older version could leave one so (its drive found
    it due just before its admission counted it, then put it back to wait), and nothing else
    would ever start it."""
    from ..errors import DurableError, JournalEmpty, RunNotFound
    from .._status import TERMINAL

    freed = False
    stranded: list[str] = []
    for run_id in started:
        try:
            last = store.run_summary(run_id)[1]["type"]
            gone = last in TERMINAL
            if last == "run_queued":
                stranded.append(run_id)
        except RunNotFound:
            gone = True
        except JournalEmpty:
            gone = _dead_creation(store, run_id)
        except (DurableError, OSError):
            continue
        if gone:
            store.queue_leave(queue, run_id, None, True)
            freed = True
    if stranded:
        due = {run_id for _, run_id in store.due(now)}
        for run_id in stranded:
            if run_id not in due:
                store.set_due(run_id, now)
    return freed


def _dead_creation(store: Store, run_id: str) -> bool:
    """Whether a run with an empty journal was left so by a dead creator (not one creating it now)."""
    from ..errors import JournalEmpty, RunNotFound

    try:
        session = store.open_run(run_id)
    except (JournalEmpty, RunNotFound):
        return True
    if session is not None:
        session.close()
    return False
