"""The workflows the golden journals in tests/golden/kinds/journals were written by, one per kind of
history (tests/test_golden_kinds.py resumes each to its end against this module). Never change
their durable calls: a change here that breaks a journal is exactly what the tests must catch.

Environment switches used only while the journals were written (tests/golden/kinds/write_kinds.py):
GOLDEN_FAIL makes `flaky` fail once, GOLDEN_CRASH kills the process inside `fragile`.
"""

import asyncio
import os
import signal

from durable_cli import (FatalError, RetryableError, create_webhook, define_hook, first, get_writable, patched,
                         sleep, start_child, step, workflow, workflow_now, workflow_random, workflow_uuid)

done = define_hook("done")
approval = define_hook("approval")


@step
async def slow(x):
    await asyncio.sleep(0.2)
    return x * 10


@step
async def fast(x):
    return x + 100


@workflow
async def gathered():
    """Two steps in a gather, the second completing first; then a sleep and one more step."""
    a, b = await asyncio.gather(slow(1), fast(2))
    await sleep("1h")
    return [a, b, await fast(3)]


@workflow
async def raced():
    """A hook payload wins a race against a sleep; the next race is lost by the hook (a deadline)."""
    events = done.create(token="golden-race")
    won = await first(sleep("1h"), events.next())
    again = await first(sleep("1h"), events.next())
    return [won, again[0]]


@workflow
def deadline():
    """A hook whose deadline passes with no payload; then a sleep."""
    got = [payload for payload in approval.create(token="golden-deadline", timeout="1h")]
    sleep("1h")
    return ["timed out", got]


@step
def triple(x):
    return x * 3


@workflow
def kid(x):
    y = triple(x)
    sleep("1h")
    return y


@workflow
def parent(x):
    """A child that sleeps while its parent waits for its result."""
    handle = start_child(kid, x)
    result = handle.result()
    return [handle.run_id, result]


@step(max_retries=0)
def broken():
    raise FatalError("broken for good")


@step(retry_delay="1h")
def flaky(x):
    if os.environ.get("GOLDEN_FAIL"):
        raise RetryableError("not yet", retry_after="1h")
    return x + 1


@workflow
def retried(x):
    """A step that failed for good (caught), and one waiting for its retry."""
    try:
        broken()
        caught = ""
    except Exception as exc:
        caught = f"{type(exc).__name__}: {exc}"
    return [caught, flaky(x)]


@step
def fragile(x):
    if os.environ.get("GOLDEN_CRASH"):
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 2


@workflow
def recovered(x):
    """A run whose process was killed inside a step and that a tick recovered."""
    y = fragile(x)
    sleep("1h")
    return y


@step
def tax(x):
    return x // 5


@workflow
def taxed(x):
    """A run that took the patched branch, then slept."""
    t = tax(x) if patched("v2-tax") else 0
    sleep("1h")
    return x + t


@workflow
def values():
    """workflow_now, workflow_random and workflow_uuid: the same on every replay."""
    now = workflow_now()
    luck = workflow_random()
    ident = workflow_uuid()
    sleep("1h")
    return [now.isoformat(), luck, str(ident)]


@workflow
def hooked():
    """A webhook waiting for its request."""
    for request in create_webhook(token="golden-webhook"):
        return request["json"]


@step
def produce(n):
    out = get_writable("progress")
    for i in range(n):
        out.write(f"line {i}")
    return n


@workflow
def streamed(n):
    """A step that wrote to an output stream; then a sleep."""
    count = produce(n)
    sleep("1h")
    return count


@workflow
def scheduled():
    """Started by a schedule; sleeps."""
    sleep("1h")
    return "nightly done"


@step
def charge(x):
    return x


@workflow
def blocked(x):
    """Blocked by a deploy that swapped its step and sleep (the journal); this code is the fix."""
    amount = charge(x)
    sleep("1h")
    return amount
