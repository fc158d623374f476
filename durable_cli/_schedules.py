"""Firing cron schedules from a tick: each instant exactly once, however many ticks overlap.

A schedule's state in the store remembers when a tick first saw it (earlier instants never fire,
as with cron) and the last tick that handled it; the run id of an instant is derived from the
schedule's name and the instant's local wall time, and runs are created exclusively.

Operators steer a schedule through a second record, `<name>:control` (a name no schedule can
have), which only `pause`/`resume` write and ticks only read: a tick saving its own state can never
undo a pause, and the pause lives in the store, so it survives restarts. While paused, no instant
fires; after `resume`, instants from the pause are skipped (`backfill` fires them if wanted).
`trigger` starts one run now with an id of its own; `backfill` starts the runs of past instants
with the ids a tick would give them, so each instant fires once whichever comes first.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from ._config import Config, Schedule
from .errors import ConfigError, DurableError, RunBusy, RunExists
from ._store import Store
from ._timeparse import iso, parse_instant

if TYPE_CHECKING:
    from ._engine.run import Options, Run


def _state(store: Store, schedule: Schedule, now: datetime) -> dict[str, Any]:
    """The schedule's saved state; the first tick to see it saves one (an overlapping tick that
    saved first keeps its record)."""
    state = store.schedule_state(schedule.name)
    if state is None:
        first = {"first_seen": iso(now), "last_tick": iso(now), "last_fired": None}
        state = store.update_schedule_state(schedule.name, lambda saved: saved or first)
    return state


def fire_schedules(store: Store, config: Config, clock: Callable[[], datetime], options: Options,
                   errors: list[dict[str, str]]) -> int:
    """Start the runs of every schedule instant due at `clock()`; returns how many were created."""
    from ._engine.lifecycle import abandoned, create_run
    from ._loader import resolve
    from ._cron import due_instants, run_id_for
    from ._queues import flow_request
    from ._reasons import problem

    now = clock()
    fired = 0
    base = os.path.dirname(config.path) if config.path else None
    for schedule in config.schedules:
        try:
            control = store.schedule_state(control_name(schedule.name)) or {}
            state = _state(store, schedule, now)
        except (DurableError, OSError) as exc:  # its state unreadable: the others fire all the same
            errors.append({"run_id": "", "error": f"schedule {schedule.name!r}: {problem(exc)}"})
            continue
        if control.get("paused"):
            continue
        last_tick = parse_instant(state["last_tick"])
        if control.get("resumed_at") and parse_instant(control["resumed_at"]) > last_tick:
            last_tick = parse_instant(control["resumed_at"])  # instants of the pause never fire
        handled = now
        for instant in due_instants(schedule, parse_instant(state["first_seen"]), last_tick, now):
            run_id = run_id_for(schedule.name, instant, schedule)
            if paused(store, schedule.name):
                handled = min(handled, instant - timedelta(microseconds=1))
                break  # paused while this tick fired: what is left waits for `resume`
            if _handled_elsewhere(store, schedule, instant):  # an overlapping tick fired it (its run
                state["last_fired"] = iso(instant)  # may be pruned already: not again), as RunExists below
                continue
            try:
                definition = resolve(schedule.workflow, base, options.import_paths)
                flow = flow_request(config.queues, schedule.queue, schedule.key)
                create_run(store, definition, tuple(schedule.args), dict(schedule.kwargs), run_id,
                           clock, options, {"schedule": {"name": schedule.name, "instant": iso(instant)}},
                           existing_ok=False, flow=flow)
                fired += 1
            except (RunExists, RunBusy):
                pass
            except (DurableError, OSError) as exc:  # a full disk too: reported, the next tick retries
                errors.append({"run_id": run_id, "error": f"schedule {schedule.name!r}: {problem(exc)}"})
                handled = min(handled, instant - timedelta(microseconds=1))
                continue
            except BaseException as exc:  # the app's own, out of its first drive: the run exists
                reason = abandoned(exc)
                if reason is None:
                    raise
                errors.append({"run_id": run_id, "error": f"schedule {schedule.name!r}: {reason}"})
                fired += 1
            state["last_fired"] = iso(instant)
        if handled > last_tick:
            try:
                _record_handled(store, schedule.name, state, handled)
            except (DurableError, OSError) as exc:  # not recorded: the next tick fires nothing twice
                errors.append({"run_id": "", "error": f"schedule {schedule.name!r}: {problem(exc)}"})
    return fired


def _record_handled(store: Store, name: str, state: dict[str, Any], handled: datetime) -> None:
    """Save `handled` as the schedule's last tick, merged with what overlapping ticks saved since
    this one read the state (the later last tick and last fire of each): the record never moves
    back, since prune trusts it (`unrecorded_fire`)."""
    ours = {**state, "last_tick": iso(handled)}

    def merge(saved: dict[str, Any] | None) -> dict[str, Any]:
        if saved is None:
            return ours
        return {**saved, "last_tick": _later(saved.get("last_tick"), ours["last_tick"]),
                "last_fired": _later(saved.get("last_fired"), ours.get("last_fired"))}

    store.update_schedule_state(name, merge)


def _later(saved: str | None, ours: str | None) -> str | None:
    """The later of two saved instants (either may be missing); the saved one when they are equal."""
    if not saved or not ours:
        return saved or ours
    return saved if parse_instant(saved) >= parse_instant(ours) else ours


def unrecorded_fire(store: Store, start: dict[str, Any]) -> bool:
    """Whether `start` (a run_started event) began a schedule instant's run, with the id a tick
    gives it, that the schedule's saved state does not yet record as handled. Until it does (a
    tick killed between firing and saving, or still firing older instants), that run is the only
    sign the instant fired: prune must keep it, or the next tick would fire the instant again."""
    fire = start.get("schedule")
    if not isinstance(fire, dict) or str(start.get("run_id")).startswith(f"sched-{fire.get('name')}-trigger-"):
        return False  # not a schedule's, or a trigger's (its own id: a tick never makes it)
    state = store.schedule_state(str(fire.get("name")))
    if state is None:
        return False  # no tick has seen the schedule: the first one fires nothing before it
    return not state.get("last_tick") or parse_instant(state["last_tick"]) < parse_instant(str(fire.get("instant")))


def _handled_elsewhere(store: Store, schedule: Schedule, instant: datetime) -> bool:
    """Whether another tick has recorded `instant` as handled since this one read the state: it
    saves that before its retention runs, which may prune the instant's run at once."""
    latest = store.schedule_state(schedule.name) or {}
    return bool(latest.get("last_tick")) and parse_instant(latest["last_tick"]) >= instant


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
            "paused": paused(store, schedule.name),
        })
    return rows


def control_name(name: str) -> str:
    """The store record `pause`/`resume` write for schedule `name` (':' is in no schedule name)."""
    return f"{name}:control"


def paused(store: Store, name: str) -> bool:
    return bool((store.schedule_state(control_name(name)) or {}).get("paused"))


def find(config: Config, name: str) -> Schedule:
    """The schedule named `name` in durable.yaml; a ConfigError naming the ones there are."""
    for schedule in config.schedules:
        if schedule.name == name:
            return schedule
    known = ", ".join(s.name for s in config.schedules) or "none"
    raise ConfigError(f"no schedule {name!r} in durable.yaml (schedules: {known})")


def set_paused(store: Store, config: Config, name: str, pause: bool, now: datetime) -> dict[str, Any]:
    """Pause or resume a schedule (idempotent); returns its control record."""
    find(config, name)
    control = store.schedule_state(control_name(name)) or {}
    if bool(control.get("paused")) != pause:
        control = {"paused": True, "paused_at": iso(now)} if pause else {"paused": False, "resumed_at": iso(now)}
        store.save_schedule_state(control_name(name), control)
    return control


def _start(store: Store, config: Config, schedule: Schedule, run_id: str, instant: datetime,
           clock: Callable[[], datetime], options: Options) -> Run:
    from ._engine.lifecycle import create_run
    from ._loader import resolve
    from ._queues import flow_request

    base = os.path.dirname(config.path) if config.path else None
    definition = resolve(schedule.workflow, base, options.import_paths)
    flow = flow_request(config.queues, schedule.queue, schedule.key)  # as a tick's firing
    return create_run(store, definition, tuple(schedule.args), dict(schedule.kwargs), run_id, clock,
                      options, {"schedule": {"name": schedule.name, "instant": iso(instant)}},
                      existing_ok=False, flow=flow)


def trigger(store: Store, config: Config, name: str, clock: Callable[[], datetime], options: Options) -> Run:
    """Start one run of the schedule now, with an id of its own (`sched-NAME-trigger-TIME`),
    paused or not; its `scheduled_at` is now. Returns the run."""
    schedule = find(config, name)
    now = clock()
    return _start(store, config, schedule, f"sched-{name}-trigger-{now:%Y%m%dT%H%M%S%f}", now, clock, options)


MAX_BACKFILL = 10_000


def backfill(store: Store, config: Config, name: str, start: datetime, end: datetime,
             clock: Callable[[], datetime], options: Options) -> list[dict[str, Any]]:
    """Start the run of every instant of the schedule in [start, end] that has none yet, oldest
    first, with the id a tick gives it (so a tick and a backfill never both fire one instant).
    Returns one row per instant: run_id, instant and `started` or `exists`."""
    from ._cron import next_instant, run_id_for

    schedule = find(config, name)
    if end < start:
        raise DurableError("backfill: --to is before --from")
    if end > clock():
        raise DurableError("backfill: --to is in the future (a tick fires future instants when they come)")
    instants: list[datetime] = []
    instant = next_instant(schedule, start - timedelta(microseconds=1))
    while instant <= end:
        if len(instants) == MAX_BACKFILL:
            raise DurableError(f"backfill: more than {MAX_BACKFILL} instants; give a shorter range")
        instants.append(instant)
        instant = next_instant(schedule, instant)
    rows: list[dict[str, Any]] = []
    for instant in instants:
        run_id = run_id_for(name, instant, schedule)
        try:
            _start(store, config, schedule, run_id, instant, clock, options)
            outcome = "started"
        except (RunExists, RunBusy):
            outcome = "exists"
        rows.append({"run_id": run_id, "instant": iso(instant), "outcome": outcome})
    return rows
