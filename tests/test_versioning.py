"""Issue 6, part 3: changing code under in-flight runs. `patched()` across a real code change between
`durable run` and `durable tick`, and `durable retry` of a run that failed on a determinism error or
a final step failure, once the code is fixed, keeping its journal.
"""

from __future__ import annotations

import pytest

from project import Project

STEPS = '''
from durable_cli import patched, sleep, step, workflow


@step
{a}def charge(x):
    note("charge")
    return x


@step
{a}def tax(x):
    note("tax")
    return x // 5


@step
{a}def total(x, t):
    return x + t
'''

# Templates: {a}/{w} make the async twin ("async ", "await "); steps are async there too.
V1 = STEPS + '''
@workflow
{a}def bill(x):
    amount = {w}charge(x)
    {w}sleep("7 days")
    return {w}total(amount, 0)
'''

PATCH_BEFORE_SLEEP = STEPS + '''
@workflow
{a}def bill(x):
    amount = {w}charge(x)
    t = ({w}tax(amount)) if patched("v2-tax") else 0
    {w}sleep("7 days")
    return {w}total(amount, t)
'''

PATCH_AFTER_SLEEP = STEPS + '''
@workflow
{a}def bill(x):
    amount = {w}charge(x)
    {w}sleep("7 days")
    t = ({w}tax(amount)) if patched("v2-tax") else 0
    return {w}total(amount, t)
'''

RENAMED_STEP = STEPS + '''
@step
{a}def refund(x):
    return -x


@workflow
{a}def bill(x):
    amount = {w}refund(x)
    {w}sleep("7 days")
    return {w}total(amount, 0)
'''

SHIP_BROKEN = STEPS + '''
@step(max_retries=0)
{a}def ship(x):
    note("ship")
    raise RuntimeError("carrier down")


@workflow
{a}def order(x):
    amount = {w}charge(x)
    return {w}ship(amount)
'''

SHIP_FIXED = SHIP_BROKEN.replace('raise RuntimeError("carrier down")', 'return f"shipped {{x}}"')

VARIANTS = {"sync": {"a": "", "w": ""}, "async": {"a": "async ", "w": "await "}}


@pytest.fixture(params=list(VARIANTS))
def code(request):
    """Formats a module template as its sync or async variant."""
    return lambda template: template.format(**VARIANTS[request.param])


@pytest.fixture(params=["files", "postgres"])
def project(tmp_path, request):
    """The same tests on a journal dir and on PostgreSQL: the determinism check is the store's too."""
    store = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return Project(tmp_path, "billing", store=store, in_process=True)


def test_patched_is_false_for_a_run_replaying_history_from_before_the_change_and_true_for_new_runs(project, code):
    project.write(code(V1))
    old = project.run("bill", "100")
    assert old["status"] == "sleeping"
    project.write(code(PATCH_BEFORE_SLEEP))
    new = project.run("bill", "100")
    assert new["status"] == "sleeping"
    assert [e["name"] for e in project.events(new["run_id"]) if e["type"] == "patched"] == ["v2-tax"]
    project.tick(days=8)
    assert project.result(old["run_id"]) == 100
    assert project.result(new["run_id"]) == 120  # patched stayed True on replay
    assert not any(e["type"] == "patched" for e in project.events(old["run_id"]))
    assert project.log() == ["charge", "charge", "tax"]


def test_patched_is_true_for_a_sleeping_run_that_reaches_it_on_new_code(project, code):
    project.write(code(V1))
    run = project.run("bill", "100")
    project.write(code(PATCH_AFTER_SLEEP))
    project.tick(days=8)
    doc = project.inspect(run["run_id"])
    assert (doc["status"], doc["result"]) == ("completed", 120)
    assert [e["type"] for e in doc["events"]].count("patched") == 1


def test_retry_resumes_a_run_blocked_on_a_determinism_error_once_the_code_is_fixed(project, code):
    project.write(code(V1))
    run = project.run("bill", "100")
    run_id = run["run_id"]
    project.write(code(RENAMED_STEP))
    project.tick(days=8)
    blocked = project.inspect(run_id)
    assert blocked["status"] == "blocked" and blocked["error"]["type"].endswith("NonDeterminismError")
    assert "step 'charge'" in blocked["error"]["message"] and "step 'refund'" in blocked["error"]["message"]
    before = project.events(run_id)
    code_, doc, err = project.json("retry", run_id)
    assert code_ == 1 and doc["status"] == "blocked"  # still the broken code: blocked the same way
    project.write(code(V1))
    code_, doc, err = project.json("retry", run_id)
    assert code_ == 0, err
    assert doc["status"] == "sleeping"  # the retry ran at the real now: the 7 days are not over
    project.tick(days=8)
    assert project.result(run_id) == 100
    after = project.events(run_id)
    assert after[:len(before)] == before  # the journal is kept, only appended to
    assert "run_retried" in [e["type"] for e in after[len(before):]]
    assert project.log() == ["charge"]


def test_retry_gives_a_step_that_failed_for_good_a_fresh_attempt_on_fixed_code(project, code):
    project.write(code(SHIP_BROKEN))
    code_, doc, err = project.json("run", project.ref("order"), "5")
    assert code_ == 1 and doc["status"] == "failed" and "carrier down" in err
    run_id = doc["run_id"]
    before = project.events(run_id)
    project.write(code(SHIP_FIXED))
    code_, doc, err = project.json("retry", run_id)
    assert code_ == 0, err
    assert (doc["status"], doc["result"]) == ("completed", "shipped 5")
    after = project.events(run_id)
    assert after[:len(before)] == before
    ship = [e for e in after if e.get("name") == "ship" and e["type"] == "step_started"]
    assert [e["attempt"] for e in ship] == [1, 2]
    assert project.log() == ["charge", "ship", "ship"]
    timeline = project.inspect(run_id)["timeline"]
    assert [(e["name"], e["status"]) for e in timeline] == [("charge", "completed"), ("ship", "completed")]


def test_retry_of_a_run_that_has_not_failed_exits_2(project):
    project.write(V1.format(a="", w=""))
    run = project.run("bill", "1")
    code_, out, err = project.cli("retry", run["run_id"])
    assert code_ == 2 and "sleeping" in err and run["run_id"] in err
    assert project.inspect(run["run_id"])["status"] == "sleeping"


def test_retry_of_an_unknown_run_exits_2(project):
    code_, out, err = project.cli("retry", "nobody")
    assert code_ == 2 and "nobody" in err


HOOK_THEN_BROKEN = '''
from durable_cli import define_hook

approval = define_hook("approval")


@step
def check(x):
    raise FatalError("validator down")


@workflow
def review(x):
    for decision in approval.create(token=f"review-{x}"):
        return [decision, check(x)]
'''

HOOK_THEN_FIXED = HOOK_THEN_BROKEN.replace('raise FatalError("validator down")', 'return "checked"')


def test_a_retried_run_still_holds_its_hook_token(project):
    project.write("from durable_cli import FatalError, step, workflow\n" + HOOK_THEN_BROKEN)
    run_id = project.run("review", "7")["run_id"]
    code_, doc, _ = project.resume("review-7", {"ok": True})
    assert (code_, doc["status"]) == (1, "failed")
    project.write("from durable_cli import FatalError, step, workflow\n" + HOOK_THEN_FIXED)
    code_, doc, err = project.json("retry", run_id)
    assert (code_, doc["status"], doc["result"]) == (0, "completed", [{"ok": True}, "checked"]), err
    code_, _, err = project.cli("resume", "review-7", "-", input='{"again": true}')
    assert code_ == 2 and "no live run holds token" in err, "a finished run's token takes no more payloads"
