"""Tick passes repeated until a stop: the one loop of `durable tick --loop` and `durable serve --tick`.

A pass that fails as a whole (its store down or unreadable for a while) does not end the loop: it
is reported in one sentence, the pause doubles from the interval (at least a second, up to a minute
or the interval if longer), and the next pass opens the store afresh; passes go on as usual once
the store is back. Twin loops drifted apart (serve's retried at its interval, on its old store).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from ._reasons import problem
from ._tick import must_exit

BACKOFF_CAP_S = 60.0  # the longest pause after failed passes, unless the interval is longer


class Stop(Protocol):
    """A stop flag (a threading.Event, or one shared with forked workers)."""

    def is_set(self) -> bool: ...


def repeat(store: Any, open_store: Callable[[], Any], one_pass: Callable[[Any], None], pause: float,
           stop: Stop, failed_pass: Callable[[str, float], None], between: Callable[[], None] = lambda: None
           ) -> None:
    """`one_pass(store)` every `pause` seconds until `stop` is set (or a hung step's code must end
    the process: `must_exit`). `store` is the one opened already (None: the first pass opens it).
    A pass that raises is handed to `failed_pass(sentence, wait)` ("tick pass failed: <why>; next
    pass in <wait>s"); `between` runs before each later pass (reread durable.yaml). The store is
    closed on the way out."""
    failed = 0  # passes failed in a row
    try:
        while True:
            wait = pause
            try:
                store = open_store() if store is None else store
                one_pass(store)
                failed = 0
            except Exception as exc:  # the loop outlives a failed pass
                failed += 1
                wait = backoff(pause, failed)
                failed_pass(f"tick pass failed: {problem(exc)}", wait)
                _close_quietly(store)
                store = None  # the next pass opens it afresh
            if must_exit() or idle(store, wait, stop):
                return
            between()
    finally:
        if store is not None:
            store.close()


def backoff(pause: float, failed: int) -> float:
    """The pause after `failed` passes failed in a row: the interval (at least a second), doubled
    at each failure up to a minute (or the interval, if longer)."""
    return min(max(pause, 1.0) * 2.0 ** min(failed - 1, 20), max(pause, BACKOFF_CAP_S))


def idle(store: Any, pause: float, stop: Stop) -> bool:
    """Wait for the next pass: `pause` seconds, less when a message arrives; True on a stop.
    Without a store, or with one that fails to wait (its server gone), it sleeps: the next pass
    says what is wrong."""
    deadline = time.monotonic() + pause
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if store is not None:
            try:
                if store.wait_for_work(min(left, 0.25)):
                    return False
                continue
            except Exception:
                store = None
        time.sleep(min(left, 0.25))
    return True


def _close_quietly(store: Any) -> None:
    """Close a store a pass failed on, whatever that raises (its connection may be gone already)."""
    if store is not None:
        try:
            store.close()
        except Exception:
            pass
