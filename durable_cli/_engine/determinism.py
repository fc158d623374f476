"""Values a workflow may use without breaking replay: its clock, random numbers, uuids, patches."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from .._payloads import check_text
from .._timeparse import iso, parse_instant
from .execution import Execution


def now(ex: Execution) -> datetime:
    """The time, journaled the first time this position runs and read back on every replay."""
    pos, op = ex.begin("now", "now")
    if op is not None:
        return parse_instant(op.events[0]["value"])
    value = ex.clock()
    ex.record("now", pos=pos, name="now", value=iso(value))
    return value


def _digest(ex: Execution, kind: str) -> bytes:
    ex.derived += 1
    seed = ex.history.start.get("renamed_from") or ex.run_id  # an imported copy keeps its values
    return hashlib.sha256(f"{seed}:{kind}:{ex.derived}".encode()).digest()


def random(ex: Execution) -> float:
    """A float in [0, 1) derived from the run id and the call's order: the same on every replay."""
    return int.from_bytes(_digest(ex, "random")[:7], "big") / float(1 << 56)


def uuid4(ex: Execution) -> uuid.UUID:
    """A version-4 UUID derived from the run id and the call's order."""
    return uuid.UUID(bytes=_digest(ex, "uuid")[:16], version=4)


def patched(ex: Execution, change_id: str) -> bool:
    """True for runs reaching this point on new code; False while replaying history from before it."""
    if isinstance(change_id, str):
        check_text(change_id, "the change id of patched()")  # a lone surrogate: no journal holds it
    op = ex.history.ops.get(ex.position + 1)
    if op is not None and not (op.kind == "patch" and op.name == change_id):
        return False
    pos, op = ex.begin("patch", change_id)
    if op is None:
        ex.record("patched", pos=pos, name=change_id)
    return True
