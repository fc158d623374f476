"""The PostgreSQL figures of issue 10, side by side in one run, each as a ratio to a reference
measured here.

    .venv/bin/python bench/pg.py [--quick] [--skip-dbos] [--json-out FILE]

It starts a throwaway PostgreSQL 15 server (tests/pgserver.py: a temp dir, a unix socket only,
fsync on) and stops it at exit. The floor is one committed INSERT (autocommit) of a journal-sized
row into a table on that server, over a connection made as the store makes its own; it is
measured around every figure, and each figure is divided by the floor measured around it.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import durable_cli  # noqa: E402
from durable_cli._client import tick as tick_api  # noqa: E402
from durable_cli._store import pg_schema  # noqa: E402
from durable_cli._store.postgres import PostgresStore  # noqa: E402
import workloads  # noqa: E402
from fixtures import clone_pg_runs, run_child  # noqa: E402
from report import fmt_time, machine, print_report  # noqa: E402
from run import DBOS_VENV, DURABLE, FLOOR_LINE, Bench, ensure_dbos, median  # noqa: E402

RUNS = 1000  # due runs for the worker figure
WORKER = ["tick", "--loop", "--interval", "0.2s", "--workers", "1", "--json"]
PAYLOAD = b'{"approved": true}'


def load_pgserver() -> Any:
    """tests/pgserver.py, imported by path (tests/ is not a package on sys.path)."""
    path = os.path.join(os.path.dirname(BENCH), "tests", "pgserver.py")
    spec = importlib.util.spec_from_file_location("pgserver", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pgserver"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def count_statements() -> Any:
    """tests/pgserver.py's `Statements`: statements this process's stores send, and commits."""
    return sys.modules["pgserver"].Statements()


class Workers:
    """`count` looping `durable tick` processes on `url`, each with --workers 1."""

    def __init__(self, bench: PgBench, url: str, count: int, argv: list[str] = WORKER, delay: float = 0.0) -> None:
        self.bench = bench
        self.url = url
        self.outputs = [tempfile.TemporaryFile() for _ in range(count)]
        command = [sys.executable, os.path.join(BENCH, "delayed_durable.py"), str(delay)] if delay else [DURABLE]
        self.procs = [subprocess.Popen([*command, "--store", url, *argv], cwd=bench.base, env=bench.env,
                                       stdout=out, stderr=subprocess.STDOUT) for out in self.outputs]
        self.wait_listening(count)

    def wait_listening(self, count: int, timeout: float = 30.0) -> None:
        """Until every worker has done its first (empty) pass and LISTENs for wake-ups."""
        database = self.url.split("?")[0].rsplit("/", 1)[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.bench.admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query = 'LISTEN durable_wake'",
                (database,)).fetchone()
            if row and row[0] >= count:
                return
            if any(proc.poll() is not None for proc in self.procs):
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{count} looping workers did not start listening: {self.summaries()}")

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM each (it finishes the run in hand), then their summaries (with `cpu_s` each)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        cpu = []
        for proc in self.procs:
            deadline = time.monotonic() + 30
            while proc.returncode is None:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    cpu.append(usage.ru_utime + usage.ru_stime)
                elif time.monotonic() > deadline:
                    proc.kill()
                else:
                    time.sleep(0.01)
        return [{**summary, "cpu_s": sum(cpu) / len(cpu) if cpu else None} for summary in self.summaries()]

    def summaries(self) -> list[dict[str, Any]]:
        found = []
        for out in self.outputs:
            out.seek(0)
            text = out.read().decode(errors="replace")
            try:
                found.append(json.loads(text[text.index("{"):]))
            except ValueError:
                found.append({"output": text[-2000:]})
        return found


class PgBench(Bench):
    """Bench, with the floor taken on the PostgreSQL server instead of a file."""

    def __init__(self, base: str, quick: bool, server: Any) -> None:
        super().__init__(base, quick)
        self.server = server
        self.admin = pg_schema.connect(pg_schema.parse_url(server.url))
        self.profile: dict[str, list[dict[str, float]]] = {}
        self.last_run_id = ""  # the run `per_step_pg` made last

    def database(self, name: str) -> str:
        """A new empty database with the store's schema already in it."""
        url = self.server.create_database(name)
        PostgresStore(url).close()
        return url

    # the floor
    def open_floor(self) -> None:
        """A journal-shaped table in a database of its own; one connection for the whole run."""
        url = self.server.create_database("floor")
        self.floor_conn = pg_schema.connect(pg_schema.parse_url(url))  # the store's own settings
        self.floor_conn.execute("CREATE TABLE floor_events (run_id text NOT NULL, seq bigint NOT NULL,"
                                " body text NOT NULL, PRIMARY KEY (run_id, seq))")
        self.row_body = FLOOR_LINE[:-1].decode()
        self.seq = itertools.count(1)
        self.samples = {"insert": []}
        self.local: list[float] = []
        self.probe(10)  # warm: the statement gets prepared after 5 uses, as the store's do
        self.samples = {"insert": []}

    def probe(self, n: int = 15) -> None:
        for _ in range(n):
            began = time.perf_counter()
            self.floor_conn.execute("INSERT INTO floor_events (run_id, seq, body) VALUES (%s, %s, %s)",
                                    ("floor", next(self.seq), self.row_body))
            elapsed = time.perf_counter() - began
            self.samples["insert"].append(elapsed)
            self.local.append(elapsed)

    @property
    def floor(self) -> float:
        return median(self.local) if self.local else median(self.samples["insert"])

    def custom_row(self, figure: str, ours: float, ref: float | None, ref_name: str, ratio: float | None,
                   target_text: str, met: bool | None, per: str = "") -> None:
        """A row whose ratio or target is not `ours / ref <= target` (throughput, latency)."""
        self.probe()
        self.rows.append({
            "figure": figure, "ours_s": ours, "ref_s": ref, "ref_name": ref_name, "ratio": ratio,
            "x_floor": ours / self.floor, "target": None, "target_text": target_text, "kind": "time",
            "per": per, "ours_mib": None, "met": met, "floor_s": self.floor,
        })
        print(f"  {figure}: done", file=sys.stderr, flush=True)

    # figures
    def per_step_pg(self, url: str, n: int) -> float:
        began = time.perf_counter()
        run = durable_cli.start(workloads.steps, n, store=url)
        elapsed = time.perf_counter() - began
        assert run.status == "completed", run
        self.last_run_id = run.run_id
        return elapsed / n

    def step_intervals(self, url: str, run_id: str) -> list[float]:
        """Seconds between one step's start and the next's, as the run's journal stamps them (`at`
        of each `step_started`): a step's typical cost, where the per-step figure is a mean that
        a few stalled WAL flushes of a shared disk move (the floor is a median)."""
        with pg_schema.connect(pg_schema.parse_url(url)) as conn:
            bodies = [body for body, in conn.execute(
                "SELECT body FROM durable_events WHERE run_id = %s ORDER BY seq", (run_id,))]
        starts = [datetime.fromisoformat(event["at"].replace("Z", "+00:00"))
                  for event in map(json.loads, bodies) if event["type"] == "step_started"]
        return [(later - earlier).total_seconds() for earlier, later in zip(starts, starts[1:])]

    def step_overhead(self) -> None:
        url = self.database("steps")
        self.per_step_pg(url, 3)  # imports, connection, prepared statements
        per, intervals = [], []
        for _ in range(self.n(5, 2)):
            per.append(self.per_step_pg(url, 500))
            intervals += self.step_intervals(url, self.last_run_id)
            self.probe(5)
        self.row("per step on PostgreSQL (start, 500 steps)", median(per), self.floor, "floor", 2.0,
                 per="per step")
        self.facts["per_step_median_interval_s"] = round(median(intervals), 7)
        self.facts["per_step_median_interval_x_floor"] = round(median(intervals) / self.floor, 2)
        with count_statements() as sent:
            self.per_step_pg(url, 500)
        self.facts["statements_per_step"] = {k: round(v / 500, 3) for k, v in sent.counts.most_common()}

    def vs_dbos(self, dbos_python: str) -> None:
        """The same 500-step workflow, ours just before and after DBOS's, on the same server."""
        url = self.database("dbos_ours")
        dbos_url = self.server.create_database("dbos")  # DBOS makes its own tables there
        self.per_step_pg(url, 3)
        repeats = self.n(3, 1)
        ours = [self.per_step_pg(url, 500) for _ in range(repeats)]
        out = run_child([dbos_python, os.path.join(BENCH, "dbos_bench.py"), "--url", dbos_url,
                         "--steps", "500", "--repeats", str(repeats)], self.base, self.env)[2]
        ours += [self.per_step_pg(url, 500) for _ in range(repeats)]
        report = json.loads(out.strip().splitlines()[-1])
        theirs = median(report["per_step_s"])
        self.facts["dbos"] = report
        self.facts["dbos_per_step_x_floor"] = round(theirs / self.floor, 2)
        self.row(f"vs DBOS {report['version']} (500 steps, same PostgreSQL)", median(ours), theirs,
                 "DBOS per step", 0.3, kind="ratio", per="per step")

    def make_template(self) -> None:
        """A run of napper(0, "1s") whose rows the worker figure copies (due by the time it runs),
        and one of counted_napper, whose step appends a line to `self.executions` each time it runs."""
        url = self.server.create_database("template")
        self.executions = os.path.join(self.base, "executions.txt")
        templates = []
        for run in (durable_cli.start(workloads.napper, 0, "1s", store=url),
                    durable_cli.start(workloads.counted_napper, self.executions, "1s", store=url)):
            assert run.status == "sleeping", run
            conn = pg_schema.connect(pg_schema.parse_url(url))
            lines = [body for body, in conn.execute(
                "SELECT body FROM durable_events WHERE run_id = %s ORDER BY seq", (run.run_id,))]
            (due_at,), = conn.execute("SELECT due_at FROM durable_due WHERE run_id = %s", (run.run_id,))
            conn.close()
            templates.append((lines, due_at))
        self.template, self.counted_template = templates

    def check_clones(self) -> None:
        """Clones are real runs: one tick resumes and completes each (and counts its statements)."""
        url = self.database("clones")
        with pg_schema.connect(pg_schema.parse_url(url)) as conn:
            clone_pg_runs(conn, *self.template, 200, "clone-")
        self.wait_due()
        with count_statements() as sent:
            summary = tick_api(store=url)
        assert summary.completed == 200 and not summary.errors, summary.to_json()
        self.facts["statements_per_tick_run"] = {k: round(v / 200, 3) for k, v in sent.counts.most_common()}
        self.facts["per_tick_run_statements_commits_sync"] = (
            round(sent.total / 200, 2), round(sent.commits / 200, 2), round(sent.sync_commits / 200, 2))

    def wait_due(self) -> None:
        left = (max(self.template[1], self.counted_template[1]) - datetime.now(timezone.utc)).total_seconds()
        time.sleep(max(0.0, left + 0.05))

    def drain(self, workers: int, delay: float = 0.0, runs: int = RUNS) -> float:
        """Seconds `workers` looping workers take to finish `runs` due runs that appear at once
        (with `delay` seconds before each statement the workers send: a simulated network)."""
        url = self.database(f"tick{workers}")
        pool = Workers(self, url, workers, delay=delay)
        try:
            conn = pg_schema.connect(pg_schema.parse_url(url))
            with conn.transaction():  # the runs and the wake-up arrive together, at commit
                clone_pg_runs(conn, *self.template, runs, "due-")
                conn.execute("SELECT pg_notify('durable_wake', '')")
            began = time.perf_counter()
            cpu_before, server_before = cpu_times(), self.server_cpu()
            workers_before = processes_cpu([proc.pid for proc in pool.procs])
            while True:  # a run's due row goes while it is held; a released run with none is done
                (left,), = conn.execute("SELECT (SELECT count(*) FROM durable_due)"
                                        " + (SELECT count(*) FROM durable_runs WHERE owner IS NOT NULL)")
                if not left:
                    break
                time.sleep(0.01)
            elapsed = time.perf_counter() - began
            workers_cpu = processes_cpu([proc.pid for proc in pool.procs]) - workers_before
            server_cpu = self.server_cpu() - server_before
            busy, total = (after - before for after, before in zip(cpu_times(), cpu_before))
            (done,), = conn.execute("SELECT count(*) FROM durable_events WHERE body LIKE %s",
                                    ('{"type":"run_completed"%',))
            conn.close()
        finally:
            summaries = pool.stop()
        errors = [e for s in summaries for e in s.get("errors", ["no summary: " + s.get("output", "")])]
        assert done == runs and not errors, (done, summaries)
        label = f"{workers} worker{'s' if workers > 1 else ''}" + (f", {delay * 1000:g} ms" if delay else "")
        self.profile.setdefault(label, []).append({
            "wall": elapsed / runs, "workers": workers_cpu / runs, "server": server_cpu / runs,
            "machine": busy / total})
        if not delay:
            # the workers' own counts: a run another worker finished after this one listed it is
            # claimed again and counted "completed" again (nothing is executed twice: `done` above)
            counted = self.facts.setdefault("worker_summaries_completed_busy", {}).setdefault(workers, [])
            counted.append([(s["completed"], s["busy"]) for s in summaries])
        self.server.drop_database(url)
        return elapsed

    def profile_table(self) -> str:
        """Per drain (medians over its repeats), per run: wall time, CPU of the looping workers
        (/proc/<pid>/stat, inside the drain's window) and of the PostgreSQL server's processes,
        and how much of the machine's cores that CPU fills: (workers + server) / (wall x cores).
        Near 100%, the cores are the limit; `machine` is every process's share (others' too)."""
        cores = os.cpu_count() or 1
        lines = [f"CPU profile of the drains (per run; {cores} cores). 'cores allow': the most N workers can gain "
                 "over 1 on idle cores with the CPU per run measured: one worker and its backend take turns, so "
                 "its run takes at least their CPU (or its wall, with a simulated delay), while N workers' runs "
                 f"share {cores} cores: cores x that / (workers + server CPU with N), and at most N.",
                 "| drain | wall | workers CPU | server CPU | (workers + server) / (wall x cores) | machine busy "
                 "| vs 1 worker | cores allow |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        medians = {label: {key: median(g[key] for g in got) for key in ("wall", "workers", "server")}
                   for label, got in self.profile.items()}
        for label, got in self.profile.items():
            wall, workers, server = medians[label]["wall"], medians[label]["workers"], medians[label]["server"]
            share = median((g["workers"] + g["server"]) / (g["wall"] * cores) for g in got)
            count, _, rest = label.partition(" worker")
            one = medians.get("1 worker" + rest.lstrip("s"))
            gain = f"{one['wall'] / wall:.2f}x" if one else "-"
            turn = (one["wall"] if "ms" in rest else one["workers"] + one["server"]) if one else 0.0
            allow = f"{min(int(count), cores * turn / (workers + server)):.2f}x" if turn and workers + server else "-"
            lines.append(f"| {label} | {fmt_time(wall)} | {fmt_time(workers)} | {fmt_time(server)} | "
                         f"{share:.0%} | {median(g['machine'] for g in got):.0%} | {gain} | {allow} |")
        return "\n".join(lines)

    def throughput(self) -> None:
        self.wait_due()
        samples: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for _ in range(self.n(3, 1)):
            for workers in samples:  # interleaved, so drift hits all alike
                samples[workers].append(self.drain(workers) / RUNS)
                self.probe(5)
        one = median(samples[1])
        self.facts["drain_1000_runs_s"] = {w: round(median(s) * RUNS, 3) for w, s in samples.items()}
        self.facts["one_worker_per_run_x_floor"] = round(one / self.floor, 2)
        for workers, target in ((2, 1.6), (4, 2.0)):
            ours = median(samples[workers])
            self.custom_row(f"throughput, {workers} looping workers vs 1 ({RUNS:,} due runs)", ours, one,
                            "1 looping worker", one / ours, f">= {target:g}x", one / ours >= target,
                            per="per run")

    def server_cpu(self) -> float:
        """CPU seconds the PostgreSQL server's processes used so far (the postmaster, its live
        children, and the children it reaped), from /proc; 0 for a server not started here."""
        try:
            with open(os.path.join(self.server.directory, "data", "postmaster.pid")) as handle:
                postmaster = int(handle.readline())
        except (OSError, ValueError):
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(pid) == postmaster:
                total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
            elif int(fields[1]) == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def simulated_network(self, delay: float) -> None:
        """The worker figure again with `delay` before each statement the workers send (a network
        round trip that costs no CPU here): how the workers scale where the CPUs are not the limit."""
        runs = self.n(RUNS, 300)
        self.wait_due()
        samples: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for _ in range(self.n(2, 1)):
            for workers in samples:
                samples[workers].append(self.drain(workers, delay, runs) / runs)
                self.probe(5)
        one = median(samples[1])
        label = f"{delay * 1000:g} ms per statement"
        self.facts[f"simulated_{label}_drain_s"] = {w: round(median(s) * runs, 3) for w, s in samples.items()}
        for workers, target in ((2, 1.6), (4, 2.0)):
            ours = median(samples[workers])
            self.custom_row(f"throughput, {workers} looping workers vs 1, {label} ({runs:,} due runs)", ours,
                            one, "1 looping worker", one / ours, f">= {target:g}x", one / ours >= target,
                            per="per run")

    def one_pass(self, workers: int, runs: int) -> float:
        """Seconds one `durable tick --workers N` takes over `runs` due runs; each run checked to
        have completed once and started its step once, and the steps' executions counted (each
        appends a line to one file): as many as runs, so none ran twice (a completed run's step
        ran at least once)."""
        url = self.database(f"pass{workers}")
        with pg_schema.connect(pg_schema.parse_url(url)) as conn:
            clone_pg_runs(conn, *self.counted_template, runs, "pass-")
        with open(self.executions, "w"):
            pass
        self.wait_due()
        began = time.perf_counter()
        out = run_child([DURABLE, "--store", url, "tick", "--workers", str(workers), "--json"], self.base,
                        self.env)[2]
        elapsed = time.perf_counter() - began
        summary = json.loads(out[out.index("{"):])
        with pg_schema.connect(pg_schema.parse_url(url)) as conn:
            (completed, started, most), = conn.execute(
                "SELECT count(*) FILTER (WHERE body LIKE '{\"type\":\"run_completed\"%%'),"
                " count(*) FILTER (WHERE body LIKE '{\"type\":\"step_started\"%%'),"
                " (SELECT max(n) FROM (SELECT count(*) AS n FROM durable_events"
                "   WHERE body LIKE '{\"type\":\"step_started\"%%' GROUP BY run_id) AS per_run)"
                " FROM durable_events")
        assert (completed, started, most) == (runs, runs, 1), (completed, started, most, summary)
        assert summary["completed"] == runs and not summary["errors"], summary
        with open(self.executions) as handle:
            executions = sum(1 for _ in handle)
        assert executions == runs, (executions, runs)
        self.facts.setdefault("one_pass_step_executions", {})[workers] = f"{executions:,} for {runs:,} runs"
        self.server.drop_database(url)
        return elapsed

    def many_runs(self) -> None:
        """10,000 due runs behind one tick pass: across 4 forked workers vs 1."""
        runs = self.n(10_000, 2_000)
        one = self.one_pass(1, runs) / runs
        self.probe(5)
        four = self.one_pass(4, runs) / runs
        self.facts["one_pass_s"] = {1: round(one * runs, 2), 4: round(four * runs, 2), "runs": runs}
        self.custom_row(f"one `tick --workers 4` over {runs:,} due runs, per run (every run once, none twice)",
                        four, one, "`tick --workers 1`", one / four, "<= 1-worker figure", four <= one,
                        per="per run")

    def resume_latency(self) -> None:
        """`durable resume` (a subprocess) until the woken run's next step has started."""
        count = self.n(12, 4)
        modes = {"enqueue": WORKER, "foreground": WORKER, "enqueue, --interval 30s": [
            "tick", "--loop", "--interval", "30s", "--workers", "1", "--json"], "in-process": WORKER}
        files = self.fresh("resume")
        samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        clicks: list[float] = []  # `python -c "import click"` beside each `--enqueue` sample: the load's measure
        for index, (mode, argv) in enumerate(modes.items()):
            url = self.database("resume")
            tokens = []
            for i in range(count):  # waiting runs, made before the worker starts
                token, path = f"bench-{i}", os.path.join(files, f"{index}-{i}")
                run = durable_cli.start(workloads.awaiting, token, path, store=url)
                assert run.status == "waiting", run
                tokens.append((token, path))
            pool = Workers(self, url, 1, argv)
            try:
                for token, path in tokens:
                    if mode == "in-process":  # no CLI start: the worker's own reaction
                        samples[mode].append(self.resume_in_process(url, token, path))
                        continue
                    samples[mode].append(self.one_resume(url, token, path, mode.startswith("enqueue")))
                    if mode == "enqueue":
                        clicks.append(run_child([sys.executable, "-c", "import click"], self.base, self.env)[0])
                    time.sleep(0.1)  # the worker finishes the run and goes back to waiting
            finally:
                summaries = pool.stop()
            assert all(s.get("errors") == [] for s in summaries), summaries
        got = samples["in-process"]
        self.facts["resume_worker_reaction_s"] = round(median(s["step"] - s["exit"] for s in got), 4)
        for mode, got in samples.items():
            self.facts[f"resume_{mode}"] = {
                "to_step_s": round(median(s["step"] for s in got), 4),
                "resume_process_exit_s": round(median(s["exit"] for s in got), 4),
                "delivered_by_resume_process": sum(s["delivery"] == "delivered" for s in got),
                "samples": len(got),
            }
        for name, code in (("python_import_click_s", "import click"), ("python_import_psycopg_s", "import psycopg"),
                           ("python_import_cli_and_pg_store_s",
                            "import durable_cli.cli, durable_cli._store.postgres")):
            self.facts[name] = round(median(run_child([sys.executable, "-c", code], self.base, self.env)[0]
                                            for _ in range(count)), 4)
        enqueue, click = median(s["step"] for s in samples["enqueue"]), median(clicks)
        self.facts["resume_enqueue_vs_import_click"] = round(enqueue / click, 2)
        self.custom_row("`durable resume --enqueue` to the next step starting, 1 looping worker", enqueue,
                        click, "`python -c \"import click\"` (between samples)", enqueue / click, "<= 100 ms",
                        enqueue <= 0.1)
        foreground = median(s["step"] for s in samples["foreground"])
        self.custom_row("`durable resume` (foreground) to the next step starting, same worker", foreground,
                        None, "-", None, "(none)", None)

    @staticmethod
    def resume_in_process(url: str, token: str, path: str) -> dict[str, Any]:
        """resume_hook(enqueue=True) here: `exit` is when it returned (the payload committed)."""
        began = time.perf_counter()
        delivery = durable_cli._client.resume_hook(token, json.loads(PAYLOAD), store=url, enqueue=True)
        returned = time.perf_counter() - began
        while not os.path.exists(path):
            if time.perf_counter() - began > 30:
                raise RuntimeError(f"resume of {token}: no step after 30 s")
            time.sleep(0.0005)
        return {"step": time.perf_counter() - began, "exit": returned, "delivery": delivery.status}

    def one_resume(self, url: str, token: str, path: str, enqueue: bool) -> dict[str, Any]:
        argv = [DURABLE, "--store", url, "resume", token, "-", "--json"] + (["--enqueue"] if enqueue else [])
        with tempfile.TemporaryFile() as out:
            began = time.perf_counter()
            child = subprocess.Popen(argv, cwd=self.base, env=self.env, stdin=subprocess.PIPE, stdout=out,
                                     stderr=subprocess.STDOUT)
            assert child.stdin is not None
            child.stdin.write(PAYLOAD)
            child.stdin.close()
            exited = step = None
            while step is None or exited is None:
                now = time.perf_counter()
                if exited is None and child.poll() is not None:
                    exited = now - began
                if step is None and os.path.exists(path):
                    step = now - began
                if now - began > 30:
                    raise RuntimeError(f"resume of {token}: no step after 30 s")
                time.sleep(0.0005)
            out.seek(0)
            text = out.read().decode(errors="replace")
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {child.returncode}: {text}")
        return {"step": step, "exit": exited, "delivery": json.loads(text)["delivery"]}


def processes_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the live processes `pids` have used so far, from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (idle and iowait are not busy)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def server_facts(admin: Any) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "shared_buffers",
             "full_page_writes")
    return {name: admin.execute(f"SHOW {name}").fetchone()[0] for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--skip-dbos", action="store_true", help="leave out the DBOS comparison")
    parser.add_argument("--dbos-python", default=os.path.join(DBOS_VENV, "bin", "python"),
                        help="python of a venv with dbos installed (created there when missing)")
    parser.add_argument("--json-out", metavar="FILE", help="also write every figure and fact as JSON")
    parser.add_argument("--simulate-delay-ms", type=float, default=2.0, metavar="MS",
                        help="delay before each statement of the simulated-network worker figure (0: skip it)")
    parser.add_argument("--only", action="append", metavar="FIGURE",
                        help="steps, dbos, throughput, simulated, many, resume (repeatable; default all)")
    opts = parser.parse_args()

    if not os.path.exists(DURABLE):
        sys.exit(f"no durable executable next to {sys.executable}: run this with the project's venv python")
    if opts.json_out:
        opts.json_out = os.path.abspath(opts.json_out)
    dbos_python = None if opts.skip_dbos else ensure_dbos(opts.dbos_python)  # before any timing
    load_before = os.getloadavg()[0]
    base = tempfile.mkdtemp(prefix="durable-bench-pg-")
    os.chdir(base)  # no durable.yaml of the caller's applies
    began = time.perf_counter()
    server = load_pgserver().start_server()
    try:
        bench = PgBench(base, opts.quick, server)
        bench.facts["server"] = server_facts(bench.admin)
        bench.open_floor()
        bench.make_template()
        bench.figure(bench.check_clones)
        wanted = set(opts.only or ["steps", "dbos", "throughput", "simulated", "many", "resume"])
        if "steps" in wanted:
            bench.figure(bench.step_overhead)
        if dbos_python and "dbos" in wanted:
            bench.figure(lambda: bench.vs_dbos(dbos_python))
        if "throughput" in wanted:
            bench.figure(bench.throughput)
        if opts.simulate_delay_ms and "simulated" in wanted:
            bench.figure(lambda: bench.simulated_network(opts.simulate_delay_ms / 1000))
        if "many" in wanted:
            bench.figure(bench.many_runs)
        if "resume" in wanted:
            bench.figure(bench.resume_latency)
        bench.admin.close()
        bench.floor_conn.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    facts = bench.facts
    facts["floor_row_bytes"] = len(bench.row_body)
    facts["floor_insert_s"] = median(bench.samples["insert"])
    floors = [row["floor_s"] for row in bench.rows]
    facts["load_average_1min_before_after"] = (round(load_before, 2), round(os.getloadavg()[0], 2))
    facts["machine"] = machine()
    facts["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts["wall_s"] = round(time.perf_counter() - began, 1)
    facts["cpu_profile_per_run"] = {label: {key: round(median(g[key] for g in got), 6) for key in got[0]}
                                    for label, got in bench.profile.items()}
    print_report(
        facts, bench.rows,
        f"PostgreSQL {facts['server']['server_version']} (fsync={facts['server']['fsync']}, "
        f"synchronous_commit={facts['server']['synchronous_commit']}, unix socket)",
        f"floor: one committed INSERT of a {facts['floor_row_bytes']}-byte journal row (autocommit, psycopg "
        f"{pg_schema.psycopg.__version__}) = {fmt_time(facts['floor_insert_s'])} (median of "
        f"{len(bench.samples['insert'])}, taken around every figure); 'x floor' is in committed INSERTs.",
        floors, opts.json_out,
    )
    if bench.profile:
        print("\n" + bench.profile_table())


if __name__ == "__main__":
    main()
