"""Fault: `durable prune` racing `durable retry`. Prune picks finished runs from their summaries,
then decides again under each run's claim, so a run that `retry` revived (or still holds) is never
deleted: every retry that exited 0 finds its run alive afterwards.

The free race below shows pruners racing each other and retries; its window (between a summary
read and the claim) is so short that it seldom catches the old bug, so the next test holds that
window open with real processes, and the last one forces it in process on both stores."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from project import FLOWS, fault_project, tally

FIXABLE = FLOWS + '''

from durable_cli import FatalError


@step
def needs_fix():
    effect("needs_fix")
    if not os.path.exists(os.path.join(HERE, "fixed")):
        raise FatalError("not fixed yet")
    return "fixed"


@workflow
def fixable():
    needs_fix()
    sleep("1h")
    return "done"
'''

RUNS = 8


def test_prune_never_deletes_a_run_that_retry_revived(tmp_path: Path) -> None:
    project = fault_project(tmp_path, flows=FIXABLE)
    ids = [f"f{n:02d}" for n in range(RUNS)]
    start = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.path.insert(0, '.'); import flows; from durable_cli import start\n"
         "for run_id in sys.argv[2:]: assert start(flows.fixable, dir=sys.argv[1], run_id=run_id).status == 'failed'",
         str(project.dir), *ids], cwd=project.root, env=project.env(), capture_output=True, timeout=60)
    assert start.returncode == 0, start.stderr
    (project.root / "fixed").touch()

    pruners = [project.popen("prune", "--older-than", "0s") for _ in range(3)]
    retries = [(run_id, project.popen("retry", run_id, "--json")) for run_id in ids]
    pruners += [project.popen("prune", "--older-than", "0s") for _ in range(3)]
    revived = []
    for run_id, proc in retries:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, 1, 2), err
        if proc.returncode == 0:
            revived.append(run_id)
    pruned = [proc.communicate(timeout=60) + (proc.returncode,) for proc in pruners]

    for run_id in revived:
        assert project.journal(run_id).exists(), f"{run_id} was revived by retry, then pruned"
        assert project.status(run_id) == "sleeping"
    for _, err, code in pruned:  # pruners racing each other skip what another one removed
        assert code == 0, err
    tally("prune_versus_retry", faults=len(pruners) + len(retries), runs=RUNS, duplicates=0, losses=0)


DESCHEDULED_PRUNE = """
import os, sys, time
from datetime import datetime, timezone
from durable_cli._maintenance import prune_runs
from durable_cli._store.files import FileStore

journal_dir, signals = sys.argv[1], sys.argv[2]


class Descheduled(FileStore):
    \"\"\"A prune descheduled (as on a loaded machine) between a run's summary and its claim.\"\"\"

    def run_summary(self, run_id):
        summary = super().run_summary(run_id)
        open(os.path.join(signals, "read"), "w").close()
        while not os.path.exists(os.path.join(signals, "go")):
            time.sleep(0.01)
        return summary


print(prune_runs(Descheduled(journal_dir), 0, None, datetime.now(timezone.utc)))
"""


def test_a_prune_descheduled_while_a_real_retry_revives_the_run_does_not_delete_it(
        tmp_path: Path) -> None:
    """The race above rarely lands in its window (microseconds between the summary read and the
    claim), so it seldom caught the old bug. Here the window is held open: a real prune process
    reads the failed run's summary, a real `durable retry` revives the run and exits, then the
    prune goes on to claim it. Before prune decided under the claim, it deleted the run here."""
    project = fault_project(tmp_path, flows=FIXABLE)
    start = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, '.'); import flows; from durable_cli import start\n"
         "assert start(flows.fixable, dir=sys.argv[1], run_id='late').status == 'failed'", str(project.dir)],
        cwd=project.root, env=project.env(), capture_output=True, timeout=60)
    assert start.returncode == 0, start.stderr
    (project.root / "fixed").touch()
    signals = tmp_path / "signals"
    signals.mkdir()

    prune = subprocess.Popen([sys.executable, "-c", DESCHEDULED_PRUNE, str(project.dir), str(signals)],
                             cwd=project.root, env=project.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        while not (signals / "read").exists():
            assert prune.poll() is None, prune.communicate()
            time.sleep(0.01)
        revived = project.cli("retry", "late")
        assert revived.code == 0, revived
    finally:
        (signals / "go").touch()
    out, err = prune.communicate(timeout=60)

    assert prune.returncode == 0, err
    assert out.decode().strip() == "[]"
    assert project.status("late") == "sleeping"


@pytest.fixture(params=["files", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The client's store argument for a fresh store of each kind."""
    if request.param == "files":
        return {"dir": str(tmp_path / "journals")}
    return {"store": request.getfixturevalue("pg_url")}


def test_prune_decides_under_the_claim_when_retry_revives_a_run_after_its_summary_was_read(
        tmp_path: Path, where: dict[str, str]) -> None:
    """The interleaving the races above look for, in process and on both stores: retry revives the
    run right after prune read its summary (as `failed`) and before prune claims it."""
    import importlib
    from datetime import datetime, timezone

    from durable_cli._client import get_run, retry, start
    from durable_cli._maintenance import prune_runs
    from durable_cli._store import open_store

    project = fault_project(tmp_path / "project", flows=FIXABLE)
    module = f"fixable_{next(iter(where))}"  # a name per store: the workflow registry keeps modules
    (project.root / "flows.py").rename(project.root / f"{module}.py")
    sys.path.insert(0, str(project.root))
    try:
        flows = importlib.import_module(module)
        assert start(flows.fixable, run_id="late", **where).status == "failed"
    finally:
        sys.path.remove(str(project.root))
    (project.root / "fixed").touch()

    store = open_store(where.get("dir"), where.get("store"))
    read = store.run_summary

    def summary_then_retry(run_id: str):  # type: ignore[no-untyped-def]
        summary = read(run_id)
        assert retry(run_id, **where).status == "sleeping"
        return summary

    store.run_summary = summary_then_retry  # type: ignore[method-assign]
    try:
        removed = prune_runs(store, 0, None, datetime.now(timezone.utc))
    finally:
        store.close()
    assert removed == [] and get_run("late", **where).status == "sleeping"
