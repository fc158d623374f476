"""The one harness for tests of CLI projects: a directory of workflow modules where `durable` runs.

A `Project` holds workflow modules, a journal dir `journals/` (or a PostgreSQL URL, `store=`) and
an effects file. Its commands run in this process through click's CliRunner (`in_process=True`:
exit codes, messages, `--json` documents) or as real `durable` processes (signals, SIGKILL, locks,
overlapping commands), and a real process can be crashed at its N-th store operation
(`crash_at=N`, the seam in durable_cli/faults.py) or log its fsyncs for the power-cut simulation
(`fsync_log=`). The fault suite's tools live here too: the workflows in FLOWS, whose steps log
every execution; the invariant checker `check_store`; `snapshot`; `power_cut`.
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
from typing import Any, Mapping, NamedTuple, Sequence

from helpers import _PROCESS_ONLY, DURABLE, durable_env, durable_in_process, run_process, spawn, write_module

from durable_cli import _journal as journal
from durable_cli.errors import JournalDamaged

# Put at the top of every module a Project writes: `note(line)` appends to log.txt beside the
# module (fsync'd, so it survives a SIGKILL right after), `once(name)` is True the first time only.
PRELUDE = '''
import os as _os

HERE = _os.path.dirname(_os.path.abspath(__file__))


def note(line):
    with open(_os.path.join(HERE, "log.txt"), "a") as handle:
        handle.write(str(line) + "\\n")
        handle.flush()
        _os.fsync(handle.fileno())


def once(name):
    marker = _os.path.join(HERE, "marker-" + name)
    if _os.path.exists(marker):
        return False
    open(marker, "w").close()
    return True
'''


def later(hours: float = 0, base: datetime | None = None, **delta: float) -> str:
    """An ISO instant `hours` (and `delta`, timedelta's keywords) after now or `base`, for
    `tick --now`."""
    instant = (base or datetime.now(timezone.utc)) + timedelta(hours=hours, **delta)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Result(NamedTuple):
    """What a command did: (exit code, stdout, stderr); -9 when it was SIGKILLed."""

    code: int
    out: str
    err: str

    @property
    def killed(self) -> bool:
        return self.code == -9

    def json(self) -> Any:
        return json.loads(self.out)


class Project:
    """A directory with workflow modules, a journal dir `journals/` (or `store`, a PostgreSQL URL,
    given to commands as DURABLE_STORE) and the effects file FLOWS's steps append to."""

    def __init__(self, root: Path, module: str = "flows", code: str = "", store: str | None = None,
                 in_process: bool = False, config: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Commands without crash injection run through click's CliRunner in this process, or as
        # real `durable` processes; `popen` and `spawn_tick` are always real.
        self.in_process = in_process
        self.dir = self.root / "journals"
        self.store = store
        self.module = module
        self.effects = self.root / "effects.txt"
        self.extra_env: dict[str, str] = {"FAULT_EFFECTS": str(self.effects)}
        if code:
            self.write(code)
        if config is not None:
            (self.root / "durable.yaml").write_text(config)

    def write(self, code: str, module: str | None = None) -> None:
        """(Re)write a workflow module; the prelude (`note`, `once`) is put in front."""
        write_module(self.root, module or self.module, PRELUDE + textwrap.dedent(code))

    def ref(self, fn: str) -> str:
        return f"{self.module}:{fn}"

    def command(self, *args: str) -> list[str]:
        """The argv of a real `durable` process in this project (with `env()`)."""
        return [DURABLE, *([] if self.store else ["--dir", str(self.dir)]), *args]

    def env(self, crash_at: int | None = None, fsync_log: Path | None = None,
            extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a real `durable` process in this project."""
        env = durable_env({**self.extra_env, **(extra or {})})
        if self.store is not None:
            env["DURABLE_STORE"] = self.store
        if crash_at is not None:
            env["DURABLE_CRASH_AT"] = str(crash_at)
        if fsync_log is not None:
            env["DURABLE_FSYNC_LOG"] = str(fsync_log)
        return env

    def cli(self, *args: str, env: Mapping[str, str] | None = None, input: str | bytes | None = None,
            timeout: float = 60, crash_at: int | None = None, fsync_log: Path | None = None,
            preexec_fn: Any = None, prefix: Sequence[str] = (), real: bool = False) -> Result:
        """`durable ARGS`: in this process if the project is in-process and nothing here needs a
        real one (`real=True`: the workflow kills its process; a crash, an fsync or operation log,
        `preexec_fn`, a `prefix` such as strace). Commands run in parallel threads must be real:
        the in-process runner changes the process's directory, environment and modules."""
        real = (real or crash_at is not None or fsync_log is not None or preexec_fn is not None
                or bool(prefix) or any(name in (env or {}) for name in _PROCESS_ONLY))
        if self.in_process and not real:
            extra = {**self.extra_env, **(env or {})}
            if self.store is not None:
                extra["DURABLE_STORE"] = self.store
            return Result(*durable_in_process(*args, dir=None if self.store else self.dir, cwd=self.root,
                                              env=extra, input=input))
        data = input.encode() if isinstance(input, str) else input
        return Result(*run_process(self.command(*args), self.env(crash_at, fsync_log, env), input=data,
                                   timeout=timeout, prefix=prefix, cwd=self.root, preexec_fn=preexec_fn))

    def popen(self, *args: str, crash_at: int | None = None, env: Mapping[str, str] | None = None,
              stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """A real `durable ARGS` process, left running (overlap, signals)."""
        return spawn(self.command(*args), self.env(crash_at, extra=env), cwd=self.root,
                     stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def spawn_tick(self, **delta: float) -> subprocess.Popen[bytes]:
        return self.popen("tick", "--now", later(**delta))

    def json(self, *args: str, **kwargs: Any) -> tuple[int, Any, str]:
        code, out, err = self.cli(*args, "--json", **kwargs)
        try:
            return code, json.loads(out), err
        except ValueError as exc:
            raise AssertionError(f"durable {' '.join(args)}: stdout is not JSON ({exc}): {out!r}; stderr: {err!r}")

    def run(self, fn: str, *args: str, run_id: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 30) -> dict[str, Any]:
        """`durable run MOD:FN ARGS --json`, expecting exit 0 or 1; returns the JSON document."""
        extra = ["--id", run_id] if run_id else []
        code, doc, err = self.json("run", self.ref(fn), *args, *extra, env=env, timeout=timeout)
        assert code in (0, 1), f"durable run exited {code}: {err}"
        return doc

    def tick(self, **delta: float) -> dict[str, Any]:
        code, doc, err = self.json("tick", "--now", later(**delta))
        assert code == 0, f"tick exited {code}: {err}"
        return doc

    def resume(self, token: str, payload: Any, *extra: str) -> tuple[int, Any, str]:
        return self.json("resume", token, "-", *extra, input=json.dumps(payload))

    def inspect(self, run_id: str) -> dict[str, Any]:
        """`durable inspect RUN --json`."""
        code, doc, err = self.json("inspect", run_id)
        assert code == 0, err
        return doc

    def runs(self) -> list[dict[str, Any]]:
        code, rows, err = self.json("ls")
        assert code == 0, err
        return rows

    def journal(self, run_id: str) -> Path:
        return self.dir / "runs" / f"{run_id}.jsonl"

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events (without their crc): read from its journal file here, or exported."""
        if self.store is None:
            events, _, _ = journal.read_file(str(self.journal(run_id)), run_id)
            return events
        code, out, err = self.cli("export", run_id)
        assert code == 0, err
        return [{k: v for k, v in json.loads(line).items() if k != "crc"} for line in out.splitlines()]

    def status(self, run_id: str) -> str:
        """The run's status as its events say (on files read here, without a command)."""
        from durable_cli._engine.history import History

        return History(self.events(run_id)).status

    def result(self, run_id: str) -> Any:
        """The result the run's journal records."""
        last = self.events(run_id)[-1]
        assert last["type"] == "run_completed", f"run {run_id} has not completed: {last}"
        return last["result"]

    def log(self) -> list[str]:
        path = self.root / "log.txt"
        return path.read_text().splitlines() if path.exists() else []

    def executions(self) -> list[tuple[str, int, int, str]]:
        """Every step execution FLOWS's `effect` logged: (run, position, attempt, step name)."""
        if not self.effects.exists():
            return []
        rows = []
        for line in self.effects.read_text().splitlines():
            run_id, pos, attempt, name = line.split(" ", 3)
            rows.append((run_id, int(pos), int(attempt), name))
        return rows

    def copy(self, target: Path) -> Project:
        """A copy of the project (modules, journal dir, effects) under `target`."""
        shutil.copytree(self.root, target, symlinks=True)
        clone = Project(target, self.module, store=self.store, in_process=self.in_process)
        clone.extra_env = {**self.extra_env, "FAULT_EFFECTS": str(clone.effects)}
        return clone


# --- The fault suite: workflows whose steps log every execution, and what checks them ----------
#
# Every step in FLOWS appends `<run_id> <pos> <attempt> <name>` to the effects file *before* it
# returns, so the checker can tell, for each journal, whether a step ran more often than the
# journal allows (a duplicate) or a fact that was acknowledged is missing (a loss).

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


def fault_project(root: Path, flows: str = FLOWS, in_process: bool = False, store: str | None = None) -> Project:
    """A project of the fault suite: `flows` (FLOWS by default) as module `flows`, CONFIG; on
    `store` (a PostgreSQL URL) instead of a journal dir when given."""
    return Project(root, "flows", flows, store=store, in_process=in_process, config=CONFIG)


def mixed_result(n: int, v: int) -> list[int]:
    """What a mixed(n) run returns once payload {"v": v} was delivered."""
    return [n + 1, (n + 1) * 2, v + 1]


def tally(test: str, **figures: int) -> None:
    """Record a test's figures (faults injected, runs checked, ...) in $FAULT_TALLY, if set."""
    path = os.environ.get("FAULT_TALLY")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"test": test, **figures}) + "\n")


def sampled(points: Sequence[int]) -> list[int]:
    """The crash points a long fault test kills at: every one with DURABLE_EVERY_POINT=1 set (do so
    before changing what they cover), else every other one, and the last: half on one day, the
    other half the next (the CI suite stays under five minutes on 2 cores; over two days every
    point is killed). DURABLE_POINT_HALF=0 or 1 picks a half. A failure names its point."""
    points = list(points)
    if os.environ.get("DURABLE_EVERY_POINT") or len(points) <= 4:
        return points
    half = int(os.environ.get("DURABLE_POINT_HALF", datetime.now().toordinal() % 2))
    return sorted(set(points[half::2]) | {points[-1]})


def in_parallel(jobs: Sequence[Any], workers: int = 2) -> list[Any]:
    """Call each job (a no-argument callable) on `workers` threads; their processes run in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: job(), jobs))


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
    runs_dir = project.dir / "runs"
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
