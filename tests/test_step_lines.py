"""A step's start and result lines, which the engine encodes itself (`_journal.encoded_line`), are
byte for byte what `_journal.encode` writes for the same events: the journal format is unchanged.

Names and results come from the adversarial list (quotes, backslashes, control characters, `%`,
non-ASCII, line separators, huge integers, int and float subclasses, nesting); what JSON or UTF-8
cannot hold fails the step for good, as before.
"""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from typing import Any

import pytest

from durable_cli import _journal, start, step, workflow
from helpers import journal_path


class Colour(enum.IntEnum):
    RED = 1


NAMES = ["plain", 'quote"d', "back\\slash", "new\nline\t\x01", "per%cent %d %s", "é名🙂", "line\u2028sep"]
RESULTS: list[Any] = [
    0, -7, 10**40, "", 'say "hi"\\', "ctl\x00\x1f\x7f", "é名🙂\u2028", None, True, False, 1.5, -0.0, 1e16,
    Colour.RED, [1, "a", None, [{}]], {"z": 1, "a": {"b": [True, 2.5]}}, {"é": "\n"},
]
NOT_JSON: list[Any] = [{1, 2}, float("nan"), "lone \ud800 surrogate", object()]

STEPS = [step(name=name)(lambda value: value) for name in NAMES]


async def _echo(value: Any) -> Any:
    return value


ASYNC_STEPS = [step(name=name)(_echo) for name in NAMES]


@workflow
def lines_sync(count: int) -> int:
    for i in range(count):
        STEPS[i % len(STEPS)](RESULTS[i % len(RESULTS)])
    for value in NOT_JSON:
        try:
            STEPS[0](value)
        except Exception:
            pass
    return count


@workflow
async def lines_async(count: int) -> int:
    await asyncio.gather(*(ASYNC_STEPS[i % len(ASYNC_STEPS)](RESULTS[i % len(RESULTS)]) for i in range(count)))
    for i in range(count):
        await ASYNC_STEPS[i % len(ASYNC_STEPS)](RESULTS[i % len(RESULTS)])
    for value in NOT_JSON:
        try:
            await ASYNC_STEPS[0](value)
        except Exception:
            pass
    return count


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("wf", [lines_sync, lines_async])
def test_step_lines_are_what_encode_writes_for_their_events(tmp_path: Path, wf: Any) -> None:
    count = len(NAMES) * len(RESULTS)
    run = start(wf, count, dir=tmp_path)
    assert run.status == "completed", run
    lines = _lines(journal_path(tmp_path, run.run_id))
    events = [_journal.decode(line[:-1]) for line in lines]
    assert [_journal.encode(event) for event in events] == lines
    completed = [event for event in events if event["type"] == "step_completed"]
    assert len(completed) == count * (2 if wf is lines_async else 1)
    assert {event["name"] for event in completed} == set(NAMES)
    failed = [event for event in events if event["type"] == "step_failed"]
    assert len(failed) == len(NOT_JSON) and all(event["final"] for event in failed)
    assert all("not JSON serializable" in event["error"]["message"] for event in failed)


@pytest.mark.parametrize("value", RESULTS)
def test_encode_value_is_json_dumps_with_the_journal_options(value: Any) -> None:
    import json

    assert _journal.encode_value(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                                                       allow_nan=False)


@pytest.mark.parametrize("args", [(), (5,), (-3, "x"), ('é"\\\n\x00名🙂',), (10**30,), (True,), (1.5,),
                                  (Colour.RED,), (None,), ([1],), ("a", 2, "b")])
@pytest.mark.parametrize("kwargs", [{}, {"z": 1, "a": "é"}])
def test_the_argument_hash_is_the_hash_of_the_canonical_json(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Replay compares `args_hash` with journals written by every earlier version: positional ints
    and strs, hashed without the encoder, hash exactly as the canonical encoder's text does."""
    import hashlib
    import json

    from durable_cli._engine.steps import args_hash

    text = json.dumps([list(args), kwargs], sort_keys=True, default=repr, separators=(",", ":"))
    assert args_hash(args, kwargs) == hashlib.sha256(text.encode()).hexdigest()[:16]
