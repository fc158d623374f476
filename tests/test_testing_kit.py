"""Issue 6, part 1: `durable_cli.testing`, a virtual clock that tests a 7-day workflow in milliseconds.

The workflows below live in this module; the kit's ticks import them again from here, the way a
user's test module would be used.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from importlib.metadata import entry_points

from durable_cli import (define_hook, get_workflow_metadata, set_event, sleep, start_child, step, workflow,
                         workflow_now)
from durable_cli.testing import DurableTestEnv

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
CALLS: list[str] = []
feedback = define_hook("feedback")


@step
def publish(doc: str) -> str:
    CALLS.append("publish " + doc)
    return "published " + doc


@step
def remind(doc: str) -> str:
    CALLS.append("remind " + doc)
    return "reminded " + doc


@workflow
def week_long(doc: str) -> list[str]:
    first = publish(doc)
    sleep("7 days")
    return [first, remind(doc)]


@workflow
def clocked() -> list[str]:
    started = get_workflow_metadata().started_at
    sleep("7 days")
    return [started.isoformat(), workflow_now().isoformat()]


FLAKY: dict[str, int] = {}


@step
def flaky(name: str) -> int:
    FLAKY[name] = FLAKY.get(name, 0) + 1
    if FLAKY[name] < 3:
        raise ConnectionError(f"attempt {FLAKY[name]} failed")
    return FLAKY[name]


@step(retry_delay="1h")
def slow_flaky(name: str) -> int:
    return flaky.fn(name)


@workflow
def fetch(name: str) -> int:
    return flaky(name)


@workflow
def slow_fetch(name: str) -> int:
    return slow_flaky(name)


@workflow
def collect(token: str) -> list[object]:
    return list(feedback.create(token=token, timeout="3 days"))


@workflow
def child_week(item: str) -> str:
    sleep("7 days")
    return item.upper()


@workflow
async def family(items: list[str]) -> list[str]:
    kids = [start_child(child_week, item) for item in items]
    return list(await asyncio.gather(*(kid.result() for kid in kids)))


@workflow
async def async_approval(token: str) -> object:
    events = feedback.create(token=token, timeout="1 day")
    payload = await events.next()
    return payload if payload is not None else "expired"


def test_durable_env_fixture_is_installed_as_a_pytest_plugin(durable_env):
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("durable_cli") == "durable_cli.testing"
    assert isinstance(durable_env, DurableTestEnv)
    assert durable_env.now == START


def test_a_seven_day_workflow_is_tested_in_milliseconds(durable_env):
    began = time.perf_counter()
    run = durable_env.start(week_long, "doc-1")
    assert run.status == "sleeping"
    durable_env.advance("6 days")
    assert durable_env.get_run(run.run_id).status == "sleeping"
    durable_env.advance("1 day")
    done = durable_env.get_run(run.run_id)
    assert (done.status, done.result) == ("completed", ["published doc-1", "reminded doc-1"])
    assert time.perf_counter() - began < 1.0


def test_a_finished_step_is_not_run_again_when_the_kit_resumes_the_run(durable_env):
    CALLS.clear()
    run = durable_env.start(week_long, "doc-2")
    durable_env.advance("7 days")
    assert CALLS == ["publish doc-2", "remind doc-2"]
    assert durable_env.get_run(run.run_id).status == "completed"


def test_workflows_see_the_virtual_clock(durable_env):
    run = durable_env.start(clocked)
    durable_env.advance("7 days")
    started, later = durable_env.get_run(run.run_id).result
    assert datetime.fromisoformat(started) == START
    assert datetime.fromisoformat(later) >= START + timedelta(days=7)


def test_short_step_retries_pass_at_once_on_the_virtual_clock(durable_env):
    FLAKY.clear()
    began = time.perf_counter()
    run = durable_env.start(fetch, "short")
    assert (run.status, run.result) == ("completed", 3)
    assert time.perf_counter() - began < 1.0
    [entry] = durable_env.steps(run.run_id)
    assert entry["attempts"] == 3 and entry["errors"] == ["ConnectionError: attempt 1 failed",
                                                          "ConnectionError: attempt 2 failed"]
    assert durable_env.now >= START + timedelta(seconds=3)  # back-offs of 1 s and 2 s, virtual


def test_a_long_retry_delay_waits_for_advance(durable_env):
    FLAKY.clear()
    run = durable_env.start(slow_fetch, "long")
    assert run.status == "sleeping"
    durable_env.advance("59m")
    assert durable_env.get_run(run.run_id).status == "sleeping"
    durable_env.advance("1h")
    durable_env.advance("2h")
    assert durable_env.get_run(run.run_id).result == 3


def test_resume_delivers_hook_payloads_once_per_key(durable_env):
    run = durable_env.start(collect, "fb-1")
    assert run.status == "waiting"
    durable_env.resume("fb-1", {"n": 1}, key="a")
    durable_env.resume("fb-1", {"n": 1}, key="a")
    durable_env.resume("fb-1", {"n": 2}, key="b")
    assert durable_env.get_run(run.run_id).status == "waiting"
    durable_env.advance("3 days")
    assert durable_env.get_run(run.run_id).result == [{"n": 1}, {"n": 2}]


def test_a_hook_timeout_counts_from_creation_not_from_the_last_payload(durable_env):
    run = durable_env.start(collect, "fb-2")
    durable_env.advance("2 days")
    durable_env.resume("fb-2", "late")
    durable_env.advance("1 day")
    done = durable_env.get_run(run.run_id)
    assert (done.status, done.result) == ("completed", ["late"])


def test_async_hook_wait_with_a_deadline_in_the_kit(durable_env):
    answered = durable_env.start(async_approval, "fb-3")
    assert durable_env.resume("fb-3", "yes").result == "yes"
    expired = durable_env.start(async_approval, "fb-4")
    durable_env.advance("1 day")
    assert durable_env.get_run(expired.run_id).result == "expired"
    assert durable_env.get_run(answered.run_id).status == "completed"


def test_child_workflows_run_under_the_virtual_clock(durable_env):
    run = durable_env.start(family, ["a", "b"])
    assert run.status == "waiting"
    durable_env.advance("7 days")
    assert durable_env.get_run(run.run_id).result == ["A", "B"]


def test_start_with_a_run_id_is_idempotent_in_the_kit(durable_env):
    CALLS.clear()
    first = durable_env.start(week_long, "doc-3", run_id="weekly-3")
    again = durable_env.start(week_long, "doc-3", run_id="weekly-3")
    assert first.run_id == again.run_id == "weekly-3" and again.status == "sleeping"
    assert CALLS == ["publish doc-3"]
    assert [e["type"] for e in durable_env.events("weekly-3")][:2] == ["run_started", "step_started"]


def test_the_kit_works_without_pytest_and_environments_are_isolated(tmp_path):
    one = DurableTestEnv(str(tmp_path / "one"), start=datetime(2031, 6, 1, tzinfo=timezone.utc))
    two = DurableTestEnv(str(tmp_path / "two"))
    run = one.start(clocked)
    one.advance("7 days")
    assert one.get_run(run.run_id).result[0] == "2031-06-01T00:00:00+00:00"
    assert (tmp_path / "one" / "runs" / f"{run.run_id}.jsonl").exists()
    assert two.tick().resumed == 0 and not (tmp_path / "two" / "runs" / f"{run.run_id}.jsonl").exists()


_calls: list[int] = []


@step
def _always_down() -> None:
    _calls.append(1)
    raise ConnectionError("down")


@workflow
def _uses_defaults() -> str:
    try:
        _always_down()
    except ConnectionError as exc:
        return f"gave up: {exc}"
    return "unreachable"


@step(retry_delay="10s", max_retries=3)
def _down_with_delay() -> None:
    raise ConnectionError("down")


@workflow
def _backs_off() -> None:
    _down_with_delay()


def test_a_bare_step_makes_four_attempts_one_second_apart_doubling(tmp_path):
    env = DurableTestEnv(str(tmp_path / "j"))
    _calls.clear()
    run = env.start(_uses_defaults)
    while env.get_run(run.run_id).status != "completed":
        env.advance("10s")
    assert env.get_run(run.run_id).result == "gave up: down"
    assert len(_calls) == 4
    failed = [e for e in env.events(run.run_id) if e["type"] == "step_failed"]
    gaps = [round((_instant(e["retry_at"]) - _instant(e["at"])).total_seconds()) for e in failed[:-1]]
    assert gaps == [1, 2, 4] and failed[-1]["final"] is True


def test_retry_delays_double_from_retry_delay(tmp_path):
    env = DurableTestEnv(str(tmp_path / "j"))
    run = env.start(_backs_off)
    for _ in range(10):
        env.advance("1 minute")
    failed = [e for e in env.events(run.run_id) if e["type"] == "step_failed"]
    gaps = [round((_instant(e["retry_at"]) - _instant(e["at"])).total_seconds()) for e in failed[:-1]]
    assert gaps == [10, 20, 40]
    assert env.get_run(run.run_id).status == "failed"


def _instant(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_kit_runs_on_a_postgresql_store_too(pg_url):
    env = DurableTestEnv(store=pg_url)
    try:
        run = env.start(_uses_defaults)
        while env.get_run(run.run_id).status != "completed":
            env.advance("10s")
        assert env.get_run(run.run_id).result == "gave up: down"
    finally:
        env.store.close()


def test_the_kit_writes_no_file_unless_given_a_journal_dir(tmp_path, monkeypatch):
    """The default store lives in memory: a week-long run, a hook, a child and a failing step
    open no file for writing, create, rename or remove none (seen by an audit hook)."""
    import sys
    import tempfile

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)

    def exercise(env, tag):
        env.start(week_long, f"doc-{tag}")
        env.start(collect, f"fb-{tag}")
        env.resume(f"fb-{tag}", {"n": 1})
        env.start(family, [f"a-{tag}"])
        env.start(fetch, f"flaky-{tag}")
        return env.advance("7 days")

    exercise(DurableTestEnv(), "warm-up")  # imports happen here (a first import may write a .pyc)
    written = _watch_writes(sys)
    summary = exercise(DurableTestEnv(), "watched")
    written.stop()
    assert summary.completed >= 3 and written.calls == []
    assert list(tmp_path.iterdir()) == []

    env = DurableTestEnv(dir=str(tmp_path / "journals"))
    env.start(week_long, "on-disk")
    assert (tmp_path / "journals" / "runs").is_dir()


class _watch_writes:
    """Records every file-system write of this process (open for writing, mkdir, rename, remove)."""

    _WRITES = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.unlink", "os.rmdir",
               "os.link", "os.symlink", "os.truncate"}
    _active: list[_watch_writes] = []
    _hooked = False

    def __init__(self, sys):
        self.calls: list[tuple[str, object]] = []
        _watch_writes._active.append(self)
        if not _watch_writes._hooked:  # an audit hook cannot be removed: one for the whole process
            sys.addaudithook(_watch_writes._hook)
            _watch_writes._hooked = True

    @staticmethod
    def _hook(event, args):
        import os

        for watcher in _watch_writes._active:
            if event in _watch_writes._WRITES:
                watcher.calls.append((event, args[0]))
            elif event == "open":
                path, mode, flags = args
                writes = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                    mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
                if writes:
                    watcher.calls.append((event, path))

    def stop(self):
        _watch_writes._active.remove(self)


def test_the_kit_keeps_utc_whatever_time_zone_or_naive_time_it_starts_at():
    """Production's clock is UTC: run ids and journal times are named in UTC. A kit started at a
    time of another zone gives the same run ids and times, and a naive start (or ISO text, as
    `tick --now` takes) is UTC, instead of a TypeError at the first `advance`."""
    for start in (datetime(2030, 1, 1, 5, tzinfo=timezone(timedelta(hours=5))), datetime(2030, 1, 1),
                  "2030-01-01T00:00:00", "2030-01-01T00:00:00Z"):
        env = DurableTestEnv(start=start)
        run = env.start(clocked)
        assert run.run_id.startswith("20300101T000000-"), (start, run.run_id)
        assert env.advance("7 days").completed == 1, start
        assert env.get_run(run.run_id).result == ["2030-01-01T00:00:00+00:00", "2030-01-08T00:00:00+00:00"]
        assert env.now == datetime(2030, 1, 8, tzinfo=timezone.utc)
    env.clock.now = datetime(2030, 2, 1)  # set by hand, naive: UTC too
    assert env.now == datetime(2030, 2, 1, tzinfo=timezone.utc) and env.advance("1 day").errors == []


def test_advancing_by_a_bad_amount_is_refused_with_a_clear_error_and_the_clock_stays(durable_env):
    run = durable_env.start(week_long, "doc-9")
    refused = {}
    for amount in (-1, "-1h", timedelta(days=-1), float("nan"), float("inf"), "soon", None):
        try:
            durable_env.advance(amount)
        except ValueError as exc:
            refused[repr(amount)] = str(exc)
    assert len(refused) == 7 and refused["nan"] == "not a duration: nan (not a number)"
    durable_env.clock.now = datetime(9999, 6, 1, tzinfo=timezone.utc)
    try:
        durable_env.advance("365 days")
    except ValueError as exc:
        assert "would pass the year 9999" in str(exc)
    else:
        raise AssertionError("an advance past the year 9999 was not refused")
    assert durable_env.now == datetime(9999, 6, 1, tzinfo=timezone.utc)
    assert durable_env.get_run(run.run_id).status == "sleeping"  # nothing moved, nothing ticked


@workflow
def takes_options(**options: object) -> dict[str, object]:
    return dict(options)


def test_start_in_the_kit_takes_tags_and_refuses_a_plain_function_as_start_does(durable_env):
    run = durable_env.start(takes_options, colour="red", tags={"tenant": "acme"})
    assert run.result == {"colour": "red"}  # the tags are the run's, not an argument
    assert durable_env.get_run(run.run_id).tags == {"tenant": "acme"}

    def plain() -> None: ...

    try:
        durable_env.start(plain)  # type: ignore[call-overload]
    except TypeError as exc:
        assert str(exc).endswith("is not a workflow (decorate it with @workflow)")
    else:
        raise AssertionError("a plain function was started")


@workflow
def staged() -> str:
    set_event("stage", "drafted")
    sleep("1 day")
    set_event("stage", "published")
    return "done"


def test_get_event_reads_what_the_run_published_in_the_kits_store_without_waiting(durable_env):
    run = durable_env.start(staged)
    assert durable_env.get_event(run.run_id, "stage") == "drafted"
    assert durable_env.get_event(run.run_id, "missing", default="none yet") == "none yet"
    durable_env.advance("1 day")
    assert durable_env.get_event(run.run_id, "stage") == "published"


def test_retry_in_the_kit_takes_a_cancelled_run_when_allowed_as_durable_retry_does(durable_env):
    run = durable_env.start(week_long, "doc-c")
    assert durable_env.cancel(run.run_id).status == "cancelled"
    assert durable_env.retry(run.run_id, allow_cancelled=True).status == "sleeping"
    durable_env.advance("7 days")
    assert durable_env.get_run(run.run_id).result == ["published doc-c", "reminded doc-c"]


def test_a_kit_used_as_a_context_manager_closes_its_postgresql_connections(pg_url):
    """A suite that makes a kit per test on one database must not keep a connection per kit."""
    import psycopg

    def connections() -> int:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                " AND pid <> pg_backend_pid()").fetchone()[0]

    before = connections()
    for n in range(3):
        with DurableTestEnv(store=pg_url) as env:
            env.start(_uses_defaults, run_id=f"ctx-{n}")
            env.advance("1 minute")
    assert connections() == before
