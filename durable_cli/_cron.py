"""Cron instants of a schedule: when it fires, what a tick must fire, and each instant's run id.

Pure functions: the time is always an argument. Cron fields are matched against local wall
times in the schedule's zone (croniter on naive datetimes), and each wall time is then mapped
to one instant by our own daylight-saving rules, not croniter's:

- a wall time that occurs twice (fall back) fires once, at its first occurrence;
- a wall time that does not exist (spring forward) fires at the first valid local time after
  the gap (02:30 on a Europe/Berlin spring-forward night fires at 03:00 local, 01:00 UTC);
  when that is also an instant of its own (an hourly 03:00), the two fire once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from durable_cli._config import Schedule

_MINUTE = timedelta(minutes=1)


def next_instant(schedule: Schedule, after: datetime) -> datetime:
    """The first instant the schedule fires strictly after `after` (aware), in UTC."""
    zone = ZoneInfo(schedule.timezone)
    walls = _walls(schedule.cron, _local(after, zone).replace(tzinfo=None))
    while True:
        instant = _fire_instant(walls.get_next(datetime), zone)
        if instant > after:
            return instant


def due_instants(
    schedule: Schedule,
    first_seen: datetime,
    last_fired: datetime | None,
    now: datetime,
    cap: int = 100,
) -> list[datetime]:
    """The instants a tick at `now` must fire, oldest first, in UTC.

    Candidates lie in (max(first_seen, last_fired), now]: as in cron, nothing at or before the
    first tick that saw the schedule ever fires. `catch_up` picks among them: "latest" the most
    recent; "all" every one, but at most the `cap` most recent (older ones are dropped, so a
    long outage cannot flood the store); "none" the candidate only when it is the only one, and
    nothing when ticks were missed. For "none" to skip missed instants for good, pass as
    `last_fired` the later of the last fired instant and the last tick that handled the
    schedule: otherwise the missed instants stay candidates at every later tick.
    """
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    wanted = {"latest": 1, "all": cap, "none": 2}.get(schedule.catch_up)
    if wanted is None:
        raise ValueError(f"schedule {schedule.name!r}: unknown catch_up {schedule.catch_up!r}")
    since = first_seen if last_fired is None else max(first_seen, last_fired)
    found: list[datetime] = []
    for instant in _instants_through(schedule, now):
        if instant <= since or len(found) == wanted:
            break
        found.append(instant)
    if schedule.catch_up == "none" and len(found) > 1:
        return []
    return found[::-1]


def instant_key(schedule: Schedule, instant: datetime) -> str:
    """The instant's local wall time as YYYYMMDDTHHMM: both occurrences of a repeated time share it."""
    return _local(instant, ZoneInfo(schedule.timezone)).strftime("%Y%m%dT%H%M")


def run_id_for(schedule_name: str, instant: datetime, schedule: Schedule) -> str:
    """The run id of one firing; the engine creates it exclusively, so each instant fires once."""
    return f"sched-{schedule_name}-{instant_key(schedule, instant)}"


def _instants_through(schedule: Schedule, now: datetime) -> Iterator[datetime]:
    """The schedule's instants at or before `now`, most recent first, each once."""
    zone = ZoneInfo(schedule.timezone)
    local = _local(now, zone)
    # In the second occurrence of a repeated hour, wall times later than `now`'s own still
    # fired (at their first occurrence, before `now`): start the search past the whole repeat.
    repeat = timedelta(seconds=local.timestamp() - local.replace(fold=0).timestamp())
    start = local.replace(tzinfo=None, second=0, microsecond=0) + repeat + _MINUTE
    walls = _walls(schedule.cron, start)
    previous: datetime | None = None
    while True:
        instant = _fire_instant(walls.get_prev(datetime), zone)
        if instant <= now and (previous is None or instant < previous):
            previous = instant
            yield instant


def _walls(cron: str, start: datetime) -> Any:
    """A croniter over the local wall times matching `cron`, positioned at the naive `start`."""
    from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

    return croniter(cron, start)


def _fire_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the naive local `wall` fires: its first occurrence, or the gap's end."""
    while True:
        instant = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            return instant
        wall += _MINUTE


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    """`moment` in `zone`; naive datetimes are refused, since their zone would be a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is required, got {moment!r}")
    return moment.astimezone(zone)
