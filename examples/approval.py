"""An approval that waits for a human (a hook), with a deadline after which it expires.

    durable run examples.approval:request_approval '"invoice-7"'
    echo '{"approved": true, "by": "ana"}' | durable resume approval-invoice-7 -
"""

from durable_cli import define_hook, step, workflow

approval = define_hook("approval")


@step
def notify_approver(doc: str, token: str) -> str:
    return f"asked for approval of {doc}: durable resume {token} payload.json"


@step
def record_decision(doc: str, decision: str, by: str) -> str:
    return f"{doc} {decision} by {by}"


@workflow
def request_approval(doc: str) -> str:
    """Wait for one decision on `doc`; after three days without one, the request expires."""
    events = approval.create(token=f"approval-{doc}", timeout="3 days")
    notify_approver(doc, events.token)
    for decision in events:
        verdict = "approved" if decision.get("approved") else "rejected"
        return record_decision(doc, verdict, decision.get("by", "someone"))
    return record_decision(doc, "expired", "nobody")
