"""Output streams: ordered, durable chunks a step writes for readers to follow while it runs.

Chunks are written at least once: a retried step writes its chunks again, each tagged with the
step id and attempt number, so a reader can tell attempts apart (or keep only the last attempt).
The store gives each chunk its index when it is appended (unique and increasing per stream, even
for steps writing at once), and writes it only while this process still holds the run.
"""

from __future__ import annotations

from typing import Any

from ..errors import DurableError
from .._payloads import check_value
from .._timeparse import iso
from .context import current_execution, step_metadata


class StreamWriter:
    """Appends JSON chunks to one named stream of the current run."""

    def __init__(self, name: str) -> None:
        ex = current_execution.get()
        meta = step_metadata()
        if ex is None or meta is None:
            raise DurableError("get_writable() can only be called inside a step")
        self._ex = ex
        self._meta = meta
        self.name = name

    def write(self, data: Any) -> int:
        """Durably append one chunk (text or any JSON value); returns its index in the stream."""
        check_value(data)
        chunk = {"at": iso(self._ex.clock()), "data": data,
                 "step_id": self._meta.step_id, "attempt": self._meta.attempt}
        return self._ex.session.stream_append(self.name, [chunk])[0]
