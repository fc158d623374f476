"""Workflows of the issue-20 golden journals (tests/golden/ops20): published events, tags, a woken
sleep, a chain continued as new, and a fork."""

import os

from durable_cli import FatalError, continue_as_new, set_event, set_tags, sleep, step, workflow


@step
def double(x):
    return x * 2


@workflow
def publishing(x):
    set_event("progress", 1)
    set_tags({"stage": "first"})
    sleep("1h")          # woken early by `durable wake`
    y = double(x)
    set_event("progress", 2)
    sleep("2h")          # the golden journal stops here
    set_tags({"stage": "done"})
    return y


@workflow
def looping(i=0):
    sleep("1 min")
    double(i)
    if i < 2:
        continue_as_new(i + 1)
    return i


@step(max_retries=0)
def checked(x):
    if os.environ.get("GOLDEN_BROKEN"):
        raise FatalError("broken")
    return x + 1


@workflow
def forkable(x):
    a = double(x)
    return checked(a)
