"""Firing cron schedules from a tick: each instant exactly once, however many ticks overlap.

A schedule's state in the store remembers when a tick first saw it (earlier instants never fire,
as with cron) and the last tick that handled it; the run id of an instant is derived from the
schedule's name and the instant's local wall time, and runs are created exclusively.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from ._config import Config, Schedule
from .errors import DurableError, RunBusy, RunExists
from ._store import Store
from ._timeparse import iso, parse_instant

if TYPE_CHECKING:
    from ._engine.run import Options


def _state(store: Store, schedule: Schedule, now: datetime) -> dict[str, Any]:
    state = store.schedule_state(schedule.name)
    if state is None:
        state = {"first_seen": iso(now), "last_tick": iso(now), "last_fired": None}
        store.save_schedule_state(schedule.name, state)
    return state


def fire_schedules(store: Store, config: Config, clock: Callable[[], datetime], options: Options,
                   errors: list[dict[str, str]]) -> int:
    """Start the runs of every schedule instant due at `clock()`; returns how many were created."""
    from ._engine.lifecycle import create_run
    from ._loader import resolve
    from ._cron import due_instants, run_id_for
    from ._queues import flow_request

    now = clock()
    fired = 0
    base = os.path.dirname(config.path) if config.path else None
    for schedule in config.schedules:
        state = _state(store, schedule, now)
        last_tick = parse_instant(state["last_tick"])
        handled = now
        for instant in due_instants(schedule, parse_instant(state["first_seen"]), last_tick, now):
            run_id = run_id_for(schedule.name, instant, schedule)
            try:
                definition = resolve(schedule.workflow, base, options.import_paths)
                flow = flow_request(config.queues, schedule.queue, schedule.key)
                create_run(store, definition, tuple(schedule.args), dict(schedule.kwargs), run_id,
                           clock, options, {"schedule": {"name": schedule.name, "instant": iso(instant)}},
                           existing_ok=False, flow=flow)
                fired += 1
            except (RunExists, RunBusy):
                pass
            except DurableError as exc:
                errors.append({"run_id": run_id, "error": f"schedule {schedule.name!r}: {exc}"})
                handled = min(handled, instant - timedelta(microseconds=1))
                continue
            state["last_fired"] = iso(instant)
        if handled > last_tick:
            state["last_tick"] = iso(handled)
            store.save_schedule_state(schedule.name, state)
    return fired


def describe_schedules(store: Store, config: Config, now: datetime) -> list[dict[str, Any]]:
    """Each schedule with its cron, time zone, workflow, last and next fire time."""
    from ._cron import next_instant

    rows = []
    for schedule in config.schedules:
        state = store.schedule_state(schedule.name) or {}
        rows.append({
            "name": schedule.name, "cron": schedule.cron, "timezone": schedule.timezone,
            "workflow": schedule.workflow, "catch_up": schedule.catch_up,
            "last_fire": state.get("last_fired"), "next_fire": iso(next_instant(schedule, now)),
        })
    return rows
