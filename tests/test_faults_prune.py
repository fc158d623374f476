"""Fault: `durable prune` racing `durable retry`. Prune picks finished runs from their summaries,
then decides again under each run's claim, so a run that `retry` revived (or still holds) is never
deleted: every retry that exited 0 finds its run alive afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from faultkit import FLOWS, Project, tally

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
    project = Project(tmp_path, flows=FIXABLE)
    ids = [f"f{n:02d}" for n in range(RUNS)]
    start = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.path.insert(0, '.'); import flows; from durable_cli import start\n"
         "for run_id in sys.argv[2:]: assert start(flows.fixable, dir=sys.argv[1], run_id=run_id).status == 'failed'",
         str(project.store), *ids], cwd=project.root, env=project.env(), capture_output=True, timeout=60)
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


def test_prune_decides_under_the_claim_when_retry_revives_a_run_after_its_summary_was_read(
        tmp_path: Path) -> None:
    """The interleaving the race above looks for, made certain: retry revives the run right after
    prune read its summary (as `failed`) and before prune claims it."""
    import importlib
    from datetime import datetime, timezone

    from durable_cli.client import retry, start
    from durable_cli.maintenance import prune_runs
    from durable_cli.store.files import FileStore

    project = Project(tmp_path, flows=FIXABLE)
    sys.path.insert(0, str(project.root))
    try:
        flows = importlib.import_module("flows")
        assert start(flows.fixable, dir=str(project.store), run_id="late").status == "failed"
    finally:
        sys.path.remove(str(project.root))
        sys.modules.pop("flows", None)
    (project.root / "fixed").touch()

    class RetryAfterSummary(FileStore):
        def run_summary(self, run_id: str):  # type: ignore[no-untyped-def]
            summary = super().run_summary(run_id)
            assert retry(run_id, dir=str(project.store)).status == "sleeping"
            return summary

    removed = prune_runs(RetryAfterSummary(str(project.store)), 0, None, datetime.now(timezone.utc))
    assert removed == [] and project.status("late") == "sleeping"
