"""The figures of issue 9, side by side in one run, each as a ratio to a reference measured here.

    .venv/bin/python bench/run.py [--quick] [--skip-dbos] [--json-out FILE] [--tmp-dir DIR]

The floor is one append of a ~200-byte JSON line to a file in a journal dir followed by os.fsync
(os.fdatasync is measured beside it). Every figure gets a fresh temp dir under --tmp-dir (default:
the system temp dir); times are medians. Big fixtures are removed after the last figure, not
between figures: on ext4 without a journal, each file created soon after many were deleted scans
the freed inodes, so a removal just before a figure that creates files would inflate it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Callable

BENCH = os.path.dirname(os.path.abspath(__file__))
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import bounds  # noqa: E402
import durable_cli  # noqa: E402
from durable_cli._client import tick as tick_api  # noqa: E402  (durable_cli.tick is shadowed by the module tick.py once imported)
import flow  # noqa: E402
import history  # noqa: E402
import parallel  # noqa: E402
import workloads  # noqa: E402
from fixtures import clone_runs, count_syncs, no_fsync, peak_rss, run_child, strace_counts  # noqa: E402
from report import filesystem, fmt_time, machine, print_report  # noqa: E402

PYTHON = sys.executable
DURABLE = os.path.join(os.path.dirname(PYTHON), "durable")
DBOS_VENV = "/tmp/bench-dbos-venv"
MiB = 1024 * 1024
# A journal-sized line (215 bytes with its newline): what the floors write, to a file or a table.
FLOOR_LINE = json.dumps({"type": "step_completed", "seq": 2, "at": "2026-01-01T00:00:00.000000Z",
                         "pos": 1, "name": "charge", "result": {"id": "x" * 72, "amount": 1200},
                         "crc": "00000000"}, separators=(",", ":")).encode() + b"\n"
median = statistics.median


def child_env(base: str) -> dict[str, str]:
    """The environment of child processes: no DURABLE_* of the caller's, and bytecode caching on.

    With PYTHONDONTWRITEBYTECODE=1 (set in some shells and CI) an editable install recompiles every
    durable_cli module on each start while click loads its .pyc, which is not what users run. The
    caches go to a prefix inside the bench's temp dir, so nothing is written into the source tree.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(base, "pycache")
    return env


class Bench:
    def __init__(self, base: str, quick: bool) -> None:
        self.base = base
        self.quick = quick
        self.env = child_env(base)
        self.durable = DURABLE
        self.rows: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {}
        self.leftovers: list[tuple[str, str]] = []  # (fact, fixture dir): removed after the last figure
        self.creates = 0

    def fresh(self, name: str) -> str:
        return tempfile.mkdtemp(prefix=name + "-", dir=self.base)

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def row(self, figure: str, ours: float, ref: float | None, ref_name: str, target: float,
            kind: str = "time", per: str = "") -> None:
        self.probe()
        if ref_name == "floor":
            ref = self.floor
        ratio = ours / ref if ref else None
        if kind == "time" and ref_name == "floor":
            value = ratio
        elif kind == "us":
            value = ours * 1e6
        elif kind == "mib":
            value = ours / MiB
        elif kind == "s":
            value = ours
        else:
            value = ratio
        self.rows.append({
            "figure": figure, "ours_s": ours if kind != "mib" else None, "ref_s": ref,
            "ref_name": ref_name, "ratio": ratio, "x_floor": ours / self.floor if kind != "mib" else None,
            "target": target, "kind": kind, "per": per, "ours_mib": ours / MiB if kind == "mib" else None,
            "met": value is not None and value <= target, "floor_s": self.floor,
        })
        print(f"  {figure}: done", file=sys.stderr, flush=True)

    def tick(self, root: str, *extra: str) -> tuple[float, int, str]:
        return run_child([DURABLE, "--dir", root, "tick", *extra], self.base, self.env)

    # the floor
    def open_floor(self) -> None:
        """The floor's file: runs/floor.jsonl in a journal dir of its own, open for the whole run."""
        root = self.fresh("floor")
        os.makedirs(os.path.join(root, "runs"))
        self.line = FLOOR_LINE
        self.floor_fd = os.open(os.path.join(root, "runs", "floor.jsonl"),
                                os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.samples: dict[str, list[float]] = {"fsync": [], "fdatasync": []}
        self.local: list[float] = []
        self.probe(5)
        self.samples = {"fsync": [], "fdatasync": []}

    def probe(self, n: int = 15) -> None:
        """`n` floor samples of each kind, now: figures call this between their repeats.

        Shared disks drift by several times within minutes, so each figure is divided by the
        floor measured around it (`local`), not by one taken at the start.
        """
        for name, sync in (("fsync", os.fsync), ("fdatasync", os.fdatasync)):
            for _ in range(n):
                began = time.perf_counter()
                os.write(self.floor_fd, self.line)
                sync(self.floor_fd)
                elapsed = time.perf_counter() - began
                self.samples[name].append(elapsed)
                if name == "fsync":
                    self.local.append(elapsed)

    def create_time(self, directory: str) -> float:
        """One bare file creation in `directory` (os.open with O_CREAT|O_EXCL, then close), timed:
        the reference for figures that create files, whose cost depends on the directory (ext4
        without a journal scans recently freed inodes at each create). The file is left there
        (removing it would free an inode)."""
        self.creates += 1
        path = os.path.join(directory, f".create-ref-{self.creates}")
        began = time.perf_counter()
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return time.perf_counter() - began

    def remove_leftovers(self) -> None:
        """Remove the big fixtures kept until after the last figure, timing each removal."""
        for fact, root in self.leftovers:
            began = time.perf_counter()
            shutil.rmtree(root)
            self.facts[fact] = time.perf_counter() - began
        self.leftovers.clear()

    def figure(self, measure: Callable[[], None]) -> None:
        self.local = []
        self.probe()
        measure()

    @property
    def floor(self) -> float:
        return median(self.local) if self.local else median(self.samples["fsync"])

    # in-process figures
    def step_overhead(self) -> None:
        root = self.fresh("steps")
        durable_cli.start(workloads.steps, 3, dir=os.path.join(root, "warm"))  # imports, caches
        per = []
        for r in range(self.n(5, 2)):
            per.append(self.ours_per_step(os.path.join(root, f"r{r}"), 1000))
            self.probe(5)
        self.row("step overhead (start, 1,000 steps)", median(per), self.floor, "floor", 1.6, per="per step")
        self.facts["syncs_per_step"] = self.count_syncs_of_steps(os.path.join(root, "count"), 1000)

    @staticmethod
    def ours_per_step(root: str, n: int) -> float:
        began = time.perf_counter()
        run = durable_cli.start(workloads.steps, n, dir=root)
        elapsed = time.perf_counter() - began
        assert run.status == "completed", run
        return elapsed / n

    def count_syncs_of_steps(self, root: str, n: int) -> dict[str, Any]:
        """fsync and fdatasync calls per step of start(steps, n): strace -f -c when installed.

        The in-process fallback wraps os.fsync/os.fdatasync, so it misses calls through a
        reference bound at import (e.g. a default argument `sync=os.fsync`).
        """
        code = ("import sys, durable_cli; sys.path.insert(0, %r); import workloads; "
                "durable_cli.start(workloads.steps, %d, dir=%r)" % (BENCH, n, root))
        counts = strace_counts([PYTHON, "-c", code], self.base, self.env)
        if counts is not None:
            found = {k: counts.get(k, 0) / n for k in ("fsync", "fdatasync")}
            self.facts["syscalls_per_step_strace"] = {
                k: round(v / n, 2) for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v >= n}
            return {"by": "strace -f -c (whole process)", **found}
        with count_syncs() as calls:
            durable_cli.start(workloads.steps, n, dir=root)
        return {"by": "os.fsync/os.fdatasync wrapped in-process", **{k: v / n for k, v in calls.items()}}

    def otel_overhead(self) -> None:
        """Step overhead with OpenTelemetry on (SDK providers, spans batched and dropped) against off,
        both measured in one child process (otel_overhead.py); needs the otel extra."""
        try:
            import opentelemetry.sdk  # noqa: F401
        except ImportError:
            print("  step overhead with OpenTelemetry on: skipped (pip install 'durable-cli[otel]')", file=sys.stderr)
            return
        _, _, out = run_child([PYTHON, os.path.join(BENCH, "otel_overhead.py"), "1000", str(self.n(5, 2))],
                              self.fresh("otel"), self.env)
        figures = json.loads(out.strip().splitlines()[-1])
        self.facts["otel_extra_per_step_s"] = figures["extra_s"]
        self.row("step overhead, OpenTelemetry on vs off (1,000 steps)", figures["on_s"], figures["off_s"],
                 "telemetry off", 1.5, per="per step")

    def empty_workflow(self) -> None:
        """start() of a workflow that returns at once, with a bare file creation in the same runs
        dir measured around it like the floor (printed beside it: what creating a file costs in
        that directory at that time)."""
        root = self.fresh("empty")
        durable_cli.start(workloads.empty, dir=root)
        runs = os.path.join(root, "runs")
        creates = [self.create_time(runs) for _ in range(5)]
        times = []
        for _ in range(self.n(40, 10)):
            began = time.perf_counter()
            durable_cli.start(workloads.empty, dir=root)
            times.append(time.perf_counter() - began)
            self.probe(2)
            creates.append(self.create_time(runs))
        creates += [self.create_time(runs) for _ in range(5)]
        with count_syncs() as counts:
            durable_cli.start(workloads.empty, dir=root)
        self.facts["syncs_per_empty_workflow"] = counts
        self.row("empty workflow (start)", median(times), self.floor, "floor", 4.0, per="per run")
        self.facts["empty_workflow_create_ref_s"] = median(creates)
        self.facts["empty_workflow_x_create_ref"] = round(median(times) / median(creates), 2)

    def replay(self) -> None:
        """Replay per step against sum(range(1000)), a 100,000-event history, inspect of it (history.py)."""
        history.replay(self)

    def continued(self) -> None:
        """Issue 20: a polling loop that continues as new every 100 iterations resumes as fast at
        iteration 10,010 as at iteration 10 (the same place within a generation: 10 iterations in
        the current run's journal). One tick per iteration builds the history (without fsync);
        the timed tick on a copy of each store drives one more iteration, fsyncs included."""
        from datetime import timedelta

        root = self.fresh("continued")
        far = self.n(10000, 1000) + 10
        path = os.path.join(root, "template")
        run = durable_cli.start(workloads.poller, 0, 100, dir=path, run_id="poll")
        now = datetime.fromisoformat(str(run.wake_at).replace("Z", "+00:00"))
        copies = {}
        with no_fsync():
            for i in range(1, far + 1):
                now += timedelta(seconds=61)
                tick_api(dir=path, now=now)
                if i in (10, far):
                    copies[i] = os.path.join(root, f"at-{i}")
                    shutil.copytree(path, copies[i])
        samples: dict[int, list[float]] = {i: [] for i in copies}
        for r in range(self.n(7, 3)):
            for i, template in copies.items():
                copy = f"{template}-{r}"
                shutil.copytree(template, copy)
                began = time.perf_counter()
                summary = tick_api(dir=copy, now=now + timedelta(days=1))
                samples[i].append(time.perf_counter() - began)
                assert summary.suspended == 1, summary
            self.probe(5)
        newest = durable_cli.get_run("poll", dir=path)
        assert newest.run_id == f"poll.g{far // 100}", newest
        big, small = median(samples[far]), median(samples[10])
        self.facts["continue_as_new_resume_at_10_s"] = small
        self.facts[f"continue_as_new_resume_at_{far}_s"] = big
        self.row(f"continue-as-new (resume at iteration {far:,} / at 10)", big, small, "iteration 10", 1.2)

    # subprocess figures
    def cli_start(self) -> None:
        root = self.fresh("cli")
        argvs = {"click": [PYTHON, "-c", "import click"], "tick": [DURABLE, "--dir", root, "tick"],
                 "pass": [PYTHON, "-c", "pass"]}
        for argv in argvs.values():  # warm: bytecode caches, page cache
            run_child(argv, self.base, self.env)
        samples: dict[str, list[float]] = {name: [] for name in argvs}
        for _ in range(self.n(20, 6)):  # interleaved, so drift hits all alike
            for name, argv in argvs.items():
                samples[name].append(run_child(argv, self.base, self.env)[0])
        self.facts["empty_tick_s"] = median(samples["tick"])
        self.facts["python_import_click_s"] = median(samples["click"])
        self.facts["python_pass_s"] = median(samples["pass"])
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):  # as this shell runs it: no .pyc for durable_cli
            inherited = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
            ticks = [run_child(argvs["tick"], self.base, inherited)[0] for _ in range(self.n(10, 3))]
            self.facts["empty_tick_with_PYTHONDONTWRITEBYTECODE_s"] = median(ticks)
        self.row("CLI start (empty tick vs import click)", median(samples["tick"]),
                 median(samples["click"]), "python -c 'import click'", 1.15, kind="ratio")

    def idle_scale(self) -> None:
        """An idle tick over 1,000,000 sleeping runs (100,000 with --quick) against one on an empty
        dir: a tick lists due buckets, never the runs (the store takes ~4 GB, removed afterwards)."""
        root = self.fresh("idle")
        empty = self.fresh("idle-empty")
        count = self.n(1_000_000, 100_000)
        run = durable_cli.start(workloads.napper, 0, "1000 days", dir=root)
        began = time.perf_counter()
        clone_runs(root, run.run_id, count - 1, "idle-", workers=os.cpu_count() or 2)
        self.facts["idle_fixture_build_s"] = time.perf_counter() - began
        self.facts["idle_runs"] = len(os.listdir(os.path.join(root, "runs")))
        self.tick(root)
        self.tick(empty)
        samples: dict[str, list[float]] = {"idle": [], "empty": []}
        for _ in range(self.n(10, 3)):
            elapsed, _, out = self.tick(root)
            assert "nothing due" in out, out
            samples["idle"].append(elapsed)
            samples["empty"].append(self.tick(empty)[0])
        self.facts["idle_tick_s"] = median(samples["idle"])
        self.facts["idle_empty_tick_s"] = median(samples["empty"])
        idle_rss = peak_rss([DURABLE, "--dir", root, "tick"], self.base, self.env)
        label = f"{count // 1000:,}k" if count < 1_000_000 else f"{count // 1_000_000}M"
        self.leftovers.append(("idle_fixture_removal_s", root))  # after the last figure (see the docstring)
        self.row(f"idle scale (tick over {label} sleeping runs)", median(samples["idle"]),
                 median(samples["empty"]), "empty tick", 1.3, kind="ratio")
        self.row(f"memory: tick over {label} sleeping runs", idle_rss, None, "-", 60, kind="mib")

    def due_runs(self, root: str, count: int) -> str:
        """A store holding `count` runs of napper(0, "1s"), all due by the time this returns."""
        run = durable_cli.start(workloads.napper, 0, "1s", dir=root)
        clone_runs(root, run.run_id, count - 1, "due-")
        assert run.wake_at, run
        wake = datetime.fromisoformat(run.wake_at.replace("Z", "+00:00"))
        time.sleep(max(0.0, (wake - datetime.now(timezone.utc)).total_seconds() + 0.05))
        return root

    def tick_throughput(self) -> None:
        root = self.fresh("throughput")
        per = []
        for r in range(self.n(3, 1)):
            store = self.due_runs(os.path.join(root, f"r{r}"), 1000)
            elapsed, _, out = self.tick(store, "--json")
            summary = json.loads(out)
            assert summary["completed"] == 1000 and not summary["errors"], summary
            per.append(elapsed / 1000)
            self.probe()
        self.facts["throughput_tick_total_s"] = median(per) * 1000
        self.row("tick throughput (1,000 due runs, one tick)", median(per), self.floor, "floor", 2.5,
                 per="per run")
        store = self.due_runs(os.path.join(root, "memory"), 1000)
        rss = peak_rss([DURABLE, "--dir", store, "tick"], self.base, self.env)
        self.row("memory: tick of 1,000 due runs", rss, None, "-", 60, kind="mib")
        store = self.due_runs(os.path.join(root, "strace"), 1000)
        counts = strace_counts([DURABLE, "--dir", store, "tick"], self.base, self.env)
        if counts:
            self.facts["tick_syncs_per_run_strace"] = {k: counts.get(k, 0) / 1000 for k in ("fsync", "fdatasync")}
            self.facts["tick_syscalls_per_run_strace"] = {
                k: round(v / 1000, 2) for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v >= 1000}

    def check_speed(self) -> None:
        """`durable check` over 10,000 unfinished runs of 51 events each (24 steps, then a sleep of
        1,000 days), as a subprocess: every run is replayed (executing nothing) and reported ok."""
        root = self.fresh("check")
        run = durable_cli.start(workloads.napper, 24, "1000 days", dir=root)
        clone_runs(root, run.run_id, 9_999, "check-")
        with open(os.path.join(root, "runs", run.run_id + ".jsonl"), "rb") as handle:
            self.facts["check_events_per_run"] = handle.read().count(b"\n")
        times = []
        for _ in range(self.n(3, 1)):
            elapsed, _, out = run_child([DURABLE, "--dir", root, "check", "--json"], self.base, self.env)
            counts = json.loads(out)["counts"]  # exit 0 (run_child raises otherwise): every run is ok
            assert counts["ok"] == 10_000, counts
            times.append(elapsed)
        self.facts["check_10k_runs_s"] = times
        self.row("durable check (10,000 unfinished runs of 51 events)", median(times), None, "-", 30, kind="s")
        self.rows[-1]["target_text"] = "<= 30 s"

    def check_clones(self) -> None:
        """Clones are real runs: a tick at their wake time resumes and completes each."""
        root = self.fresh("clones")
        run = durable_cli.start(workloads.napper, 0, "1000 days", dir=root)
        clone_runs(root, run.run_id, 3, "clone-")
        later = datetime.now(timezone.utc).replace(year=datetime.now().year + 3).isoformat()
        summary = json.loads(self.tick(root, "--now", later, "--json")[2])
        assert summary["completed"] == 4 and not summary["errors"], summary

    def vs_dbos(self, dbos_python: str) -> None:
        """The same 500-step workflow here and in DBOS; ours runs just before and after theirs."""
        root = self.fresh("dbos")
        repeats = self.n(3, 1)
        ours = [self.ours_per_step(os.path.join(root, f"before{r}"), 500) for r in range(repeats)]
        out = run_child([dbos_python, os.path.join(BENCH, "dbos_bench.py"), "--dir", os.path.join(root, "dbos"),
                         "--steps", "500", "--repeats", str(repeats)], self.base, self.env)[2]
        ours += [self.ours_per_step(os.path.join(root, f"after{r}"), 500) for r in range(repeats)]
        report = json.loads(out.strip().splitlines()[-1])
        theirs = median(report["per_step_s"])
        self.facts["dbos"] = report
        self.facts["dbos_per_step_x_floor"] = round(theirs / self.floor, 2)
        self.row(f"vs DBOS {report['version']} (500 steps, SQLite)", median(ours), theirs, "DBOS per step",
                 0.15, kind="ratio", per="per step")


def ensure_dbos(python: str) -> str:
    if os.path.exists(python):
        return python
    venv = os.path.dirname(os.path.dirname(python))
    print(f"creating {venv} with dbos (once) ...", file=sys.stderr, flush=True)
    subprocess.run([PYTHON, "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "dbos"], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute)")
    parser.add_argument("--skip-dbos", action="store_true", help="leave out the DBOS comparison")
    parser.add_argument("--dbos-python", default=os.path.join(DBOS_VENV, "bin", "python"),
                        help="python of a venv with dbos installed (created there when missing)")
    parser.add_argument("--tmp-dir", "--base-dir", dest="tmp_dir", default=None, metavar="DIR",
                        help="where the temp dirs go (default: the system temp dir); file creation "
                             "costs depend on the directory, so the report names it")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs")
    parser.add_argument("--json-out", metavar="FILE", help="also write every figure and fact as JSON")
    parser.add_argument("--only", metavar="FIGURE", help="measure only this figure (a Bench method name)")
    opts = parser.parse_args()

    if not os.path.exists(DURABLE):
        sys.exit(f"no durable executable next to {PYTHON}: run this with the project's venv python")
    if opts.json_out:
        opts.json_out = os.path.abspath(opts.json_out)
    load_before = os.getloadavg()[0]
    base = tempfile.mkdtemp(prefix="durable-bench-", dir=opts.tmp_dir)
    print(f"temp dirs in {base}", file=sys.stderr, flush=True)
    os.chdir(base)  # no durable.yaml of the caller's applies
    bench = Bench(base, opts.quick)
    began = time.perf_counter()
    try:
        bench.open_floor()
        if opts.only:
            bench.figure(getattr(bench, opts.only))
            bench.remove_leftovers()
            bench.facts["tmp_dir"] = base
            print(json.dumps({"rows": bench.rows, "facts": bench.facts}, indent=2))
            return
        bench.check_clones()
        bench.figure(bench.step_overhead)
        bench.figure(bench.otel_overhead)
        bench.figure(bench.empty_workflow)
        bench.figure(lambda: bounds.empty_start(bench))
        if not opts.skip_dbos:
            bench.figure(lambda: bench.vs_dbos(ensure_dbos(opts.dbos_python)))
        bench.figure(bench.cli_start)
        bench.figure(bench.idle_scale)
        bench.figure(bench.replay)
        bench.figure(bench.tick_throughput)
        bench.figure(lambda: bounds.tick_run(bench))
        bench.figure(bench.continued)
        bench.figure(lambda: flow.starts(bench))
        bench.figure(lambda: flow.full_queue_tick(bench))
        bench.figure(bench.check_speed)
        bench.figure(lambda: parallel.parallel_steps(bench))
        bench.figure(lambda: parallel.fan_out_children(bench))
        bench.figure(lambda: bounds.fan_out_child(bench))
        bench.remove_leftovers()
    finally:
        if not opts.keep:
            shutil.rmtree(base, ignore_errors=True)
    facts = bench.facts
    facts["floor_line_bytes"] = len(bench.line)
    facts["floor_fsync_s"] = median(bench.samples["fsync"])
    facts["floor_fdatasync_s"] = median(bench.samples["fdatasync"])
    floors = [row["floor_s"] for row in bench.rows]
    facts["load_average_1min_before_after"] = (round(load_before, 2), round(os.getloadavg()[0], 2))
    facts["machine"] = machine()
    facts["filesystem"] = filesystem(base)
    facts["tmp_dir"] = base
    facts["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts["wall_s"] = round(time.perf_counter() - began, 1)
    print_report(
        facts, bench.rows, f"temp dirs in {base}, on {facts['filesystem']}",
        f"floor: append of a {facts['floor_line_bytes']}-byte line + os.fsync = "
        f"{fmt_time(facts['floor_fsync_s'])} (median of {len(bench.samples['fsync'])}, taken around every "
        f"figure; os.fdatasync: {fmt_time(facts['floor_fdatasync_s'])}).",
        floors, opts.json_out,
    )


if __name__ == "__main__":
    main()
