"""Step failures as the journal keeps them: any exception is recorded (even one whose text cannot
be encoded or whose `__str__` raises), and reaches the workflow as its own class with its
arguments, on both stores."""

from __future__ import annotations

import os

import pytest

from durable_cli import ChildFailed, FatalError, get_run, start, start_child, step, workflow
from durable_cli._engine.outcomes import error_info, rebuild
from durable_cli._store import opened

ATTEMPTS: list[str] = []


@pytest.fixture(autouse=True)
def _clean():
    ATTEMPTS.clear()


@pytest.fixture(params=["files", "postgres"])
def where(request, tmp_path):
    """Where `start()` keeps its runs: a journal dir, or a PostgreSQL database."""
    if request.param == "files":
        return {"dir": str(tmp_path / "journals")}
    return {"store": request.getfixturevalue("pg_url")}


def events(where, run_id):
    with opened(**where) as store:
        return store.read_events(run_id)


class PaymentDeclined(Exception):
    """An exception whose constructor takes other arguments than one message."""

    def __init__(self, code: str, amount: int) -> None:
        super().__init__(code, amount)
        self.code = code
        self.amount = amount


class OutOfStock(FatalError):
    """Its message is not its arguments: `__reduce__` says how to make it again."""

    def __init__(self, sku: str, left: int) -> None:
        super().__init__(f"{sku}: only {left} left")
        self.sku, self.left = sku, left

    def __reduce__(self):
        return OutOfStock, (self.sku, self.left)


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


NAME = os.fsdecode(b"caf\xe9.txt")  # a non-UTF-8 file name as os.listdir returns it: a lone surrogate


@step(max_retries=2, retry_delay="1ms")
def reads_a_badly_named_file() -> None:
    ATTEMPTS.append("read")
    raise ValueError(f"cannot read {NAME}")


@step(max_retries=2, retry_delay="1ms")
def has_no_words() -> None:
    ATTEMPTS.append("broken")
    raise BrokenStr()


@workflow
def survives(which: str) -> list[str]:
    try:
        (reads_a_badly_named_file if which == "name" else has_no_words)()
    except Exception as exc:
        return [type(exc).__name__, exc.args[0] if exc.args else ""]
    return []


@pytest.mark.parametrize("which", ["name", "broken"])
def test_a_step_error_that_cannot_be_encoded_is_recorded_and_retried_exactly_as_planned(where, which):
    run = start(survives, which, **where)
    assert len(ATTEMPTS) == 3  # max_retries=2: three attempts, never a fourth on replay
    assert run.status == "completed"
    failures = [e for e in events(where, run.run_id) if e["type"] == "step_failed"]
    assert [f["attempt"] for f in failures] == [1, 2, 3] and failures[-1]["final"]
    if which == "name":
        assert run.result == ["ValueError", "cannot read caf\\udce9.txt"]
    else:
        assert run.result == ["BrokenStr", ""]
        assert failures[0]["error"]["message"] == "test_step_errors.BrokenStr"


@step(max_retries=0)
def charge(card: str) -> None:
    raise PaymentDeclined(card, 42)


@step
def reserve(sku: str) -> None:
    raise OutOfStock(sku, 3)


@workflow
def checkout(card: str) -> list[object]:
    try:
        charge(card)
    except PaymentDeclined as declined:
        paid = [declined.code, declined.amount]
    try:
        reserve("sku-1")
    except OutOfStock as out:
        return [*paid, out.sku, out.left, str(out)]
    return paid


def test_an_exception_with_several_arguments_reaches_the_workflow_as_itself(where):
    run = start(checkout, "card-7", **where)
    assert (run.status, run.result) == ("completed", ["card-7", 42, "sku-1", 3, "sku-1: only 3 left"])
    errors = [e["error"] for e in events(where, run.run_id) if e["type"] == "step_failed"]
    assert [e.get("args") for e in errors] == [["card-7", 42], ["sku-1", 3]]


@workflow
def declines(card: str) -> None:
    charge(card)


@workflow
def parent_of_a_declined_child(card: str) -> list[object]:
    child = start_child(declines, card)
    try:
        child.result()
    except ChildFailed as failed:
        cause = failed.__cause__
        assert isinstance(cause, PaymentDeclined)
        return [failed.run_id == child.run_id, failed.error_type, failed.error_args, cause.code, cause.amount]
    return []


def test_a_childs_failure_reaches_the_parent_with_its_fields_and_its_exception(where):
    run = start(parent_of_a_declined_child, "card-9", **where)
    assert run.status == "completed", run
    assert run.result == [True, "test_step_errors.PaymentDeclined", ["card-9", 42], "card-9", 42]


def test_child_failed_keeps_its_fields_across_a_step_boundary():
    again = rebuild(error_info(ChildFailed("run-1", "KeyError", "'x'", ["x"])))
    assert isinstance(again, ChildFailed)
    assert (again.run_id, again.error_type, again.error_message, again.error_args) == ("run-1", "KeyError", "'x'", ["x"])


def test_a_record_without_args_is_read_as_before():
    """Journals written before `args` existed: the class is re-created from its message."""
    assert repr(rebuild({"type": "KeyError", "message": "x"})) == "KeyError('x')"
    assert type(rebuild({"type": "test_step_errors.PaymentDeclined", "message": "x"})).__name__ == "StepFailed"
