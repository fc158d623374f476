"""Cron instants: strictly-after, first_seen, catch-up policies, the cap, and both DST nights."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from durable_cli._config import Schedule
from durable_cli._cron import due_instants, instant_key, next_instant, run_id_for

UTC = timezone.utc
BERLIN = "Europe/Berlin"


def schedule(cron: str, zone: str = "UTC", catch_up: str = "latest") -> Schedule:
    return Schedule(name="job", cron=cron, timezone=zone, workflow="jobs:job", catch_up=catch_up)


def utc(day: str, hhmm: str) -> datetime:
    """A UTC instant from "2026-03-29" and "01:30"."""
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00")


def firings(sched: Schedule, after: datetime, count: int) -> list[tuple[str, str]]:
    """The next `count` instants as (UTC "MM-DD HH:MM", instant key)."""
    result = []
    for _ in range(count):
        after = next_instant(sched, after)
        result.append((after.strftime("%m-%d %H:%M"), instant_key(sched, after)))
    return result


# next_instant


def test_next_instant_is_strictly_after_the_given_time() -> None:
    hourly = schedule("0 * * * *")
    assert next_instant(hourly, utc("2026-05-01", "10:00")) == utc("2026-05-01", "11:00")
    assert next_instant(hourly, utc("2026-05-01", "09:59")) == utc("2026-05-01", "10:00")


def test_next_instant_is_utc_whatever_zone_it_was_given() -> None:
    after = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))
    instant = next_instant(schedule("30 * * * *"), after)
    assert instant.tzinfo is UTC
    assert instant == utc("2026-05-01", "07:30")


def test_cron_fields_are_read_in_the_schedule_time_zone() -> None:
    nine_in_berlin = schedule("0 9 * * *", BERLIN)
    assert next_instant(nine_in_berlin, utc("2026-01-15", "00:00")) == utc("2026-01-15", "08:00")
    assert next_instant(nine_in_berlin, utc("2026-07-15", "00:00")) == utc("2026-07-15", "07:00")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_instant(schedule("* * * * *"), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        due_instants(schedule("* * * * *"), utc("2026-01-01", "00:00"), None, datetime(2026, 1, 1, 1))


# Daylight-saving time, Europe/Berlin: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00


def test_hourly_on_the_spring_forward_night_fires_the_missing_hour_once_at_0300() -> None:
    assert firings(schedule("0 * * * *", BERLIN), utc("2026-03-28", "23:30"), 4) == [
        ("03-29 00:00", "20260329T0100"),
        ("03-29 01:00", "20260329T0300"),
        ("03-29 02:00", "20260329T0400"),
        ("03-29 03:00", "20260329T0500"),
    ]


def test_0230_on_the_spring_forward_night_fires_at_0300_local() -> None:
    assert firings(schedule("30 2 * * *", BERLIN), utc("2026-03-28", "00:00"), 3) == [
        ("03-28 01:30", "20260328T0230"),
        ("03-29 01:00", "20260329T0300"),
        ("03-30 00:30", "20260330T0230"),
    ]


def test_hourly_on_the_fall_back_night_fires_the_repeated_hour_once() -> None:
    assert firings(schedule("0 * * * *", BERLIN), utc("2026-10-24", "22:30"), 4) == [
        ("10-24 23:00", "20261025T0100"),
        ("10-25 00:00", "20261025T0200"),
        ("10-25 02:00", "20261025T0300"),
        ("10-25 03:00", "20261025T0400"),
    ]


def test_0230_on_the_fall_back_night_fires_once_at_its_first_occurrence() -> None:
    assert firings(schedule("30 2 * * *", BERLIN), utc("2026-10-24", "12:00"), 2) == [
        ("10-25 00:30", "20261025T0230"),
        ("10-26 01:30", "20261026T0230"),
    ]


def test_from_inside_the_repeated_hour_the_next_instant_is_after_it() -> None:
    second_0210 = utc("2026-10-25", "01:10")
    assert next_instant(schedule("*/30 * * * *", BERLIN), second_0210) == utc("2026-10-25", "02:00")


def test_both_occurrences_of_a_repeated_wall_time_share_one_key_and_run_id() -> None:
    sched = schedule("30 2 * * *", BERLIN)
    first, second = utc("2026-10-25", "00:30"), utc("2026-10-25", "01:30")
    assert instant_key(sched, first) == instant_key(sched, second) == "20261025T0230"
    assert run_id_for("nightly", first, sched) == "sched-nightly-20261025T0230"
    assert run_id_for("nightly", second, sched) == "sched-nightly-20261025T0230"


def test_a_tick_inside_the_repeated_hour_has_already_fired_its_first_occurrences() -> None:
    every_half_hour = schedule("*/30 * * * *", BERLIN, catch_up="all")
    due = due_instants(every_half_hour, utc("2026-10-24", "22:00"), None, utc("2026-10-25", "01:45"))
    assert due == [utc("2026-10-24", "22:30"), utc("2026-10-24", "23:00"), utc("2026-10-24", "23:30"),
                   utc("2026-10-25", "00:00"), utc("2026-10-25", "00:30")]
    after_repeat = due_instants(every_half_hour, utc("2026-10-25", "00:30"), None, utc("2026-10-25", "02:05"))
    assert after_repeat == [utc("2026-10-25", "02:00")]


def test_a_tick_early_in_the_repeated_hour_sees_the_later_first_occurrences_as_past() -> None:
    quarterly = schedule("*/15 * * * *", BERLIN, catch_up="latest")
    second_0210 = utc("2026-10-25", "01:10")
    assert due_instants(quarterly, utc("2026-10-24", "23:50"), utc("2026-10-25", "00:30"), second_0210) == [
        utc("2026-10-25", "00:45")
    ]


def test_catching_up_across_the_spring_forward_night_fires_each_instant_once() -> None:
    hourly = schedule("0 * * * *", BERLIN, catch_up="all")
    due = due_instants(hourly, utc("2026-03-28", "22:30"), None, utc("2026-03-29", "02:30"))
    assert due == [utc("2026-03-28", "23:00"), utc("2026-03-29", "00:00"),
                   utc("2026-03-29", "01:00"), utc("2026-03-29", "02:00")]
    nightly = schedule("30 2 * * *", BERLIN, catch_up="all")
    assert due_instants(nightly, utc("2026-03-28", "12:00"), None, utc("2026-03-29", "12:00")) == [
        utc("2026-03-29", "01:00")
    ]


def test_catching_up_across_the_fall_back_night_fires_0230_once() -> None:
    nightly = schedule("30 2 * * *", BERLIN, catch_up="all")
    assert due_instants(nightly, utc("2026-10-24", "12:00"), None, utc("2026-10-25", "12:00")) == [
        utc("2026-10-25", "00:30")
    ]


# due_instants: first_seen, last_fired and catch-up


def test_instants_at_or_before_first_seen_never_fire() -> None:
    hourly = schedule("0 * * * *", catch_up="all")
    assert due_instants(hourly, utc("2026-05-01", "10:00"), None, utc("2026-05-01", "10:30")) == []
    assert due_instants(hourly, utc("2026-05-01", "10:00"), None, utc("2026-05-01", "11:00")) == [
        utc("2026-05-01", "11:00")
    ]


def test_an_instant_exactly_at_the_tick_is_due() -> None:
    hourly = schedule("0 * * * *")
    assert due_instants(hourly, utc("2026-05-01", "09:30"), None, utc("2026-05-01", "10:00")) == [
        utc("2026-05-01", "10:00")
    ]


def test_instants_at_or_before_the_last_fired_one_do_not_fire_again() -> None:
    hourly = schedule("0 * * * *", catch_up="all")
    first_seen, last_fired = utc("2026-05-01", "07:30"), utc("2026-05-01", "10:00")
    assert due_instants(hourly, first_seen, last_fired, utc("2026-05-01", "10:59")) == []
    assert due_instants(hourly, first_seen, last_fired, utc("2026-05-01", "12:00")) == [
        utc("2026-05-01", "11:00"), utc("2026-05-01", "12:00")
    ]


def test_latest_fires_only_the_most_recent_missed_instant() -> None:
    hourly = schedule("0 * * * *", catch_up="latest")
    due = due_instants(hourly, utc("2026-05-01", "07:30"), utc("2026-05-01", "08:00"), utc("2026-05-01", "12:15"))
    assert due == [utc("2026-05-01", "12:00")]


def test_all_fires_every_missed_instant_oldest_first() -> None:
    hourly = schedule("0 * * * *", catch_up="all")
    due = due_instants(hourly, utc("2026-05-01", "07:30"), utc("2026-05-01", "08:00"), utc("2026-05-01", "12:15"))
    assert due == [utc("2026-05-01", f"{hour:02d}:00") for hour in (9, 10, 11, 12)]


def test_all_keeps_only_the_most_recent_cap_instants() -> None:
    every_minute = schedule("* * * * *", catch_up="all")
    due = due_instants(every_minute, utc("2026-05-01", "00:00"), None, utc("2026-05-01", "10:00"), cap=3)
    assert due == [utc("2026-05-01", "09:58"), utc("2026-05-01", "09:59"), utc("2026-05-01", "10:00")]
    assert len(due_instants(every_minute, utc("2026-05-01", "00:00"), None, utc("2026-05-01", "10:00"))) == 100


def test_none_fires_the_one_instant_that_fell_due_since_the_last_tick() -> None:
    hourly = schedule("0 * * * *", catch_up="none")
    due = due_instants(hourly, utc("2026-05-01", "07:30"), utc("2026-05-01", "10:00"), utc("2026-05-01", "11:05"))
    assert due == [utc("2026-05-01", "11:00")]


def test_none_fires_nothing_when_ticks_were_missed() -> None:
    hourly = schedule("0 * * * *", catch_up="none")
    due = due_instants(hourly, utc("2026-05-01", "07:30"), utc("2026-05-01", "08:00"), utc("2026-05-01", "11:05"))
    assert due == []


def test_none_fires_again_once_the_skipped_instants_are_behind_last_fired() -> None:
    hourly = schedule("0 * * * *", catch_up="none")
    last_tick = utc("2026-05-01", "11:05")
    assert due_instants(hourly, utc("2026-05-01", "07:30"), last_tick, utc("2026-05-01", "12:01")) == [
        utc("2026-05-01", "12:00")
    ]


def test_latest_after_years_of_downtime_does_not_walk_the_backlog() -> None:
    every_minute = schedule("* * * * *", catch_up="latest")
    due = due_instants(every_minute, utc("2016-01-01", "00:00"), None, utc("2026-05-01", "10:00"))
    assert due == [utc("2026-05-01", "10:00")]


def test_nothing_is_due_before_the_first_instant() -> None:
    daily = schedule("0 3 * * *", catch_up="all")
    assert due_instants(daily, utc("2026-05-01", "04:00"), None, utc("2026-05-02", "02:59")) == []


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="cap"):
        due_instants(schedule("* * * * *", catch_up="all"), utc("2026-05-01", "00:00"), None,
                     utc("2026-05-01", "01:00"), cap=0)


def test_an_unknown_catch_up_is_refused() -> None:
    with pytest.raises(ValueError, match="catch_up 'some'"):
        due_instants(schedule("* * * * *", catch_up="some"), utc("2026-05-01", "00:00"), None,
                     utc("2026-05-01", "01:00"))


# Keys and run ids


def test_instant_key_is_the_local_wall_time_to_the_minute() -> None:
    assert instant_key(schedule("0 9 * * *", BERLIN), utc("2026-07-15", "07:00")) == "20260715T0900"
    assert instant_key(schedule("0 9 * * *"), utc("2026-07-15", "07:00")) == "20260715T0700"


def test_run_id_names_the_schedule_and_the_instant() -> None:
    sched = schedule("30 2 * * *", BERLIN)
    assert run_id_for("nightly", utc("2026-03-29", "01:00"), sched) == "sched-nightly-20260329T0300"
