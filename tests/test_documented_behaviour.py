"""Issue 16: behaviours the README states, each checked as stated.

- a subclass of `FatalError` is never retried;
- a step called from a step is a plain call (only the outer step is journaled and retried);
- `durable tick --now T` stamps the journal with that time;
- workflows live in importable modules: `durable tick`, in another directory, imports a run's
  workflow again from the module and directory its journal names; one defined inside a function
  cannot be imported again, so `start()` refuses it, in the test kit as outside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from durable_cli import FatalError, InvalidReference, get_run, sleep, start, step, workflow
from durable_cli.cli import main
from durable_cli.testing import DurableTestEnv
from helpers import durable_in_process, run_events, write_module

ATTEMPTS: dict[str, int] = {}


class OutOfStock(FatalError):
    """A FatalError subclass of the user's own."""


@step
def reserve(item: str) -> str:
    ATTEMPTS[item] = ATTEMPTS.get(item, 0) + 1
    raise OutOfStock(f"{item} is out of stock")


@workflow
def order(item: str) -> str:
    return reserve(item)


@step
def inner(item: str) -> str:
    ATTEMPTS["inner"] = ATTEMPTS.get("inner", 0) + 1
    if ATTEMPTS["inner"] < 2:
        raise ConnectionError("flaky")
    return item.upper()


@step
def outer(item: str) -> str:
    return inner(item) + "!"


@workflow
def nested(item: str) -> str:
    return outer(item)


@workflow
def week(item: str) -> str:
    sleep("7 days")
    return item


def test_a_subclass_of_fatal_error_is_never_retried(durable_env: DurableTestEnv) -> None:
    ATTEMPTS.clear()
    run = durable_env.start(order, "lamp")
    assert run.status == "failed" and run.error is not None
    assert run.error["type"].endswith("OutOfStock")
    assert ATTEMPTS == {"lamp": 1}
    assert [s["attempts"] for s in durable_env.steps(run.run_id)] == [1]


def test_a_step_called_from_a_step_is_a_plain_call(durable_env: DurableTestEnv) -> None:
    ATTEMPTS.clear()
    run = durable_env.start(nested, "ada")
    assert run.result == "ADA!"
    steps = durable_env.steps(run.run_id)
    assert [(s["name"], s["attempts"]) for s in steps] == [("outer", 2)]  # inner's failure retried outer
    assert ATTEMPTS == {"inner": 2}


def test_tick_now_stamps_the_journal_with_that_time(tmp_path: Path) -> None:
    journals = str(tmp_path / "journals")
    run = start(week, "ada", dir=journals)
    result = CliRunner().invoke(main, ["--dir", journals, "tick", "--now", "2031-06-01T12:00:00Z",
                                       "--workers", "1", "--json"], catch_exceptions=False)
    assert result.exit_code == 0 and json.loads(result.stdout)["completed"] == 1
    assert get_run(run.run_id, dir=journals).result == "ada"
    stamped = [e["at"] for e in run_events(journals, run.run_id) if e["type"] in ("sleep_completed", "run_completed")]
    assert len(stamped) == 2 and all(at.startswith("2031-06-01T12:00:0") for at in stamped)


def test_tick_imports_the_workflow_again_from_its_module(tmp_path: Path) -> None:
    app = tmp_path / "app"
    write_module(app, "flows", """
        from durable_cli import sleep, workflow

        @workflow
        def remind(name):
            sleep("1 day")
            return "reminded " + name
    """)
    journals = tmp_path / "journals"
    code, out, err = durable_in_process("run", "flows:remind", "ada", dir=journals, cwd=app)
    assert code == 0, err
    run_id = out.split()[0]
    code, _, err = durable_in_process("tick", "--now", "2099-01-01T00:00:00Z", dir=journals, cwd=tmp_path)
    assert code == 0, err
    assert run_events(journals, run_id)[-1]["result"] == "reminded ada"


def test_a_workflow_defined_inside_a_function_is_refused_at_start(durable_env: DurableTestEnv,
                                                                   tmp_path: Path) -> None:
    @workflow
    def hidden(item: str) -> str:
        sleep("1 day")
        return item

    with pytest.raises(InvalidReference, match="defined inside a function"):
        durable_env.start(hidden, "ada")
    with pytest.raises(InvalidReference, match="defined inside a function"):
        start(hidden, "ada", dir=str(tmp_path))
    assert not list(tmp_path.rglob("*.jsonl"))  # no run was made, neither in the kit nor outside
