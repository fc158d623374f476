"""Moving inbox messages into a run's journal, each exactly once, under the run's claim.

A message is journaled with its id before it is dropped from the inbox, so a crash between the
two re-reads it, finds the id in the journal and only drops it. A message that cannot be
delivered is set aside (`rejected/`) with its reason; it never stops the run or the tick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors_core import InvalidPayload
from .._payloads import DEFAULT_LIMIT, check_value
from .._timeparse import parse_instant
from .history import History

if TYPE_CHECKING:
    from .execution import Execution


def child_finished(message: dict[str, Any], message_id: str) -> dict[str, Any]:
    """The fields of the `child_finished` line that journals a child's outcome message (from the
    parent's inbox, or handed over in-process by a child its parent drives)."""
    return {"child_run_id": message["child_run_id"], "status": message.get("status"),
            "result": message.get("result"), "error": message.get("error"),
            "sent_at": message["sent_at"], "message_id": message_id}


def hook_ended(history: History, token: str) -> bool:
    """Whether the hook holding `token` has passed its deadline (it takes no more payloads)."""
    return any(
        op.completion.get("ended")
        for op in history.ops.values()
        if op.kind == "wait" and op.completion and op.completion.get("token") == token
    )


def _problem(ex: Execution, message: dict[str, Any]) -> str | None:
    """Why `message` cannot be delivered to this run, or None."""
    kind = message.get("kind")
    if ex.history.finished:
        return f"run {ex.run_id} has finished"
    if kind == "hook":
        token = message.get("token")
        if not isinstance(token, str) or "payload" not in message:
            return "a hook message needs a token and a payload"
        if not isinstance(message.get("key"), (str, type(None))):
            return "a hook message's key must be a string"
        if token not in ex.history.tokens():
            return f"run {ex.run_id} does not hold token {token!r}"
        try:
            check_value(message["payload"], getattr(ex.options, "payload_limit", DEFAULT_LIMIT))
        except InvalidPayload as exc:
            return str(exc)
        if hook_ended(ex.history, token):
            return f"the hook with token {token!r} has passed its deadline"
    elif kind == "child":
        if not isinstance(message.get("child_run_id"), str):
            return "a child message needs a child_run_id"
    elif kind == "wake":
        target = message.get("target")
        if not isinstance(target, dict) or not isinstance(target.get("pos"), int) or not isinstance(target.get("until"), str):
            return "a wake message needs a target with pos and until"
    else:
        return f"unknown message kind {kind!r}"
    try:
        parse_instant(str(message.get("sent_at")))
    except ValueError:
        return "a message needs sent_at, an ISO 8601 time"
    return None


def deliver(ex: Execution) -> bool:
    """Journal every deliverable message waiting for the run; True when any was journaled."""
    messages = ex.store.messages(ex.run_id)
    if not messages:
        return False
    done: list[str] = []
    for message_id, message in messages:
        if isinstance(message, str):
            ex.store.reject(ex.run_id, message_id, message)
            continue
        if message_id in ex.history.message_ids or (
                message.get("kind") == "child" and message.get("child_run_id") in ex.history.children):
            done.append(message_id)  # journaled already (a child's outcome may be sent twice)
            continue
        problem = _problem(ex, message)
        if problem is not None:
            ex.store.reject(ex.run_id, message_id, problem)
            continue
        if message["kind"] == "hook":
            key = message.get("key")
            if key is not None and key in ex.history.keys(message["token"]):
                done.append(message_id)
                continue
            fields = {"token": message["token"], "payload": message["payload"],
                      "sent_at": message["sent_at"], "key": key, "message_id": message_id}
            event_type = "hook_payload"
        elif message["kind"] == "wake":
            fields = {"target": {"pos": message["target"]["pos"], "until": message["target"]["until"]},
                      "sent_at": message["sent_at"], "message_id": message_id}
            event_type = "run_woken"
        else:
            fields = child_finished(message, message_id)
            event_type = "child_finished"
        try:
            ex.record(event_type, **fields)
        except (TypeError, ValueError, RecursionError) as exc:
            # a journal line cannot hold it (a lone surrogate in a key...): staging took no seq
            ex.store.reject(ex.run_id, message_id, f"the message cannot be journaled: {exc}")
            continue
        done.append(message_id)
    delivered = ex.session.has_pending
    ex.flush()
    for message_id in done:
        ex.store.ack(ex.run_id, message_id)
    return delivered
