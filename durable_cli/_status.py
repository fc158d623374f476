"""A run's statuses and the journal events that end a run: the one list every layer uses.

It sits below the journal and the stores (it imports nothing of the package), so the store's inbox
gate, the engine's history, `ls`/`inspect`, `durable serve` and the typed `Run.status` all read
the same names.
"""

from __future__ import annotations

from typing import Literal, get_args

RunStatus = Literal["queued", "running", "sleeping", "waiting", "blocked", "completed", "failed",
                    "cancelled", "timed_out", "migrated", "continued"]

# What `ls` and the dashboard can show: a run's status, or why its journal could not be read.
LISTED_STATUSES: tuple[str, ...] = (*get_args(RunStatus), "damaged", "unreadable")

# The events that end a run (at this store), with the status each leaves.
TERMINAL: dict[str, RunStatus] = {"run_completed": "completed", "run_failed": "failed",
                                  "run_cancelled": "cancelled", "run_migrated": "migrated",
                                  "run_continued": "continued", "run_timed_out": "timed_out"}
FINISHED: frozenset[RunStatus] = frozenset(TERMINAL.values())

# The events after which a run takes no message: nothing is journaled after one (but `run_retried`
# after a failure or a cancellation, and `run_forked`, which says so with `ended: true`). A
# migrated run still does: its messages are forwarded to its new store.
FINAL_EVENTS = frozenset(TERMINAL) - {"run_migrated"}


def ended(last: dict[str, object]) -> bool:
    """Whether a journal whose last event is `last` belongs to a run that takes no message."""
    return last.get("type") in FINAL_EVENTS or last.get("ended") is True
