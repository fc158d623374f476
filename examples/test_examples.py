"""Testing workflows with the test kit: a week-long workflow and an approval, in milliseconds.

`durable_env` is a pytest fixture that durable-cli installs: a private memory store and a virtual
clock that moves only when the test calls `advance`.
"""

from examples.approval import request_approval
from examples.flaky import fetch_report
from examples.refine import refine


def test_refine_asks_for_feedback_a_week_after_publishing(durable_env):
    run = durable_env.start(refine, "doc-1")
    assert run.status == "sleeping"
    durable_env.advance("6 days")
    assert durable_env.get_run(run.run_id).status == "sleeping"
    durable_env.advance("1 day")
    assert durable_env.get_run(run.run_id).result == ["published doc-1", "feedback requested for doc-1"]


def test_approval_is_recorded_when_the_approver_answers(durable_env):
    run = durable_env.start(request_approval, "invoice-7")
    assert run.status == "waiting"
    after = durable_env.resume("approval-invoice-7", {"approved": True, "by": "ana"})
    assert after.result == "invoice-7 approved by ana"


def test_approval_expires_after_three_days_without_an_answer(durable_env):
    run = durable_env.start(request_approval, "invoice-8")
    durable_env.advance("3 days")
    assert durable_env.get_run(run.run_id).result == "invoice-8 expired by nobody"


def test_flaky_step_is_retried_without_real_waiting(durable_env):
    run = durable_env.start(fetch_report, "eu")
    assert run.result == {"region": "eu", "attempts": 3}
    [step] = durable_env.steps(run.run_id)
    assert step["attempts"] == 3 and len(step["errors"]) == 2


def test_family_gathers_its_children_after_a_day(durable_env):
    from examples.family import process_batch

    run = durable_env.start(process_batch, ["a", "b"])
    assert run.status == "waiting"
    durable_env.advance("1 day")
    assert durable_env.get_run(run.run_id).result == {"done": ["A", "B"], "failed": 0}
