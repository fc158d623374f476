"""Issue 16, the test kit matches production: durable.yaml read as the CLI reads it, schedules fired
by `advance()`, helpers for webhooks, streams, cancel and retry, and `durable_cli.logger`.

The workflows live in this module; durable.yaml schedules name them as `MODULE:FN`, the way a
project's config names its own modules.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from durable_cli import (InvalidPayload, UnknownToken, create_webhook, define_hook, get_writable,
                         logger, sleep, step, workflow, workflow_now)
from durable_cli._engine.run import Options
from durable_cli.testing import DurableTestEnv

HERE = "test_testing_kit_production"
START = datetime(2030, 1, 1, tzinfo=timezone.utc)
ATTEMPTS: list[str] = []
BROKEN = {"charge": True}
note = define_hook("note")


@step
def unreliable(name: str) -> str:
    ATTEMPTS.append(name)
    raise ConnectionError("the service is down")


@workflow
def fragile(name: str) -> str:
    return unreliable(name)


@workflow
def report(region: str) -> str:
    return f"{region} at {workflow_now().isoformat()}"


@workflow
def heartbeat() -> list[str]:
    beats = []
    for _ in range(3):
        sleep("1 day")
        beats.append(workflow_now().isoformat())
    return beats


@workflow
def checkout(order: str, signed: bool = False) -> object:
    hook = create_webhook(token=f"pay-{order}", secret_env="PAY_SECRET" if signed else None)
    for request in hook:
        return {"method": request["method"], "json": request["json"],
                "signed": "x-durable-signature" in request["headers"]}
    return None


@workflow
def waits_for_note(token: str) -> object:
    return note.create(token=token).next()


@step
def render(pages: int) -> int:
    out = get_writable("progress")
    for page in range(pages):
        out.write(f"page {page + 1}")
    return pages


@workflow
def printer(pages: int) -> int:
    return render(pages)


@step
def charge(order: str) -> str:
    if BROKEN["charge"]:
        raise ValueError("the tax table is missing")
    return f"charged {order}"


@workflow
def bill(order: str) -> str:
    sleep("1 hour")
    return charge(order)


@workflow
def chatty(name: str) -> str:
    logger.info("billing %s", name)
    print(f"print: billing {name}")
    sleep("1 day")
    logger.info("reminding %s", name)
    return name


@workflow
async def async_chatty(name: str) -> str:
    logger.info("async billing %s", name)
    await sleep("1 day")
    logger.info("async reminding %s", name)
    return name


def env_with(tmp_path: Path, yaml: str) -> DurableTestEnv:
    config = tmp_path / "durable.yaml"
    config.write_text(yaml)
    return DurableTestEnv(str(tmp_path / "journals"), START, config=str(config))


def test_the_kit_reads_durable_yaml_as_the_cli_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "durable.yaml").write_text(
        "defaults: {max_retries: 0}\nmax_recoveries: 7\npayload_limit: 64\n")
    monkeypatch.chdir(tmp_path)  # found where the CLI finds it: ./durable.yaml
    env = DurableTestEnv(str(tmp_path / "journals"), START)
    assert env.options == Options(defaults={"max_retries": 0}, max_recoveries=7, payload_limit=64)
    ATTEMPTS.clear()
    run = env.start(fragile, "once")
    assert (run.status, ATTEMPTS) == ("failed", ["once"])  # defaults: no retries
    waiting = env.start(waits_for_note, "note-1")
    with pytest.raises(InvalidPayload):
        env.resume("note-1", "x" * 100)  # payload_limit: 64 bytes
    assert env.get_run(waiting.run_id).status == "waiting"


def test_durable_env_fixture_reads_durable_yaml_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "other.yaml"
    config.write_text("max_recoveries: 2\n")
    monkeypatch.setenv("DURABLE_CONFIG", str(config))
    assert DurableTestEnv(str(tmp_path / "journals")).options.max_recoveries == 2


def test_advance_fires_every_schedule_instant_it_passes(tmp_path: Path) -> None:
    env = env_with(tmp_path, f"""
schedules:
  - name: hourly-report
    cron: "0 * * * *"
    workflow: {HERE}:report
    args: [eu]
""")
    summary = env.advance("3h30m")
    runs = [path.stem for path in (tmp_path / "journals" / "runs").glob("*.jsonl")]
    results = sorted(env.get_run(run_id).result for run_id in runs)
    assert results == [f"eu at 2030-01-01T0{hour}:00:00+00:00" for hour in (1, 2, 3)]
    assert summary.fired == 3


def test_advance_wakes_each_sleep_at_its_own_time(tmp_path: Path) -> None:
    env = DurableTestEnv(str(tmp_path / "journals"), START, config=None)
    run = env.start(heartbeat)
    env.advance("7 days")
    assert env.get_run(run.run_id).result == [
        "2030-01-02T00:00:00+00:00", "2030-01-03T00:00:00+00:00", "2030-01-04T00:00:00+00:00"]


def test_deliver_webhook_sends_a_request_as_durable_serve_would(durable_env: DurableTestEnv) -> None:
    run = durable_env.start(checkout, "o-1")
    assert run.status == "waiting"
    done = durable_env.deliver_webhook("pay-o-1", {"paid": True})
    assert (done.status, done.result) == ("completed", {"method": "POST", "json": {"paid": True},
                                                        "signed": False})
    with pytest.raises(UnknownToken):
        durable_env.deliver_webhook("pay-o-1", {"paid": True})  # finished: serve answers 404


def test_deliver_webhook_signs_for_a_webhook_with_a_secret(
        durable_env: DurableTestEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAY_SECRET", "s3cret")
    run = durable_env.start(checkout, "o-2", signed=True)
    assert durable_env.deliver_webhook("pay-o-2", b"not json").result == {
        "method": "POST", "json": None, "signed": True}
    assert durable_env.get_run(run.run_id).status == "completed"


def test_deliver_webhook_refuses_plain_hooks_and_bad_json(durable_env: DurableTestEnv) -> None:
    durable_env.start(waits_for_note, "note-2")
    with pytest.raises(UnknownToken):
        durable_env.deliver_webhook("note-2", {"x": 1})
    durable_env.start(checkout, "o-3")
    with pytest.raises(InvalidPayload):
        durable_env.deliver_webhook("pay-o-3", "{oops", headers={"Content-Type": "application/json"})


def test_read_stream_returns_what_steps_wrote(durable_env: DurableTestEnv) -> None:
    run = durable_env.start(printer, 3)
    assert durable_env.read_stream(run.run_id, "progress") == ["page 1", "page 2", "page 3"]
    assert durable_env.read_stream(run.run_id, "progress", start=2) == ["page 3"]


def test_cancel_stops_a_sleeping_run(durable_env: DurableTestEnv) -> None:
    run = durable_env.start(heartbeat)
    assert durable_env.cancel(run.run_id).status == "cancelled"
    durable_env.advance("7 days")
    assert durable_env.get_run(run.run_id).status == "cancelled"


def test_retry_resumes_a_failed_run_on_fixed_code(durable_env: DurableTestEnv) -> None:
    BROKEN["charge"] = True
    run = durable_env.start(bill, "o-4")
    durable_env.advance("2 hours")
    assert durable_env.get_run(run.run_id).status == "failed"
    BROKEN["charge"] = False
    assert durable_env.retry(run.run_id).result == "charged o-4"


def test_logger_writes_once_across_a_sleep_and_resume_while_print_repeats(
        durable_env: DurableTestEnv, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger="durable_cli.workflow")
    run = durable_env.start(chatty, "ada")
    durable_env.advance("1 day")
    assert durable_env.get_run(run.run_id).status == "completed"
    assert [r.getMessage() for r in caplog.records] == ["billing ada", "reminding ada"]
    assert {(r.run_id, r.workflow) for r in caplog.records} == {(run.run_id, "chatty")}  # type: ignore[attr-defined]
    assert caplog.records[0].funcName == "chatty"
    assert capsys.readouterr().out.count("print: billing ada") == 2  # replayed on resume


def test_logger_writes_once_in_async_workflows_too(
        durable_env: DurableTestEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durable_cli.workflow")
    run = durable_env.start(async_chatty, "bob")
    durable_env.advance("1 day")
    assert durable_env.get_run(run.run_id).status == "completed"
    assert [r.getMessage() for r in caplog.records] == ["async billing bob", "async reminding bob"]


def test_logger_logs_as_usual_outside_a_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durable_cli.workflow")
    logger.info("plain")
    assert [r.getMessage() for r in caplog.records] == ["plain"]


@pytest.fixture(params=["files", "postgres"])
def any_store_env(request: pytest.FixtureRequest, tmp_path: Path) -> DurableTestEnv:
    """A kit over each store: a journal dir, or a PostgreSQL database of its own."""
    if request.param == "files":
        return DurableTestEnv(str(tmp_path / "journals"), START, config=None)
    return DurableTestEnv(start=START, store=request.getfixturevalue("pg_url"), config=None)


def test_the_helpers_work_on_every_store(any_store_env: DurableTestEnv) -> None:
    env = any_store_env
    beating = env.start(heartbeat)
    env.advance("2 days")
    assert env.cancel(beating.run_id).status == "cancelled"
    printed = env.start(printer, 2)
    assert env.read_stream(printed.run_id, "progress") == ["page 1", "page 2"]
    env.start(checkout, "o-9")
    assert env.deliver_webhook("pay-o-9", {"paid": 1}).result["json"] == {"paid": 1}
    BROKEN["charge"] = True
    billed = env.start(bill, "o-9")
    env.advance("2 hours")  # the sleep, then four attempts (the longer back-offs suspend the run)
    assert env.get_run(billed.run_id).status == "failed"
    BROKEN["charge"] = False
    assert env.retry(billed.run_id).result == "charged o-9"
