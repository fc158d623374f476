"""Several looping workers sharing one PostgreSQL store: no double execution, crashes recovered.

Real processes for the workers (`durable tick --loop`, SIGKILL, SIGSTOP/SIGCONT); the commands
that only read the store (`ls`, `inspect`, `export`) run in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import DURABLE, durable, durable_env, durable_in_process, spawn, write_module
from project import later

WORKFLOWS = """
    import os, time
    from durable_cli import get_step_metadata, sleep, step, workflow

    EFFECTS = os.environ["EFFECTS_DIR"]

    @step
    def work(i):
        meta = get_step_metadata()
        time.sleep(float(os.environ.get("STEP_SECONDS", "0")))
        with open(os.path.join(EFFECTS, str(os.getpid())), "a") as out:
            out.write(f"{meta.step_id} {meta.attempt}\\n")
        return i

    @workflow
    def ten_steps(n):
        sleep("1s")
        return sum(work(i) for i in range(n))

    @step
    def slow_step():
        time.sleep(float(os.environ.get("STEP_SECONDS", "0")))
        with open(os.path.join(EFFECTS, "slow"), "a") as out:
            out.write(f"{os.getpid()} {get_step_metadata().attempt}\\n")
        return os.getpid()

    @workflow
    def one_slow_step():
        sleep("1s")
        return slow_step()
"""


def _start_runs(project: Path, url: str, count: int, ref: str, *args: str) -> list[str]:
    """Create `count` runs in one process (they suspend in their first sleep)."""
    script = (
        "import json, sys; sys.path.insert(0, '.')\n"
        "from durable_cli import start\n"
        f"import {ref.split(':')[0]} as m\n"
        f"ids = [start(m.{ref.split(':')[1]}, *{list(map(json.loads, args))!r}, store={url!r}).run_id"
        f" for _ in range({count})]\n"
        "print(json.dumps(ids))\n"
    )
    out = subprocess.run([os.path.join(os.path.dirname(DURABLE), "python"), "-c", script], cwd=project,
                         env=durable_env({"EFFECTS_DIR": str(project / "effects")}),
                         capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def _worker(project: Path, url: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = durable_env({"EFFECTS_DIR": str(project / "effects"), **(extra or {})})
    return spawn([DURABLE, "--store", url, "tick", "--loop", "--interval", "0.2s", "--workers", "1", "--json"],
                            cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _statuses(url: str, project: Path) -> Counter[str]:
    code, out, err = durable_in_process("--store", url, "ls", "--json", cwd=project)
    assert code == 0, err
    return Counter(row["status"] for row in json.loads(out))


def _wait_all_completed(url: str, project: Path, total: int, limit: float, every: float = 0.5) -> Counter[str]:
    """The runs' statuses once all `total` completed (or `limit` seconds passed), read every `every`
    seconds (each read is an `ls` of every run: often, it takes the workers' CPU)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        statuses = _statuses(url, project)
        if statuses["completed"] == total:
            return statuses
        time.sleep(every)
    return _statuses(url, project)


def _effects(project: Path) -> list[tuple[str, int]]:
    lines = []
    for path in (project / "effects").iterdir():
        lines += [tuple(line.split()) for line in path.read_text().splitlines()]
    return [(step_id, int(attempt)) for step_id, attempt in lines]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_module(tmp_path, "flows", WORKFLOWS)
    (tmp_path / "effects").mkdir()
    return tmp_path


def test_three_workers_share_sixty_runs_and_survive_one_being_killed(project: Path, pg_url: str) -> None:
    url = pg_url + "&lease=2"
    run_ids = _start_runs(project, url, 60, "flows:ten_steps", "10")
    workers = [_worker(project, url, {"STEP_SECONDS": "0.002"}) for _ in range(3)]
    try:
        deadline = time.monotonic() + 30
        while not (project / "effects" / str(workers[0].pid)).exists():
            assert time.monotonic() < deadline, "the first worker never executed a step"
            time.sleep(0.01)
        workers[0].send_signal(signal.SIGKILL)  # it is executing runs now
        statuses = _wait_all_completed(url, project, len(run_ids), limit=90)
    finally:
        for worker in workers[1:]:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    assert statuses == Counter({"completed": 60})
    effects = _effects(project)
    executions = Counter(effects)
    assert max(executions.values()) == 1, "an attempt of a step executed twice"
    steps = Counter(step_id for step_id, _ in effects)
    assert len(steps) == 60 * 10
    for run_id in run_ids:
        code, out, err = durable_in_process("--store", url, "inspect", run_id, "--json", cwd=project)
        assert code == 0, err
        document = json.loads(out)
        assert document["result"] == 45
        seqs = [event["seq"] for event in document["events"]]
        assert seqs == list(range(1, len(seqs) + 1)), f"{run_id}: a gap or a duplicate seq"
        completed = [e for e in document["events"] if e["type"] == "step_completed"]
        assert len(completed) == 10, f"{run_id}: a step result recorded twice or missing"
        attempts = {(e["pos"], e["attempt"]) for e in document["events"] if e["type"] == "step_started"}
        for step_id, attempt in effects:
            if step_id.startswith(run_id + ":"):
                assert (int(step_id.rsplit(":", 1)[1]), attempt) in attempts


def test_a_worker_whose_lease_was_stolen_writes_nothing_more(project: Path, pg_url: str) -> None:
    url = pg_url + "&lease=0.5"
    [run_id] = _start_runs(project, url, 1, "flows:one_slow_step")
    time.sleep(1.1)
    # its step lasts long enough (1.5 s) to be stopped in it, and ends soon after the rescue
    stale = _worker(project, url, {"STEP_SECONDS": "1.5"})
    try:
        deadline = time.monotonic() + 10
        while not any(e["type"] == "step_started" for e in _events(url, project, run_id)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stale.send_signal(signal.SIGSTOP)
        rescuer = _worker(project, url, {"STEP_SECONDS": "0"})  # it claims the run once the lease lapses
        try:
            statuses = _wait_all_completed(url, project, 1, limit=20, every=0.1)
            assert statuses == Counter({"completed": 1})
            before = _events(url, project, run_id)
            stale.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 20
            while len((project / "effects" / "slow").read_text().splitlines()) < 2:
                assert time.monotonic() < deadline, "the stale worker never finished its step"
                time.sleep(0.05)
            stale.send_signal(signal.SIGTERM)  # it stops after the run in hand: its writes are done
            stale.wait(timeout=30)
            after = _events(url, project, run_id)
        finally:
            rescuer.send_signal(signal.SIGTERM)
            rescuer.wait(timeout=30)
    finally:
        stale.send_signal(signal.SIGCONT)
        stale.send_signal(signal.SIGTERM)
        stale.wait(timeout=30)
    assert after == before, "the worker that lost its lease appended to the journal"
    assert [e["type"] for e in after][-1] == "run_completed"
    assert after[-1]["result"] != stale.pid


def _events(url: str, project: Path, run_id: str) -> list[dict[str, object]]:
    code, out, err = durable_in_process("--store", url, "export", run_id, cwd=project)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


HOOKED = """
    from durable_cli import define_hook, workflow

    approval = define_hook("approval")

    @workflow
    def wait_for(token):
        for payload in approval.create(token=token):
            return payload
"""


def test_resume_enqueue_wakes_a_looping_worker_through_listen_not_polling(tmp_path: Path, pg_url: str) -> None:
    write_module(tmp_path, "hooked", HOOKED)
    code, out, err = durable("--store", pg_url, "run", "hooked:wait_for", "tok-listen", "--json", cwd=tmp_path)
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    worker = spawn([DURABLE, "--store", pg_url, "tick", "--loop", "--interval", "60s", "--workers", "1"],
                              cwd=tmp_path, env=durable_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # its first pass is over; the next poll is a minute away
        code, _, err = durable("--store", pg_url, "resume", "tok-listen", "-", "--enqueue", input='{"ok": 1}',
                               cwd=tmp_path)
        assert code == 0, err
        deadline = time.monotonic() + 10
        while durable_in_process("--store", pg_url, "inspect", run_id, "--json", cwd=tmp_path)[1].find('"completed"') < 0:
            assert time.monotonic() < deadline, "the worker was not woken by the notification"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert worker.returncode == 0


def test_one_tick_with_forked_workers_completes_and_counts_each_due_run_once(project: Path, pg_url: str) -> None:
    url = pg_url
    run_ids = _start_runs(project, url, 40, "flows:ten_steps", "2")
    code, out, err = durable("--store", url, "tick", "--now", later(2), "--workers", "4", "--json", cwd=project,
                             env={"EFFECTS_DIR": str(project / "effects")})
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["completed"], summary["resumed"], summary["errors"]) == (40, 40, [])
    executions = Counter(_effects(project))
    assert len(executions) == 40 * 2 and max(executions.values()) == 1
    assert _statuses(url, project) == Counter({"completed": len(run_ids)})


ONE_STEP = """
    import os
    from durable_cli import get_step_metadata, sleep, step, workflow

    @step
    def mark():
        with open(os.path.join(os.environ["EFFECTS_DIR"], str(os.getpid())), "a") as out:
            out.write(f"{get_step_metadata().step_id} {get_step_metadata().attempt}\\n")
        return 1

    @workflow
    def nap_then_mark():
        sleep("1s")
        return mark()
"""


def test_two_ticks_of_four_workers_each_over_the_same_due_runs_execute_every_run_once(
        tmp_path: Path, pg_url: str) -> None:
    """bench/pg.py's 10,000 runs behind one `tick --workers 4`, smaller and raced: two such ticks
    at once (8 worker processes over one due list): each run completes once, its step starts once."""
    write_module(tmp_path, "flows", ONE_STEP)
    (tmp_path / "effects").mkdir()
    run_ids = _start_runs(tmp_path, pg_url, 160, "flows:nap_then_mark")
    env = durable_env({"EFFECTS_DIR": str(tmp_path / "effects")})
    now = later(2)  # every run's sleep is over
    ticks = [spawn([DURABLE, "--store", pg_url, "tick", "--now", now, "--workers", "4", "--json"], cwd=tmp_path,
                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    summaries = []
    for tick in ticks:
        out, err = tick.communicate(timeout=300)
        assert tick.returncode == 0, err
        summaries.append(json.loads(out))
    assert [s["errors"] for s in summaries] == [[], []]
    assert sum(s["completed"] for s in summaries) == len(run_ids), summaries  # each counted once
    executions = Counter(_effects(tmp_path))
    assert len(executions) == len(run_ids) and max(executions.values()) == 1, "a step ran twice"
    assert _statuses(pg_url, tmp_path) == Counter({"completed": len(run_ids)})


CUT_OFF = """
    import os, time
    import psycopg
    from durable_cli import get_step_metadata, sleep, step, workflow
    from durable_cli._engine.context import current_execution

    @step
    def work():
        if os.getpid() == os.getpgid(0) and not os.path.exists(os.environ["CUT"]):
            # the tick's own process (its forked workers are not group leaders): the server ends
            # its store connection, as a failover or a DBA would
            open(os.environ["CUT"], "w").close()
            backend = current_execution.get().store._db.conn.info.backend_pid
            with psycopg.connect(os.environ["ADMIN_URL"], autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        else:
            time.sleep(0.2)
        with open(os.path.join(os.environ["EFFECTS_DIR"], str(os.getpid())), "a") as out:
            out.write(f"{get_step_metadata().step_id} {get_step_metadata().attempt}\\n")
        return 1

    @workflow
    def nap_then_work():
        sleep("1s")
        return work()
"""


def test_a_tick_whose_own_connection_is_cut_reports_that_run_and_goes_on_with_its_workers(
        tmp_path: Path, pg_url: str) -> None:
    """`tick --workers 2` whose main process loses its store connection mid-pass reports the run
    whose result could not be stored (one sentence, exit 1) and drives the rest of its share over a
    new connection; no forked worker outlives the tick (one left behind found its pipe closed and
    went on in a copy of the main process's code). The next tick completes that run: every step
    once (the step that saw the cut, whose result could not be stored, twice)."""
    write_module(tmp_path, "flows", CUT_OFF)
    (tmp_path / "effects").mkdir()
    url = pg_url + "&lease=0.5"
    run_ids = _start_runs(tmp_path, url, 12, "flows:nap_then_work")
    env = durable_env({"EFFECTS_DIR": str(tmp_path / "effects"), "CUT": str(tmp_path / "cut"), "ADMIN_URL": pg_url})
    tick = spawn([DURABLE, "--store", url, "tick", "--now", later(2), "--workers", "2"], cwd=tmp_path, env=env,
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    assert tick.stderr is not None
    tick.wait(timeout=60)
    try:
        os.killpg(tick.pid, 0)  # the tick's process group: its workers, if any is left
        left = True
    except ProcessLookupError:
        left = False
    err = tick.stderr.read().decode()
    tick.stderr.close()
    assert not left, "a forked worker outlived its tick"
    assert (tmp_path / "cut").exists()
    [line] = err.splitlines()
    assert tick.returncode == 1 and line.startswith("error: run ") and "PostgreSQL store" in line, err
    time.sleep(0.6)  # the lease of the run whose result was not stored lapses
    code, out, err = durable("--store", url, "tick", "--now", later(2), "--workers", "1", cwd=tmp_path,
                             env={"EFFECTS_DIR": str(tmp_path / "effects")})
    assert code == 0, err
    assert _statuses(url, tmp_path) == Counter({"completed": len(run_ids)})
    executions = Counter(step_id for step_id, _ in _effects(tmp_path))
    assert len(executions) == len(run_ids) and sorted(executions.values())[-2:] <= [1, 2], executions


def test_a_forked_worker_whose_tick_is_gone_exits_instead_of_going_on_in_the_ticks_code(tmp_path: Path) -> None:
    """A worker reports to its tick through a pipe: when the tick died meanwhile (SIGKILL), the
    report fails (EPIPE), and the worker must still exit then, not return into the copy of the
    tick's stack that the fork gave it (it would go on as a second tick)."""
    script = (
        "import os, sys, time\n"
        "from datetime import datetime, timezone\n"
        "import durable_cli._tick as tick\n"
        "class Done:\n"
        "    claims_due = False\n"
        "    def close(self): pass\n"
        "tick._drive = lambda *args, **kwargs: time.sleep(0.2)\n"
        "now = lambda: datetime.now(timezone.utc)\n"
        "pid, read = tick._fork_worker([(now(), 'r1')], Done, now, now(), lambda: None, None, {})\n"
        "os.close(read)  # as a tick that was killed: nobody reads the report\n"
        "print('returned', flush=True)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('worker', os.waitstatus_to_exitcode(status), flush=True)\n"
    )
    done = subprocess.run([os.path.join(os.path.dirname(DURABLE), "python"), "-c", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.splitlines()) == (0, ["returned", "worker 0"]), done.stderr
