"""The workflow module the golden journals in tests/golden/journals were written by (keep it as is:
tests/test_golden.py replays those journals against it and against edited copies of it)."""

from durable_cli import define_hook, sleep, step, workflow

approval = define_hook("approval")


@step
def add_one(x):
    return x + 1


@step
def double(x):
    return x * 2


@workflow
def golden(n):
    x = add_one(n)
    sleep("1h")
    y = double(x)
    for payload in approval.create(token=f"golden-{n}"):
        return [x, y, payload["v"]]
