"""A parent workflow that fans out to child workflows and gathers their results.

    durable run examples.family:process_batch '["a", "b", "c"]'
    durable tick --now 2030-01-01T00:00:00Z
"""

import asyncio

from durable_cli import ChildFailed, sleep, start_child, step, workflow


@step
def process(item: str) -> str:
    return item.upper()


@workflow
async def process_item(item: str) -> str:
    """A child: waits a day (a rate limit, say), then processes its item."""
    await sleep("1 day")
    return process(item)


@workflow
async def process_batch(items: list[str]) -> dict[str, object]:
    """Start one child per item (each starts at once), then wait for all of them."""
    children = [start_child(process_item, item) for item in items]
    results = await asyncio.gather(*(child.result() for child in children), return_exceptions=True)
    done = [r for r in results if not isinstance(r, ChildFailed)]
    return {"done": done, "failed": len(results) - len(done)}
