"""Hooks inside a run: creating a token, and iterating the payloads delivered to it.

`create` journals the token (a random one unless given) and claims it in the store, so no other
live run can hold it. Each `next` is a wait at its own position whose outcome (the Nth payload,
or a deadline) is journaled, so replays hand out the same payloads in the same order.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta
from typing import Any, Callable

from ..errors import TokenInUse
from .._timeparse import iso, parse_duration, parse_instant
from .execution import Execution
from .posting import check_token
from .scheduler import park, turn
from .waits import TIMED_OUT, HookWait, block


class HookEvents:
    """The payloads of one hook in one run: iterate it (`for`/`async for`) or call `next()`."""

    def __init__(self, ex: Execution, name: str, token: str, deadline: datetime | None,
                 webhook: dict[str, Any] | None = None, wrap: Callable[[Any], Any] | None = None) -> None:
        self._ex = ex
        self._wrap = wrap
        self.name = name
        self.token = token
        self.deadline = deadline
        self.webhook = webhook
        self.consumed = 0
        self.ended = False

    @property
    def url(self) -> str:
        """The URL that delivers to this hook through `durable serve` (webhooks only)."""
        if not self.webhook:
            raise AttributeError("only webhooks (create_webhook()) have a url")
        return str(self.webhook["url"])

    def take(self, payload_event: dict[str, Any]) -> Any:
        """Hand out the next delivered payload (the engine calls this)."""
        self.consumed += 1
        payload = payload_event["payload"]
        return self._wrap(payload) if self._wrap is not None else payload

    def time_out(self, ended: bool) -> Any:
        """A wait that hit its deadline; `ended` when it was the hook's own (the engine calls this)."""
        self.ended = self.ended or ended
        return TIMED_OUT

    def _wait(self, timeout: object) -> tuple[int, Any, HookWait | None]:
        ex = self._ex
        pos, op = ex.begin("wait", self.name)
        if op is not None and op.completion is not None:
            return pos, op.completion, None
        started = op.first("hook_wait") if op is not None else None
        due = self.deadline
        if started is not None:
            due = parse_instant(started["until"]) if started.get("until") else None
        elif timeout is not None:
            mine = ex.clock() + timedelta(seconds=parse_duration(timeout))
            due = mine if due is None or mine < due else due
            ex.record("hook_wait", pos=pos, name=self.name, token=self.token, until=iso(due))
        return pos, None, HookWait(pos, due, self)

    def _replayed(self, completion: dict[str, Any]) -> Any:
        if completion.get("cancelled"):
            raise asyncio.CancelledError()  # it lost a race (`first`) and took no payload
        if completion.get("timed_out"):
            return self.time_out(bool(completion.get("ended")))
        return self.take(self._ex.history.payloads[self.token][completion["n"] - 1])

    def _next_sync(self, timeout: object) -> Any:
        if self.ended:
            return TIMED_OUT
        pos, completion, wait = self._wait(timeout)
        if completion is not None:
            return self._replayed(completion)
        assert wait is not None
        return block(self._ex, wait)

    async def _next_async(self, timeout: object) -> Any:
        if self.ended:
            return TIMED_OUT
        pos, completion, wait = self._wait(timeout)
        if completion is not None:
            await turn(pos)
            return self._replayed(completion)
        assert wait is not None
        return await park(wait)

    def next(self, timeout: object = None) -> Any:
        """The next payload, or None once the deadline (`timeout` or the hook's) passes first."""
        if self._ex.definition.is_async:
            return self._next_or_none_async(timeout)
        value = self._next_sync(timeout)
        return None if value is TIMED_OUT else value

    async def _next_or_none_async(self, timeout: object) -> Any:
        value = await self._next_async(timeout)
        return None if value is TIMED_OUT else value

    def __iter__(self) -> HookEvents:
        return self

    def __next__(self) -> Any:
        value = self._next_sync(None)
        if value is TIMED_OUT:
            raise StopIteration
        return value

    def __aiter__(self) -> HookEvents:
        return self

    async def __anext__(self) -> Any:
        value = await self._next_async(None)
        if value is TIMED_OUT:
            raise StopAsyncIteration
        return value


def create(ex: Execution, name: str, token: str | None, timeout: object,
           webhook: Callable[[str], dict[str, Any]] | None = None,
           wrap: Callable[[Any], Any] | None = None) -> HookEvents:
    """Journal a hook at the next position and claim its token for this run.

    `webhook` makes the hook's journaled `webhook` fields (its URL...) from the token, before the
    token is claimed: it may refuse its options (ValueError), which a replay never asks again (the
    journal holds what was taken); `wrap` turns each payload into what the workflow is handed.
    """
    pos, op = ex.begin("hook", name)
    if op is not None:
        created = op.events[0]
        deadline = parse_instant(created["until"]) if created.get("until") else None
        if ex.store.token_owner(created["token"]) is None:
            ex.store.claim_token(created["token"], ex.run_id)  # the token index is rebuilt from the journal
        return HookEvents(ex, name, created["token"], deadline, created.get("webhook"), wrap)
    token = check_token(token) if token is not None else secrets.token_urlsafe(24)
    fields: dict[str, Any] = {} if webhook is None else {"webhook": webhook(token)}
    owner = ex.store.claim_token(token, ex.run_id)
    if owner is not None and not _finished(ex, owner):
        ex.abort(TokenInUse(f"hook token {token!r} is already held by live run {owner}"))
    if owner is not None:
        ex.store.release_token(token, owner)
        if ex.store.claim_token(token, ex.run_id) is not None:
            ex.abort(TokenInUse(f"hook token {token!r} is already held by another live run"))
    deadline = ex.clock() + timedelta(seconds=parse_duration(timeout)) if timeout is not None else None
    fields = {"until": iso(deadline) if deadline else None, **fields}
    ex.record("hook_created", pos=pos, name=name, token=token, **fields)
    return HookEvents(ex, name, token, deadline, fields.get("webhook"), wrap)


def _finished(ex: Execution, run_id: str) -> bool:
    from ..errors import JournalDamaged, RunNotFound

    try:
        _, last = ex.store.run_summary(run_id)
    except (RunNotFound, JournalDamaged):
        return True
    return last["type"] in ("run_completed", "run_failed", "run_cancelled", "run_timed_out")
