"""Test-only crash seam: DURABLE_CRASH_AT=N kills the process at the Nth store operation.

Used by the fault-injection suite to crash at every point of a run's life; never set it in
production. DURABLE_CRASH_LOG=PATH appends each operation's name, to see what N stands for.
"""

from __future__ import annotations

import os
import signal

_limit = int(os.environ.get("DURABLE_CRASH_AT", "0") or 0)
_log = os.environ.get("DURABLE_CRASH_LOG")
_count = 0


def point(name: str) -> None:
    """Count one store operation; SIGKILL this process when the count reaches DURABLE_CRASH_AT."""
    if not _limit and not _log:
        return
    global _count
    _count += 1
    if _log:
        with open(_log, "a") as handle:
            handle.write(f"{_count} {name}\n")
    if _count == _limit:
        os.kill(os.getpid(), signal.SIGKILL)
