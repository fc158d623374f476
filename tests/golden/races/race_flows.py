"""The golden race flow: Temporal's `sleep_for_days` sample, whose journal (tests/golden/races/)
was written before losers of `first()` were cancelled. Never change this module's durable calls."""

import os

from durable_cli import define_hook, first, sleep, step, workflow

done = define_hook("done")


@step
async def send_email(n):
    with open(os.environ["GOLDEN_EMAILS"], "a") as log:
        log.write(f"email {n}\n")
    return n


@workflow
async def sleep_for_days(token):
    events = done.create(token=token)
    rounds = 0
    while True:
        rounds += 1
        await send_email(rounds)
        index, _ = await first(sleep("30 days"), events.next())
        if index == 1:
            return rounds
