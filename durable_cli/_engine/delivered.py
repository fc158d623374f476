"""What became of a hook payload posted from outside a workflow (`Delivery`, what `resume_hook`
returns), and the post followed by its run continuing here when it is free (`deliver_payload`).
Apart from `posting`, so that `durable resume --enqueue`, which only posts, loads no dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._errors_core import RunBusy
from .posting import post_payload

if TYPE_CHECKING:
    from .._store.base import Store
    from .execution import Clock
    from .run import Options, Run


@dataclass
class Delivery:
    """What became of a payload: delivered (`run` is the run after it went on), queued, or a repeat."""

    token: str
    run_id: str
    status: Literal["delivered", "queued", "duplicate"]
    run: Run | None = None


def deliver_payload(store: Store, token: str, payload: Any, key: str | None, enqueue: bool,
                    clock: Clock, options: Options) -> Delivery:
    """Put a payload for `token` in the inbox durably (`post_payload`), then, unless `enqueue`,
    continue its run here if it is free."""
    posted = post_payload(store, token, payload, key, clock, options.payload_limit)
    if enqueue or posted.status == "duplicate":
        return Delivery(token, posted.run_id, posted.status)
    from .lifecycle import drive  # here: `--enqueue` posts without importing the engine

    try:
        run = drive(store, posted.run_id, clock, options)
    except RunBusy:
        return Delivery(token, posted.run_id, posted.status)
    if run.status == "blocked" and not run.executed:
        return Delivery(token, posted.run_id, "queued", run)  # it waits in the inbox until `durable retry`
    return Delivery(token, posted.run_id, "delivered", run)
