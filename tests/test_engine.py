"""The engine through the Python API, in this process: replay, retries, sleeps, hooks, determinism."""

from __future__ import annotations

import asyncio
import importlib
import sys
from datetime import datetime, timedelta, timezone

import pytest

from durable_cli import (FatalError, RetryableError, define_hook, get_run, get_step_metadata,
                         get_workflow_metadata, patched, resume_hook, set_event, sleep, start, step, tick, workflow)
from helpers import read_events, run_events, write_module

CALLS: list[str] = []
SEEN: list[object] = []


@pytest.fixture(autouse=True)
def _clean():
    CALLS.clear()
    SEEN.clear()
    yield
    CALLS.clear()
    SEEN.clear()


def later(**delta: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(**delta)


class CustomError(Exception):
    pass


# ---- workflows used below -------------------------------------------------------------------

@step
def record(name: str, value: object = None) -> object:
    CALLS.append(name)
    return value if value is not None else name


@workflow
def two_steps_and_a_sleep(x: int) -> list[object]:
    a = record("a", x + 1)
    sleep("1h")
    b = record("b", a * 10)
    return [a, b]


@step(max_retries=3, retry_delay="10ms")
def flaky_three_times() -> str:
    CALLS.append("flaky")
    if CALLS.count("flaky") < 4:
        raise ConnectionError(f"attempt {CALLS.count('flaky')} failed")
    return "ok"


@workflow
def retries_then_succeeds() -> str:
    return flaky_three_times()


@step(max_retries=2, retry_delay="10ms")
def always_fails() -> None:
    CALLS.append("fail")
    raise CustomError("still broken")


@workflow
def exhausts_retries() -> None:
    always_fails()


@step(max_retries=5, retry_delay="10ms")
def fatal_step() -> None:
    CALLS.append("fatal")
    raise FatalError("card declined")


@workflow
def catches_fatal() -> str:
    try:
        fatal_step()
    except FatalError as exc:
        return f"caught {type(exc).__name__}: {exc}"
    return "not raised"


@workflow
def catches_custom() -> str:
    try:
        always_fails()
    except CustomError as exc:
        return f"caught {type(exc).__name__}: {exc}"
    return "not raised"


@workflow
def catches_then_sleeps() -> str:
    try:
        always_fails()
    except CustomError as exc:
        caught = f"caught {type(exc).__name__}: {exc}"
    sleep("1h")
    return caught


@workflow
def naive_sleep() -> None:
    sleep(datetime(2100, 1, 1))


@step(max_retries=1, retry_delay="1 hour")
def retry_after_short() -> str:
    CALLS.append("ra")
    if len(CALLS) == 1:
        raise RetryableError("rate limited", retry_after="10ms")
    return "done"


@workflow
def uses_retry_after() -> str:
    return retry_after_short()


@step(max_retries=1, retry_delay="10ms")
def retry_after_long() -> str:
    CALLS.append("rl")
    if len(CALLS) == 1:
        raise RetryableError("come back later", retry_after="2 hours")
    return "done"


@workflow
def uses_long_retry_after() -> str:
    return retry_after_long()


@step
def returns_object() -> object:
    return object()


@workflow
def bad_result() -> None:
    returns_object()


@step
def returns_none() -> None:
    CALLS.append("none")
    return None


@workflow
def none_result_then_sleep() -> list[object]:
    value = returns_none()
    sleep(60)
    return [value, returns_none()]


@workflow
def sleeps_for(how: str) -> str:
    record("before")
    if how == "text":
        sleep("2 days")
    elif how == "int":
        sleep(3600)
    elif how == "timedelta":
        sleep(timedelta(hours=5))
    else:
        sleep(datetime(2100, 1, 1, tzinfo=timezone.utc))
    record("after")
    return how


hook = define_hook("approval")


@workflow
def waits_for_three(token: str | None) -> dict[str, object]:
    events = hook.create(token=token)
    record("token", events.token)
    got = []
    for payload in events:
        got.append(payload)
        if len(got) == 3:
            break
    return {"token": events.token, "payloads": got}


@step
async def slow_echo(value: int, delay: float) -> int:
    await asyncio.sleep(delay)
    CALLS.append(f"echo{value}")
    return value


@workflow
async def gathers() -> list[int]:
    first = await asyncio.gather(slow_echo(1, 0.06), slow_echo(2, 0.03), slow_echo(3, 0.0))
    await sleep("1 day")
    second = await slow_echo(4, 0.0)
    return [*first, second]


@step(max_retries=2, retry_delay="10ms")
def remembers_metadata() -> str:
    meta = get_step_metadata()
    SEEN.append((meta.step_id, meta.attempt))
    if meta.attempt == 1:
        raise ConnectionError("first attempt fails")
    return meta.step_id


@workflow(name="metadata-flow")
def metadata_flow() -> dict[str, object]:
    meta = get_workflow_metadata()
    step_id = remembers_metadata()
    return {"run_id": meta.run_id, "name": meta.workflow_name,
            "started_at": meta.started_at.isoformat(), "step_id": step_id}


# ---- replay ---------------------------------------------------------------------------------

def test_a_completed_step_is_replayed_not_executed_again(tmp_path):
    run = start(two_steps_and_a_sleep, 1, dir=tmp_path)
    assert run.status == "sleeping"
    assert CALLS == ["a"]
    tick(dir=tmp_path, now=later(hours=2))
    assert CALLS == ["a", "b"]
    done = get_run(run.run_id, dir=tmp_path)
    assert (done.status, done.result) == ("completed", [2, 20])


def test_a_tick_before_the_wake_time_does_not_resume_the_run(tmp_path):
    run = start(two_steps_and_a_sleep, 1, dir=tmp_path)
    tick(dir=tmp_path, now=later(minutes=30))
    assert get_run(run.run_id, dir=tmp_path).status == "sleeping"
    assert CALLS == ["a"]


def test_a_second_tick_after_completion_changes_nothing(tmp_path):
    run = start(two_steps_and_a_sleep, 1, dir=tmp_path)
    tick(dir=tmp_path, now=later(hours=2))
    before = run_events(tmp_path, run.run_id)
    tick(dir=tmp_path, now=later(hours=3))
    assert run_events(tmp_path, run.run_id) == before
    assert CALLS == ["a", "b"]


def test_none_is_a_recorded_step_result_not_a_missing_one(tmp_path):
    run = start(none_result_then_sleep, dir=tmp_path)
    tick(dir=tmp_path, now=later(minutes=2))
    done = get_run(run.run_id, dir=tmp_path)
    assert (done.status, done.result) == ("completed", [None, None])
    assert CALLS == ["none", "none"]


def test_a_step_outside_a_run_is_a_plain_call(tmp_path):
    assert record("plain", 5) == 5
    assert CALLS == ["plain"]
    assert not (tmp_path / "runs").exists()


# ---- retries ------------------------------------------------------------------------------

def test_a_step_is_retried_with_backoff_until_it_succeeds(tmp_path):
    run = start(retries_then_succeeds, dir=tmp_path)
    assert (run.status, run.result) == ("completed", "ok")
    assert CALLS.count("flaky") == 4
    failed = [e for e in run_events(tmp_path, run.run_id) if e["type"] == "step_failed"]
    assert [e["attempt"] for e in failed] == [1, 2, 3]


def test_default_retries_are_four_attempts_in_all(tmp_path):
    run = start(exhausts_retries, dir=tmp_path)
    assert run.status == "failed"
    assert CALLS.count("fail") == 3  # max_retries=2 -> 3 attempts
    assert run.error["message"] == "still broken"
    assert run.error["type"].endswith("CustomError")


def test_fatal_error_stops_retrying_at_once_and_can_be_caught(tmp_path):
    run = start(catches_fatal, dir=tmp_path)
    assert CALLS == ["fatal"]
    assert (run.status, run.result) == ("completed", "caught FatalError: card declined")


def test_a_final_step_exception_is_re_raised_with_its_class_and_message(tmp_path):
    run = start(catches_custom, dir=tmp_path)
    assert (run.status, run.result) == ("completed", "caught CustomError: still broken")


def test_a_caught_step_failure_replays_as_the_same_exception(tmp_path):
    run = start(catches_then_sleeps, dir=tmp_path)
    assert run.status == "sleeping"
    calls = list(CALLS)
    tick(dir=tmp_path, now=later(days=1))
    assert CALLS == calls
    done = get_run(run.run_id, dir=tmp_path)
    assert (done.status, done.result) == ("completed", "caught CustomError: still broken")


def test_retryable_error_retry_after_sets_the_next_delay(tmp_path):
    run = start(uses_retry_after, dir=tmp_path)
    assert (run.status, run.result) == ("completed", "done")
    failed = [e for e in run_events(tmp_path, run.run_id) if e["type"] == "step_failed"][0]
    gap = datetime.fromisoformat(failed["retry_at"].replace("Z", "+00:00")) - datetime.fromisoformat(
        failed["at"].replace("Z", "+00:00"))
    assert gap < timedelta(seconds=1)


def test_a_long_retry_after_suspends_the_run_for_tick(tmp_path):
    run = start(uses_long_retry_after, dir=tmp_path)
    assert run.status == "sleeping"
    assert CALLS == ["rl"]
    tick(dir=tmp_path, now=later(hours=1))
    assert CALLS == ["rl"]
    tick(dir=tmp_path, now=later(hours=3))
    done = get_run(run.run_id, dir=tmp_path)
    assert (done.status, done.result) == ("completed", "done")
    assert CALLS == ["rl", "rl"]


def test_a_step_result_that_is_not_json_fails_the_run_naming_the_step(tmp_path):
    run = start(bad_result, dir=tmp_path)
    assert run.status == "failed"
    assert "not JSON serializable" in run.error["message"]
    assert "returns_object" in run.error["message"]


@step(max_retries=0)
def missing_key() -> None:
    raise KeyError("customer-17")


@workflow
def catches_key_error() -> list[object]:
    try:
        missing_key()
    except KeyError as exc:
        return [type(exc).__name__, *exc.args]
    return []


def test_a_re_raised_step_exception_keeps_its_message_exactly(tmp_path):
    run = start(catches_key_error, dir=tmp_path)
    assert (run.status, run.result) == ("completed", ["KeyError", "customer-17"])


@workflow
def returns_a_set() -> object:
    return {1, 2}


def test_a_workflow_result_that_is_not_json_fails_the_run(tmp_path):
    run = start(returns_a_set, dir=tmp_path)
    assert run.status == "failed"
    assert "not JSON serializable" in run.error["message"]


def nested(depth: int) -> list[object]:
    """A list `depth` lists deep: too deep for the JSON encoder at 100,000."""
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@step(max_retries=3, retry_delay="10ms")
def returns_deep() -> object:
    CALLS.append("deep")
    return nested(100_000)


@workflow
def deep_step_result() -> None:
    returns_deep()


@workflow
def deep_result() -> object:
    return nested(100_000)


@workflow
def deep_event() -> str:
    try:
        set_event("progress", nested(100_000))
    except TypeError as exc:
        return str(exc)
    return "published"


@workflow
def lone_surrogate_event() -> str:
    try:
        set_event("progress", {"text": "caf\ud800"})
    except TypeError as exc:
        return str(exc)
    return "published"


def test_an_event_value_with_a_lone_surrogate_raises_type_error_in_the_workflow(tmp_path):
    """No UTF-8 journal can hold a lone surrogate: set_event refuses it like any value that is not
    JSON (a TypeError naming the event, which the workflow can catch), instead of failing the run
    with a bare UnicodeEncodeError from deep in the journal's encoder."""
    run = start(lone_surrogate_event, dir=tmp_path)
    assert run.status == "completed", run.error
    assert "the value of event 'progress' must be JSON" in run.result
    assert get_run(run.run_id, dir=tmp_path).events == {}


@workflow
def lone_surrogate_patch() -> str:
    return "new" if patched("v2-caf\ud800") else "old"


def test_a_patch_name_with_a_lone_surrogate_fails_the_run_with_an_error_naming_it(tmp_path):
    """No UTF-8 journal can hold a lone surrogate: patched() refuses such a name with an error
    that says so, instead of a bare UnicodeEncodeError from deep in the journal's encoder."""
    run = start(lone_surrogate_patch, dir=tmp_path)
    assert run.status == "failed"
    assert run.error["type"] != "UnicodeEncodeError" and "patched()" in run.error["message"]


def test_values_nested_too_deep_to_encode_are_refused_as_values_that_are_not_json(tmp_path):
    """A value the JSON encoder cannot nest that deep is no JSON either: a step's result fails
    the step for good (not retried), a workflow's result fails the run (which was left an empty,
    damaged journal behind a traceback), a published event raises TypeError in the workflow."""
    CALLS.clear()
    run = start(deep_step_result, dir=tmp_path)
    assert (run.status, CALLS) == ("failed", ["deep"])
    assert "returns_deep" in run.error["message"] and "not JSON serializable" in run.error["message"]
    run = start(deep_result, dir=tmp_path)
    assert run.status == "failed" and "not JSON serializable" in run.error["message"]
    assert get_run(run.run_id, dir=tmp_path).status == "failed"
    run = start(deep_event, dir=tmp_path)
    assert run.status == "completed" and "must be JSON" in run.result


def test_workflow_arguments_that_are_not_json_are_refused_before_a_run_exists(tmp_path):
    with pytest.raises(Exception, match="JSON"):
        start(two_steps_and_a_sleep, object(), dir=tmp_path)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_start_refuses_a_function_that_is_not_a_workflow(tmp_path):
    with pytest.raises(TypeError, match="not a workflow"):
        start(record, "x", dir=tmp_path)


# ---- sleep --------------------------------------------------------------------------------

@pytest.mark.parametrize("how, short, long", [
    ("text", timedelta(days=1), timedelta(days=3)),
    ("int", timedelta(minutes=30), timedelta(hours=2)),
    ("timedelta", timedelta(hours=4), timedelta(hours=6)),
    ("datetime", timedelta(days=365), datetime(2100, 1, 2, tzinfo=timezone.utc) - datetime.now(timezone.utc)),
])
def test_sleep_variants_suspend_until_their_time_and_tick_resumes_them(tmp_path, how, short, long):
    run = start(sleeps_for, how, dir=tmp_path)
    assert run.status == "sleeping" and run.wake_at
    now = datetime.now(timezone.utc)
    tick(dir=tmp_path, now=now + short)
    assert get_run(run.run_id, dir=tmp_path).status == "sleeping"
    tick(dir=tmp_path, now=now + long)
    done = get_run(run.run_id, dir=tmp_path)
    assert (done.status, done.result) == ("completed", how)
    assert CALLS == ["before", "after"]


def test_sleep_with_a_naive_datetime_fails_the_run(tmp_path):
    run = start(naive_sleep, dir=tmp_path)
    assert run.status == "failed"
    assert "timezone-aware" in run.error["message"]


# ---- hooks --------------------------------------------------------------------------------

def test_a_hook_delivers_several_payloads_in_order(tmp_path):
    run = start(waits_for_three, "order-42", dir=tmp_path)
    assert run.status == "waiting"
    for payload in ({"n": 1}, [2], "three"):
        resume_hook("order-42", payload, dir=tmp_path)
    done = get_run(run.run_id, dir=tmp_path)
    assert done.status == "completed"
    assert done.result == {"token": "order-42", "payloads": [{"n": 1}, [2], "three"]}
    assert CALLS == ["token"]


def test_a_hook_without_a_token_gets_a_random_unguessable_one(tmp_path):
    first = start(waits_for_three, None, dir=tmp_path)
    second = start(waits_for_three, None, dir=tmp_path)
    tokens = [e["token"] for r in (first, second) for e in run_events(tmp_path, r.run_id)
              if e["type"] == "hook_created"]
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    assert all(len(t) >= 16 for t in tokens)
    for payload in (1, 2, 3):
        resume_hook(tokens[0], payload, dir=tmp_path)
    done = get_run(first.run_id, dir=tmp_path)
    assert done.result == {"token": tokens[0], "payloads": [1, 2, 3]}


def test_a_token_held_by_a_live_run_cannot_be_created_by_another_run(tmp_path):
    first = start(waits_for_three, "shared", dir=tmp_path)
    second = start(waits_for_three, "shared", dir=tmp_path)
    assert first.status == "waiting"
    assert second.status == "failed"
    assert "shared" in second.error["message"]


def test_a_token_is_free_again_once_its_run_finished(tmp_path):
    first = start(waits_for_three, "reuse", dir=tmp_path)
    for payload in (1, 2, 3):
        resume_hook("reuse", payload, dir=tmp_path)
    assert get_run(first.run_id, dir=tmp_path).status == "completed"
    assert start(waits_for_three, "reuse", dir=tmp_path).status == "waiting"


def test_resume_hook_on_an_unknown_token_raises(tmp_path):
    from durable_cli import UnknownToken

    with pytest.raises(UnknownToken):
        resume_hook("nobody", 1, dir=tmp_path)


@workflow
async def async_hook(token: str) -> list[object]:
    events = hook.create(token=token)
    got = []
    async for payload in events:
        got.append(payload)
        if len(got) == 2:
            break
    await sleep(30)
    return got


def test_an_async_workflow_iterates_hook_payloads_with_async_for(tmp_path):
    run = start(async_hook, "async-tok", dir=tmp_path)
    assert run.status == "waiting"
    resume_hook("async-tok", "first", dir=tmp_path)
    hook.resume("async-tok", {"second": True}, dir=tmp_path)
    assert get_run(run.run_id, dir=tmp_path).status == "sleeping"
    tick(dir=tmp_path, now=later(minutes=1))
    done = get_run(run.run_id, dir=tmp_path)
    assert (done.status, done.result) == ("completed", ["first", {"second": True}])


# ---- async --------------------------------------------------------------------------------

def test_gathered_steps_replay_by_call_order_not_completion_order(tmp_path):
    run = start(gathers, dir=tmp_path)
    assert run.status == "sleeping"
    assert CALLS == ["echo3", "echo2", "echo1"]
    tick(dir=tmp_path, now=later(days=2))
    done = get_run(run.run_id, dir=tmp_path)
    assert (done.status, done.result) == ("completed", [1, 2, 3, 4])
    assert CALLS == ["echo3", "echo2", "echo1", "echo4"]


# ---- metadata -----------------------------------------------------------------------------

def test_step_id_is_stable_across_attempts_and_attempt_counts_from_one(tmp_path):
    run = start(metadata_flow, dir=tmp_path)
    assert run.status == "completed"
    assert [attempt for _, attempt in SEEN] == [1, 2]
    assert SEEN[0][0] == SEEN[1][0] == run.result["step_id"]


def test_workflow_metadata_names_the_run_and_its_start(tmp_path):
    run = start(metadata_flow, dir=tmp_path)
    assert run.result["run_id"] == run.run_id
    assert run.result["name"] == "metadata-flow"
    started = datetime.fromisoformat(run.result["started_at"])
    assert started.tzinfo is not None
    assert abs(datetime.now(timezone.utc) - started) < timedelta(minutes=1)


def test_step_ids_differ_between_runs(tmp_path):
    one = start(metadata_flow, dir=tmp_path)
    two = start(metadata_flow, dir=tmp_path)
    assert one.result["step_id"] != two.result["step_id"]


# ---- determinism --------------------------------------------------------------------------

ORIGINAL = """
from durable_cli import workflow, step, sleep, define_hook

h = define_hook("approval")
LOG = {log!r}

def note(name):
    with open(LOG, "a") as f:
        f.write(name + "\\n")

@step
def a():
    note("a")
    return "a"

@step
def b():
    note("b")
    return "b"

@step
def c():
    note("c")
    return "c"

@workflow
def flow():
{body}
"""


def _indent(body: str) -> str:
    return "\n".join("    " + line.strip() for line in body.strip().splitlines())


@pytest.fixture
def changing_module(tmp_path, monkeypatch):
    """Write a module, import it, start its `flow`; then rewrite the body and tick."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"changing_{abs(hash(str(tmp_path)))}"
    log = tmp_path / "log.txt"
    store = tmp_path / "journals"

    def begin(body: str):
        write_module(tmp_path, name, ORIGINAL.format(log=str(log), body=_indent(body)))
        importlib.invalidate_caches()
        module = importlib.import_module(name)
        return start(module.flow, dir=store)

    def change(body: str):
        write_module(tmp_path, name, ORIGINAL.format(log=str(log), body=_indent(body)))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        tick(dir=store, now=later(days=2))

    yield begin, change, store, log
    sys.modules.pop(name, None)


def _lines(log) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize("before, after, journal_side, code_side, never_runs", [
    ("a(); sleep('1h'); return b()", "c(); sleep('1h'); return b()", "'a'", "'c'", "c"),
    ("a(); b(); sleep('1h'); return c()", "b(); a(); sleep('1h'); return c()", "'a'", "'b'", "b"),
    ("a(); b(); sleep('1h'); return c()", "b(); sleep('1h'); return c()", "'a'", "'b'", "b"),
    ("a(); sleep('1h'); return b()", "sleep('1h'); a(); return b()", "'a'", "sleep", None),
    ("a(); sleep('1h'); return b()", "a(); b(); sleep('1h'); return c()", "sleep", "'b'", "b"),
    ("a(); sleep('1h'); return b()", "a(); h.create(token='t'); return b()", "sleep", "hook 'approval'", None),
], ids=["renamed", "reordered", "removed", "sleep-moved-before", "step-inserted-before-sleep",
        "sleep-became-a-hook"])
def test_a_code_change_that_alters_the_sequence_blocks_the_run_as_not_deterministic(
    changing_module, before, after, journal_side, code_side, never_runs,
):
    begin, change, store, log = changing_module
    run = begin(before)
    assert run.status == "sleeping"
    executed = _lines(log)
    events_before = run_events(store, run.run_id)
    change(after)
    done = get_run(run.run_id, dir=store)
    assert done.status == "blocked"
    message = done.error["message"]
    assert "not deterministic" in message
    assert journal_side in message and code_side in message
    events_after = run_events(store, run.run_id)
    assert events_after[: len(events_before)] == events_before
    assert events_after[-1]["type"] == "run_blocked"
    assert _lines(log) == executed
    if never_runs:
        started = [e["name"] for e in events_after[len(events_before):] if e["type"] == "step_started"]
        assert never_runs not in started


def test_a_workflow_that_now_returns_early_is_not_deterministic(changing_module):
    begin, change, store, log = changing_module
    run = begin("a(); b(); sleep('1h'); return c()")
    change("a(); return 'early'")
    done = get_run(run.run_id, dir=store)
    assert done.status == "blocked"
    assert "not deterministic" in done.error["message"]


def test_a_changed_step_body_that_keeps_the_sequence_is_accepted(changing_module, tmp_path):
    begin, change, store, log = changing_module
    run = begin("x = a(); sleep('1h'); return [x, b()]")
    source = (tmp_path / "log.txt")
    change("x = a(); sleep('1h'); return [x, b(), 'new code']")
    done = get_run(run.run_id, dir=store)
    assert (done.status, done.result) == ("completed", ["a", "b", "new code"])
    assert _lines(source) == ["a", "b"]


def test_the_journal_keeps_every_event_in_seq_order(tmp_path):
    run = start(two_steps_and_a_sleep, 1, dir=tmp_path)
    tick(dir=tmp_path, now=later(hours=2))
    events = read_events(tmp_path / "runs" / f"{run.run_id}.jsonl")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    first = events[0]
    assert first["type"] == "run_started"
    assert first["workflow"].endswith(":two_steps_and_a_sleep") and first["args"] == [1]
    assert "v" in first and "import_root" in first
    assert all(e["at"].endswith("Z") for e in events)
    assert events[-1]["type"] == "run_completed"
