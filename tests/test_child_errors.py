"""Errors that are not the workflow's while a parent starts a child: a store that cannot create the
child's journal (a full disk) is reported and leaves the parent recoverable, never `run_failed`
(issue 16; an engine error while starting a child is in test_async_loops.py)."""

from __future__ import annotations

import errno
from datetime import datetime, timedelta, timezone

import pytest

from durable_cli import get_run, start, start_child, tick, workflow
from durable_cli._store.files import FileStore
from helpers import run_events

DISK_FULL = [True]


@workflow
def kid() -> str:
    return "kid done"


@workflow
def mom() -> str:
    return str(start_child(kid).result())


def test_a_full_disk_while_creating_a_child_leaves_the_parent_recoverable(tmp_path, monkeypatch):
    where = str(tmp_path)
    create_run = FileStore.create_run

    def full_for_children(store: FileStore, run_id: str):  # type: ignore[no-untyped-def]
        if run_id.endswith("-c1") and DISK_FULL[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return create_run(store, run_id)

    monkeypatch.setattr(FileStore, "create_run", full_for_children)
    DISK_FULL[0] = True
    with pytest.raises(OSError, match="No space left on device"):
        start(mom, dir=where, run_id="mom-1")
    assert not any(e["type"] == "run_failed" for e in run_events(where, "mom-1"))
    assert get_run("mom-1", dir=where).status == "running"
    DISK_FULL[0] = False  # room again: a tick recovers the parent, which starts its child
    tick(dir=where, now=datetime.now(timezone.utc) + timedelta(seconds=1))
    done = get_run("mom-1", dir=where)
    assert (done.status, done.result) == ("completed", "kid done")
