"""Durations and instants as `sleep()`, `retry_delay` and `tick --now` accept them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from durable_cli import _timeparse
from durable_cli._timeparse import iso, parse_duration, parse_instant, utcnow, wall_iso


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("7 days", 7 * 86400),
        ("1h30m", 5400),
        ("90s", 90),
        ("500ms", 0.5),
        ("1 hour", 3600),
        ("2 weeks", 14 * 86400),
        ("1d 2h", 93600),
        ("1.5h", 5400),
        ("  10 minutes ", 600),
        ("30", 30),
        ("0s", 0),
    ],
)
def test_text_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value, seconds", [(5, 5.0), (2.5, 2.5), (0, 0.0), (timedelta(minutes=2), 120.0)])
def test_numbers_and_timedeltas_are_seconds(value, seconds):
    assert parse_duration(value) == seconds


class _CaselessText(str):
    """Text of a str subclass that defines __eq__, and so, as Python makes it, has no hash."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.lower() == other.lower()


def test_a_duration_given_as_a_str_subclass_without_a_hash_is_parsed_as_its_text():
    assert _CaselessText.__hash__ is None
    assert parse_duration(_CaselessText("1H30m")) == 5400.0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(_CaselessText("soon"))


@pytest.mark.parametrize(
    "value",
    ["", "   ", "soon", "7 fortnights", "1h30", "h", "-5s", -1, timedelta(seconds=-1), True,
     None, [1], float("nan"), "5 s s", float("inf"), "inf", "1e300", 1e300, "36501 days"],
)
def test_bad_durations_are_value_errors(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_a_bad_duration_message_shows_the_accepted_forms():
    with pytest.raises(ValueError, match="7 days"):
        parse_duration("soon")


def test_iso_instants_with_z_offset_or_none_are_aware_utc():
    expected = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert parse_instant("2030-01-02T03:04:05Z") == expected
    assert parse_instant("2030-01-02T04:04:05+01:00") == expected
    assert parse_instant("2030-01-02T03:04:05") == expected


def test_a_bad_instant_is_a_value_error():
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_instant("next tuesday")


def test_iso_writes_utc_with_microseconds_and_z():
    value = datetime(2030, 1, 2, 4, 4, 5, 7, tzinfo=timezone(timedelta(hours=1)))
    assert iso(value) == "2030-01-02T03:04:05.000007Z"
    assert parse_instant(iso(value)) == value


def test_wall_iso_is_iso_of_the_wall_clocks_instant_whatever_the_second_formatted_before(monkeypatch):
    """`wall_iso`, the `at` of every line of a run under the wall clock, reads the clock as
    nanoseconds since the epoch: its text is `iso` of that instant, microseconds rounded down as
    `datetime.now` rounds them, in a second it formatted before and across the edges of seconds."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    base = datetime(2030, 12, 31, 23, 59, 58, 999_999, tzinfo=timezone.utc)
    instants = [base + timedelta(microseconds=step) for step in (0, 1, 2, 500_000, 1_000_000, 1_000_001, -1)]
    instants += [datetime(2001, 9, 9, 1, 46, 40, tzinfo=timezone.utc), datetime(2999, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)]
    for value in instants + instants[::-1]:
        micros = (value - epoch) // timedelta(microseconds=1)
        for extra_ns in (0, 999):  # nanoseconds below the microsecond are dropped
            monkeypatch.setattr(_timeparse.time, "time_ns", lambda: micros * 1000 + extra_ns)
            assert wall_iso() == iso(value), (value, extra_ns)
    monkeypatch.undo()
    before = iso(utcnow())
    now = wall_iso()
    assert before <= now <= iso(utcnow())  # the real clock: the same one `utcnow` reads


def test_iso_is_strftime_of_the_utc_instant_whatever_the_second_formatted_before():
    """`iso` keeps the text of the second it formatted last: instants in it, across its edges,
    in other zones and at the ends of the calendar still get their own text."""
    from zoneinfo import ZoneInfo

    def expected(value: datetime) -> str:
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    base = datetime(2030, 12, 31, 23, 59, 58, 999_999, tzinfo=timezone.utc)
    values = [base + timedelta(microseconds=step) for step in (0, 1, 2, 500_000, 1_000_000, 1_000_001, -1)]
    values += [v.astimezone(ZoneInfo("Asia/Kolkata")) for v in values]
    values += [datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc),
               datetime.min.replace(tzinfo=timezone.utc), datetime(2030, 1, 1, tzinfo=timezone(timedelta(0)))]
    for value in values + values[::-1]:
        assert iso(value) == expected(value), value
