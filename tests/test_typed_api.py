"""Issue 16, a typed API: `mypy --strict` over user code that imports durable_cli.

Two user modules are type-checked in one mypy run (a subprocess, outside the package): one that
uses every public name correctly must be clean, one with deliberate mistakes must get exactly the
errors a user needs to see.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

import durable_cli

# `{every_public_name}` is filled in with durable_cli.__all__ when the module is written.
GOOD = '''
from __future__ import annotations

import uuid
from datetime import datetime

from durable_cli import (
    {every_public_name}
)
from durable_cli.testing import DurableTestEnv

approval: Hook = define_hook("approval")


@step
def charge(invoice: str, amount: int) -> dict[str, int]:
    meta: StepMetadata = get_step_metadata()
    writer: StreamWriter = get_writable("progress")
    writer.write({"step": meta.step_id, "attempt": meta.attempt})
    return {"amount": amount}


@step(max_retries=2, retry_delay="1s")
def refund(invoice: str) -> None:
    raise FatalError("cards cannot be refunded")


@workflow
def child(item: str) -> str:
    return item


@workflow(name="bill")
def bill(invoice: str, amount: int = 1) -> str:
    receipt: dict[str, int] = charge(invoice, amount)
    sleep("7 days")
    events: HookEvents = approval.create(token=f"approval-{invoice}", timeout="3 days")
    for decision in events:
        logger.info("decision %s", decision)
    hook: HookEvents = create_webhook(respond_with={"status": 200})
    url: str = hook.url
    ident: uuid.UUID = workflow_uuid()
    now: datetime = workflow_now()
    chance: float = workflow_random()
    meta: WorkflowMetadata = get_workflow_metadata()
    handle: ChildHandle = start_child(child, "item")
    try:
        handle.result()
    except ChildFailed as exc:
        logger.warning("child %s failed: %s", exc.run_id, exc.error_message)
    if patched("v2"):
        refund(invoice)
    return f"{receipt} {url} {ident} {now} {chance} {meta.run_id}"


@workflow
async def async_bill(invoice: str) -> str:
    await sleep("1h")
    async for payload in approval.create():
        return str(payload)
    index, value = await first(sleep("1h"))
    return f"{invoice} {index} {value}"


as_def: WorkflowDef[[str, int], str] = bill
as_step: StepDef[[str, int], dict[str, int]] = charge


def caller() -> TickSummary:
    run: Run = start(bill, "inv-1", 3)
    again: Run = start(async_bill, "inv-2", run_id="inv-2")
    elsewhere: Run = start(bill, "inv-3", dir="/tmp/journals")
    status: RunStatus = run.status
    if status == "completed" and again.status == "sleeping" and elsewhere.result is not None:
        print(run.result)
    delivery: Delivery = resume_hook("approval-inv-1", {"approved": True}, key="k")
    approval.resume("approval-inv-2", {"approved": False})
    chunks: list[dict[str, object]] = read_stream(run.run_id, "progress")
    for run_id in (get_run(run.run_id).run_id, cancel(again.run_id).run_id, retry(run.run_id).run_id):
        print(run_id, delivery.status, chunks)
    try:
        start(bill, "inv-4", run_id="inv-4")
    except (InvalidArguments, InvalidPayload, InvalidReference, RunBusy, RunConflict, RunExists,
            RunNotFound, ConfigError, StoreError, TokenInUse, UnknownToken, JournalDamaged,
            NonDeterminismError, StepCrashed, StepFailed, DurableError) as exc:
        print(exc)
    except RetryableError as exc:
        print(exc.retry_after)
    summary: TickSummary = tick(now=workflow_now())
    return summary


def test_bill(durable_env: DurableTestEnv) -> None:
    run: Run = durable_env.start(bill, "inv-5", amount=2)
    durable_env.advance("7 days")
    assert durable_env.get_run(run.run_id).status in ("completed", "waiting")
'''

MISTAKES = '''
from __future__ import annotations

from durable_cli import RunStatus, start, start_child, step, workflow, workflow_uuid
from durable_cli import no_such_name
from durable_cli.testing import DurableTestEnv


@step
def charge(invoice: str, amount: int) -> int:
    return amount


@workflow
def bill(invoice: str) -> int:
    return charge(invoice, "ten")


@workflow
async def async_bill(invoice: str) -> int:
    start_child(bill, 7)
    return 1


def caller() -> None:
    start(bill)
    start(bill, "inv", "extra")
    start(async_bill, invoice=3)
    ident: int = workflow_uuid()
    status: RunStatus = "done"
    DurableTestEnv().start(bill, 5)
'''


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """mypy --strict over both user modules: each module's error lines (`line: message [code]`)."""
    home = tmp_path_factory.mktemp("user_code")
    names = ", ".join(durable_cli.__all__)  # every name, so a new export is checked as well
    (home / "good.py").write_text(textwrap.dedent(GOOD).replace("{every_public_name}", names))
    (home / "mistakes.py").write_text(textwrap.dedent(MISTAKES))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--show-error-codes",
         "--no-error-summary", "good.py", "mistakes.py"],
        cwd=home, capture_output=True, text=True, timeout=300,  # mypy finds the installed package
    )
    errors: dict[str, list[str]] = {"good.py": [], "mistakes.py": []}
    for line in done.stdout.splitlines():
        found = re.match(r"(\w+\.py):(\d+): error: (.*)", line)
        if found:
            errors[found[1]].append(f"{found[2]}: {found[3]}")
    assert done.returncode in (0, 1), done.stderr
    return errors


def test_user_code_using_every_public_name_type_checks_strictly(mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors["good.py"] == []


def test_the_user_module_uses_the_types_the_api_returns() -> None:
    for name in ("HookEvents", "ChildHandle", "StepMetadata", "WorkflowMetadata", "TickSummary",
                 "StreamWriter", "RunStatus", "Delivery", "Run"):
        assert re.search(rf": {name}\b", GOOD), name


def _line(snippet: str, text: str = MISTAKES) -> int:
    return textwrap.dedent(text).splitlines().index(snippet) + 1


def test_mypy_reports_each_deliberate_mistake(mypy_errors: dict[str, list[str]]) -> None:
    errors = "\n".join(mypy_errors["mistakes.py"])
    expected = {
        "from durable_cli import no_such_name": r'Module "durable_cli" has no attribute "no_such_name"',
        '    return charge(invoice, "ten")': r'Argument 2 to "__call__" of "StepDef" has incompatible type "str"; expected "int"',
        # start_child has two overloads since it takes queue= (issue 19): mypy names neither's argument
        "    start_child(bill, 7)": r'No overload variant of "start_child" matches argument types',
        "    start(bill)": r'No overload variant of "start" matches argument type',
        '    start(bill, "inv", "extra")': r'No overload variant of "start" matches argument types',
        "    start(async_bill, invoice=3)": r'No overload variant of "start" matches argument type',
        "    ident: int = workflow_uuid()": r'Incompatible types in assignment \(expression has type "UUID"',
        '    status: RunStatus = "done"': r'Incompatible types in assignment \(expression has type "Literal\[\'done\'\]"',
        "    DurableTestEnv().start(bill, 5)": r'No overload variant of "start" of "DurableTestEnv" matches',
    }
    for snippet, message in expected.items():
        assert re.search(rf"^{_line(snippet)}: {message}", errors, re.M), (snippet, errors)
    assert len(mypy_errors["mistakes.py"]) == len(expected), errors


def test_the_names_are_still_loaded_lazily() -> None:
    """`import durable_cli` (what the `durable` command does first) imports none of the engine."""
    code = "import sys, durable_cli; print(sorted(m for m in sys.modules if m.startswith('durable_cli')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['durable_cli']"
    assert durable_cli.start.__module__ == "durable_cli._client"
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(durable_cli, "no_such_name")


def test_run_status_names_every_status_a_journal_can_end_in() -> None:
    from typing import get_args

    from durable_cli._status import FINISHED

    assert FINISHED <= set(get_args(durable_cli.RunStatus))
    assert {"running", "sleeping", "waiting"} <= set(get_args(durable_cli.RunStatus))
