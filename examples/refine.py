"""A workflow that sleeps for seven days between two steps; no process waits meanwhile.

    durable run examples.refine:refine '"doc-1"'
    durable tick --now 2030-01-01T00:00:00Z     # or wait a week and let cron tick
"""

from durable_cli import sleep, step, workflow


@step
def publish(doc: str) -> str:
    return f"published {doc}"


@step
def ask_for_feedback(doc: str) -> str:
    return f"feedback requested for {doc}"


@workflow
def refine(doc: str) -> list[str]:
    """Publish, sleep a week (the run is suspended, the process exits), then ask for feedback."""
    first = publish(doc)
    sleep("7 days")
    return [first, ask_for_feedback(doc)]
