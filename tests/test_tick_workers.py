"""`durable tick --workers N`: a pass's due runs shared with forked processes, each with a store
of its own, must leave the store as one process would. Real `durable` processes (the workers
are forked by the tick); the runs they find are set up in-process."""

from __future__ import annotations

import shutil
from pathlib import Path

from project import Project, later
from test_tick_reporting import CODE


def _entries(project: Project) -> list[str]:
    return sorted(str(path.relative_to(project.dir)) for path in (project.dir / "due").rglob("*")
                  if path.is_file())


def test_workers_drop_the_due_entries_they_drove_in_a_journal_dir_of_an_older_version(tmp_path: Path) -> None:
    """An entry no `due_runs/<id>` names (a journal dir of an older version, a crash between the
    two writes) goes when the run's next due time is set by the process that listed it. A
    worker's store had not listed it: the entries of the runs the workers drove (9 of 12) stayed,
    and each later tick drove those runs again."""
    project = Project(tmp_path, code=CODE, in_process=True)
    for index in range(12):  # enough for --workers 4 to fork (2 per process)
        project.run("nap", str(index), run_id=f"run-{index:02d}")
    shutil.rmtree(project.dir / "due_runs")
    assert len(_entries(project)) == 12
    code, doc, err = project.json("tick", "--now", later(hours=2), "--workers", "4", real=True)
    assert (code, doc["completed"], doc["errors"]) == (0, 12, []), err
    assert [project.result(f"run-{index:02d}") for index in range(12)] == list(range(1, 13))
    assert _entries(project) == []
