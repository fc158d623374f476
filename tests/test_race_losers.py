"""A loser of `first()` never takes a hook payload (issue 14 item 15).

The workflow is a literal port of Temporal's `sleep_for_days` sample: each round sends an email,
then races a 30-day sleep against the hook's next payload, and stops on the payload. The losing
`hook.next()` of each round is cancelled (journaled as `hook_next` with `cancelled: true`), so the
payload sent later goes to the round waiting now, and a replay cancels the same loser at the same
point. The sync port waits with `hook.next(timeout=...)`, the sync way to race a payload against time.
"""

from __future__ import annotations

import pytest

from project import Project, later

FLOWS = '''
from durable_cli import define_hook, first, sleep, step, workflow

done = define_hook("done")


@step
def send_email(n):
    note(f"email {n}")
    return n


@step
async def send_email_async(n):
    note(f"email {n}")
    return n


@workflow
async def sleep_for_days_async(token):
    events = done.create(token=token)
    rounds = 0
    while True:
        rounds += 1
        await send_email_async(rounds)
        index, _ = await first(sleep("30 days"), events.next())
        if index == 1:
            return rounds


@workflow
def sleep_for_days(token):
    events = done.create(token=token)
    rounds = 0
    while True:
        rounds += 1
        send_email(rounds)
        if events.next(timeout="30 days") is not None:
            return rounds
'''


@pytest.fixture(params=["files", "postgres"])
def project(tmp_path, request):
    store = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return Project(tmp_path, "flows", FLOWS, store=store, in_process=True)


@pytest.mark.parametrize("fn", ["sleep_for_days_async", "sleep_for_days"])
def test_the_signal_stops_the_sleep_for_days_loop_after_a_round_lost_to_the_sleep(project, fn):
    run = project.run(fn, "stop-1")
    assert run["status"] == "waiting"
    code, doc, err = project.json("tick", "--now", later(days=31))  # round 1's sleep wins
    assert code == 0, err
    assert project.log() == ["email 1", "email 2"]

    code, doc, err = project.resume("stop-1", {"stop": True})  # the signal, during round 2
    assert code == 0, err
    assert doc["status"] == "completed", doc
    assert project.result(run["run_id"]) == 2

    code, doc, err = project.json("tick", "--now", later(days=100))
    assert code == 0, err
    assert project.log() == ["email 1", "email 2"]  # no email after the signal


def test_the_losing_hook_wait_is_journaled_as_cancelled_and_takes_no_payload(project):
    run = project.run("sleep_for_days_async", "stop-2")
    assert project.json("tick", "--now", later(days=31))[0] == 0
    assert project.resume("stop-2", {"stop": True})[0] == 0
    nexts = [e for e in project.events(run["run_id"]) if e["type"] == "hook_next"]
    assert [(e.get("cancelled"), e.get("n")) for e in nexts] == [(True, None), (None, 1)]
    timeline = project.inspect(run["run_id"])["timeline"]
    assert [e["status"] for e in timeline if e["kind"] == "wait"] == ["cancelled", "payload 1"]
