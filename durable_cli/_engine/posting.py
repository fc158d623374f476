"""Posting a hook payload from outside a workflow durably into the inbox of the run holding its
token (`resume_hook`, `durable resume`, serve); `delivered` continues that run after the post.
No dataclass here: `durable resume --enqueue` posts without loading dataclasses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from .._errors_core import RunNotFound, UnknownToken
from .._payloads import check_text, check_value
from .._timeparse import iso
from .delivery import hook_ended
from .history import History

if TYPE_CHECKING:  # not imported: `durable resume --enqueue` posts without them (dataclasses, queues)
    from typing import Protocol

    from .._store.base import Event
    from .execution import Clock

    class Inbox(Protocol):
        """What posting a payload asks of a store: any `Store`, or the libpq one that `durable
        resume --enqueue` uses on PostgreSQL (`_store.pg_inbox.PostingStore`), which has no more."""

        def token_owner(self, token: str) -> str | None: ...

        def read_events(self, run_id: str) -> list[Event]: ...

        def post_live(self, run_id: str, message: dict[str, Any]) -> str | None: ...


def check_token(token: object) -> str:
    """`token` if it is usable: 1-512 characters, no control characters, valid Unicode."""
    if not isinstance(token, str) or not 0 < len(token) <= 512 or any(
            ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in token):  # a surrogate: not UTF-8
        raise ValueError(f"invalid hook token {token!r}: use 1-512 printable characters")
    return token


class Posted:
    """Where a payload went: `queued` in the inbox of run `run_id`, or a `duplicate` of a key
    delivered before (`delivered.Delivery` is what the client returns)."""

    __slots__ = ("run_id", "status")

    def __init__(self, run_id: str, status: Literal["queued", "duplicate"]) -> None:
        self.run_id = run_id
        self.status: Literal["queued", "duplicate"] = status


def _token_run(store: Inbox, token: str) -> tuple[str, History] | None:
    """The run recorded as holding `token` (finished or not) and its history, if it holds it."""
    try:
        check_token(token)
    except ValueError as exc:
        raise UnknownToken(str(exc)) from None
    owner = store.token_owner(token)
    if owner is None:
        return None
    try:
        history = History(store.read_events(owner))
    except RunNotFound:
        return None
    return (owner, history) if token in history.tokens() else None


def holder_of(store: Inbox, token: str) -> tuple[str, History]:
    """The live run holding `token` and its history, or UnknownToken."""
    return _live(_token_run(store, token), token)


def _live(found: tuple[str, History] | None, token: str) -> tuple[str, History]:
    if found is None:
        raise UnknownToken(f"no live run holds token {token!r}")
    if found[1].finished:
        raise UnknownToken(f"no live run holds token {token!r}: run {found[0]} has {found[1].status}")
    return found


def post_payload(store: Inbox, token: str, payload: Any, key: str | None, clock: Clock,
                 limit: int) -> Posted:
    """Put a payload for `token` in the inbox durably (refused over `limit` bytes): `queued` for
    the run's next drive.

    A repeat of a key already delivered is acknowledged as a duplicate, even once the run finished.
    """
    check_value(payload, limit)
    if key is not None:
        check_text(key, "key")
    found = _token_run(store, token)
    if key is not None and found is not None and key in found[1].keys(token):
        return Posted(found[0], "duplicate")
    run_id, history = _live(found, token)
    if hook_ended(history, token):
        raise UnknownToken(f"the hook with token {token!r} has passed its deadline; the payload was not delivered")
    message = {"kind": "hook", "token": token, "payload": payload, "sent_at": iso(clock()), "key": key}
    if store.post_live(run_id, message) is None:
        moved = _token_run(store, token)  # the run continued as new meanwhile: its token moved on
        if moved is None or moved[0] == run_id or moved[1].finished or store.post_live(moved[0], message) is None:
            # the run ended after we looked: this payload was not delivered, but an earlier one
            # with the same key may have been
            return _after_end(store, token, run_id, key)
        run_id = moved[0]
    return Posted(run_id, "queued")


def _after_end(store: Inbox, token: str, run_id: str, key: str | None) -> Posted:
    found = _token_run(store, token)
    if key is not None and found is not None and key in found[1].keys(token):
        return Posted(found[0], "duplicate")
    raise UnknownToken(f"no live run holds token {token!r}: run {run_id} ended first; the payload was not delivered")
