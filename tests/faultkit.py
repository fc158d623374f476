"""The fault-injection kit: a project of workflows that log every step execution, real `durable`
processes (crashed with DURABLE_CRASH_AT, killed with SIGKILL), the invariant checker, directory
snapshots and the power-loss simulation.

Every step in FLOWS appends `<run_id> <pos> <attempt> <name>` to the effects file *before* it
returns, so the checker can tell, for each journal, whether a step ran more often than the
journal allows (a duplicate) or a fact that was acknowledged is missing (a loss).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import stat
import subprocess
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from helpers import DURABLE, durable_env, durable_in_process

from durable_cli import _journal as journal
from durable_cli.errors import JournalDamaged

FLOWS = '''
import os, signal, subprocess, sys, time
from durable_cli import workflow, step, sleep, define_hook, get_step_metadata, get_workflow_metadata

HERE = os.path.dirname(os.path.abspath(__file__))


def effect(name, extra=""):
    """Append one line per execution: run, position, attempt, name (fsync'd before returning)."""
    meta = get_step_metadata()
    run_id, pos = meta.step_id.rsplit(":", 1)
    path = os.environ.get("FAULT_EFFECTS") or os.path.join(HERE, "effects.txt")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{run_id} {pos} {meta.attempt} {name}{extra}\\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@step
def add_one(x):
    effect("add_one")
    return x + 1


@step
def double(x):
    effect("double")
    return x * 2


@step(retry_delay="10ms")
def flaky_once(x):
    effect("flaky_once")
    if get_step_metadata().attempt == 1:
        raise RuntimeError("transient")
    return x


approval = define_hook("approval")


@workflow
def mixed(n):
    x = add_one(n)
    sleep("1h")
    y = double(x)
    for payload in approval.create(token=f"tok-{get_workflow_metadata().run_id}"):
        return [x, y, add_one(payload["v"])]


@workflow
def steps_only(n):
    x = add_one(n)
    y = flaky_once(x)
    return double(y)


@workflow
def napper(n):
    sleep("1h")
    return add_one(n)


@step
def slow(x):
    effect("slow")
    time.sleep(0.3)
    return x + 1


@workflow
def slow_pair(n):
    return [slow(n), slow(n + 1)]


@step
def dies():
    effect("dies")
    os.kill(os.getpid(), signal.SIGKILL)


@workflow
def poison():
    dies()
    return "unreachable"


@step
def forks_a_straggler():
    effect("forks_a_straggler")
    marker = os.environ.get("FAULT_STRAGGLER")
    code = "import sys,time; time.sleep(float(sys.argv[2])); open(sys.argv[1],'a').write('straggler done\\\\n')"
    subprocess.Popen([sys.executable, "-c", code, marker, "1.0"], start_new_session=True)
    return "forked"


@workflow
def with_straggler():
    first = forks_a_straggler()
    return [first, add_one(1)]
'''

# short retry delays so that a recovered attempt is retried at once (a crash counts as a failure)
CONFIG = "defaults: {retry_delay: 10ms}\n"


# what a mixed(n) run returns once payload {"v": v} was delivered
def mixed_result(n: int, v: int) -> list[int]:
    return [n + 1, (n + 1) * 2, v + 1]


def later(hours: float, base: datetime | None = None) -> str:
    """An ISO instant `hours` from now (or from `base`), for `tick --now`."""
    return ((base or datetime.now(timezone.utc)) + timedelta(hours=hours)).isoformat()


def tally(test: str, **figures: int) -> None:
    """Record a test's figures (faults injected, runs checked, ...) in $FAULT_TALLY, if set."""
    path = os.environ.get("FAULT_TALLY")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"test": test, **figures}) + "\n")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def killed(self) -> bool:
        return self.code == -9

    def json(self) -> Any:
        return json.loads(self.out)


class Project:
    """A directory holding the FLOWS module, a journal dir `j/` and the effects file."""

    in_process = False  # also for copies made with Project.__new__ (the crash tests' clones)

    def __init__(self, root: Path, flows: str = FLOWS, in_process: bool = False) -> None:
        self.root = Path(root)
        self.in_process = in_process  # `call` without crash injection runs `durable` in this process
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "flows.py").write_text(textwrap.dedent(flows))
        (self.root / "durable.yaml").write_text(CONFIG)
        self.store = self.root / "j"
        self.effects = self.root / "effects.txt"
        self.extra_env: dict[str, str] = {"FAULT_EFFECTS": str(self.effects)}

    def command(self, *args: str) -> list[str]:
        return [DURABLE, "--dir", str(self.store), *args]

    def env(self, crash_at: int | None = None, fsync_log: Path | None = None,
            extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = durable_env({**self.extra_env, **(extra or {})})
        if crash_at is not None:
            env["DURABLE_CRASH_AT"] = str(crash_at)
        if fsync_log is not None:
            env["DURABLE_FSYNC_LOG"] = str(fsync_log)
        return env

    def call(self, *args: str, crash_at: int | None = None, fsync_log: Path | None = None,
             input: bytes | str | None = None, extra: Mapping[str, str] | None = None,
             timeout: float = 60, preexec_fn: Any = None, prefix: Sequence[str] = ()) -> Result:
        if self.in_process and crash_at is None and fsync_log is None and preexec_fn is None and not prefix:
            code, out, err = durable_in_process(*args, dir=self.store, cwd=self.root, env=self.env(extra=extra),
                                                input=input, timeout=timeout)
            return Result(code, out, err)
        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(
            [*prefix, *self.command(*args)], cwd=self.root, env=self.env(crash_at, fsync_log, extra),
            input=data, capture_output=True, timeout=timeout, preexec_fn=preexec_fn,
        )
        return Result(done.returncode, done.stdout.decode(), done.stderr.decode())

    def popen(self, *args: str, crash_at: int | None = None, extra: Mapping[str, str] | None = None,
              stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(*args), cwd=self.root, env=self.env(crash_at, extra=extra),
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def journal(self, run_id: str) -> Path:
        return self.store / "runs" / f"{run_id}.jsonl"

    def events(self, run_id: str) -> list[dict[str, Any]]:
        events, _, _ = journal.read_file(str(self.journal(run_id)), run_id)
        return events

    def status(self, run_id: str) -> str:
        """The run's status as its journal says (read here, without a process)."""
        from durable_cli._engine.history import History

        return History(self.events(run_id)).status

    def executions(self) -> list[tuple[str, int, int, str]]:
        if not self.effects.exists():
            return []
        rows = []
        for line in self.effects.read_text().splitlines():
            run_id, pos, attempt, name = line.split(" ", 3)
            rows.append((run_id, int(pos), int(attempt), name))
        return rows


@dataclass
class Check:
    """What the checker found over a store: runs checked, duplicates, losses, and why."""

    runs: int = 0
    duplicates: int = 0
    losses: int = 0
    problems: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join(self.problems[:20])


def check_store(project: Project, expect_done: Mapping[str, Any] | None = None) -> Check:
    """Parse every journal and hold it against the effects file.

    - every journal parses (a torn tail is allowed: it is what a crash mid-append leaves);
    - per position at most one final outcome, and no attempt journaled after it;
    - every execution of a step has its `step_started` journaled before it (same attempt);
    - no (run, position, attempt) executed twice, and no execution after the result was journaled;
    - the attempt whose result is journaled executed exactly once;
    - `expect_done`: these runs completed with these results (a lost run or payload shows here).
    """
    check = Check()
    runs_dir = project.store / "runs"
    executions = collections.Counter((r, p, a) for r, p, a, _ in project.executions())
    run_ids = sorted(name[:-6] for name in os.listdir(runs_dir)) if runs_dir.exists() else []
    for run_id in run_ids:
        try:
            events, _, _ = journal.read_file(str(runs_dir / f"{run_id}.jsonl"), run_id)
        except JournalDamaged as exc:
            check.problems.append(f"{run_id}: {exc}")
            check.losses += 1
            continue
        check.runs += 1
        started: dict[int, set[int]] = collections.defaultdict(set)
        done_at: dict[int, int] = {}
        for event in events:
            pos = event.get("pos")
            if event["type"] == "step_started":
                if pos in done_at:
                    check.duplicates += 1
                    check.problems.append(f"{run_id}: step at {pos} started again after its result")
                started[pos].add(event["attempt"])
            elif event["type"] == "step_completed" or (event["type"] == "step_failed" and event.get("final")):
                if pos in done_at:
                    check.duplicates += 1
                    check.problems.append(f"{run_id}: step at {pos} has two results")
                done_at[pos] = max(started[pos], default=0)
        for (r, pos, attempt), count in executions.items():
            if r != run_id:
                continue
            if count > 1:
                check.duplicates += count - 1
                check.problems.append(f"{run_id}: step at {pos} attempt {attempt} executed {count} times")
            if attempt not in started.get(pos, ()):
                check.duplicates += 1
                check.problems.append(f"{run_id}: step at {pos} attempt {attempt} ran unjournaled")
            if pos in done_at and attempt > done_at[pos]:
                check.duplicates += 1
                check.problems.append(f"{run_id}: step at {pos} ran again after its result")
        for pos, attempt in done_at.items():
            completed = any(e.get("pos") == pos and e["type"] == "step_completed" for e in events)
            if completed and executions[(run_id, pos, attempt)] != 1:
                check.losses += 1
                check.problems.append(f"{run_id}: result at {pos} journaled without one execution")
    for run_id, result in (expect_done or {}).items():
        if run_id not in run_ids:
            check.losses += 1
            check.problems.append(f"{run_id}: acknowledged run is missing")
            continue
        try:
            events = project.events(run_id)
        except JournalDamaged:
            continue
        last = events[-1] if events else {}
        if last.get("type") != "run_completed" or last.get("result") != result:
            check.losses += 1
            check.problems.append(f"{run_id}: expected completed with {result!r}, journal ends {last}")
    return check


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under `root`: kind, permission bits and a hash of its bytes (or link target)."""
    found: dict[str, tuple[str, int, str]] = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(base, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", stat.S_IMODE(info.st_mode), "")
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                found[rel] = ("file", stat.S_IMODE(info.st_mode), digest)
            else:
                found[rel] = ("other", stat.S_IMODE(info.st_mode), "")
    return found


def _ino(path: str) -> str:
    info = os.lstat(path)
    return f"{info.st_dev}:{info.st_ino}"


def power_cut(source: Path, target: Path, fsync_log: Path) -> dict[str, int]:
    """Copy `source` (a journal dir) to `target` as it would be after a power cut.

    The LevelDB fault-env model, driven by DURABLE_FSYNC_LOG: a file keeps only the length its
    last fsync made durable (nothing if never fsync'd); a directory keeps only the entries its last
    fsync listed (none if never fsync'd), so a file or directory created or renamed without a
    directory fsync after it disappears. `source` itself survives; its entries follow the rule.
    An entry removed after the directory's last fsync stays removed: the simulation cannot bring
    back bytes that are gone (documented in docs/guarantees.md). Returns what was dropped.
    """
    sizes: dict[str, int] = {}
    listings: dict[str, dict[str, str]] = {}
    if fsync_log.exists():
        for line in fsync_log.read_text().splitlines():
            entry = json.loads(line)
            if "file" in entry:
                sizes[entry["file"]] = entry["size"]
            else:
                listings[entry["ino"]] = entry["entries"]
    dropped = {"entries": 0, "bytes": 0}

    def copy_dir(src: str, dst: str, durable_entries: dict[str, str] | None) -> None:
        os.makedirs(dst, mode=0o700, exist_ok=True)
        for name in sorted(os.listdir(src)):
            path = os.path.join(src, name)
            ino = _ino(path)
            if durable_entries is not None and durable_entries.get(name) != ino:
                dropped["entries"] += 1
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                copy_dir(path, os.path.join(dst, name), listings.get(ino, {}))
            elif os.path.isfile(path):
                data = Path(path).read_bytes()
                keep = min(sizes.get(ino, 0), len(data))
                dropped["bytes"] += len(data) - keep
                Path(dst, name).write_bytes(data[:keep])
                os.chmod(os.path.join(dst, name), 0o600)

    copy_dir(str(source), str(target), listings.get(_ino(str(source)), {}))
    return dropped


def in_parallel(jobs: Sequence[Any], workers: int = 2) -> list[Any]:
    """Call each job (a no-argument callable) on `workers` threads; their processes run in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: job(), jobs))


def copy_project(project: Project, target: Path) -> Project:
    """A copy of the project (module, journal dir, effects) under `target`."""
    shutil.copytree(project.root, target, symlinks=True)
    copy = Project.__new__(Project)
    copy.root = Path(target)
    copy.store = copy.root / "j"
    copy.effects = copy.root / "effects.txt"
    copy.extra_env = {"FAULT_EFFECTS": str(copy.effects)}
    return copy
