"""durable.yaml, cron schedules, `durable schedules`, `durable prune` and examples/deploy, end to end.

The commands run in-process (click's CliRunner, see tests/helpers.py `durable_in_process`);
real `durable` processes only where a fresh interpreter or overlap is the point (what a command
imports, ticks at once). `tick --now` stands in for the passing of time, so nothing here waits
for a real minute. `tick --loop` and the progress bar
live in tests/test_tick_loop.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

from project import Project
from helpers import DURABLE, all_files, durable, durable_env, durable_in_process, journal_path, spawn

FLOWS = '''
import json
from durable_cli import define_hook, sleep, step, workflow

approval = define_hook("approval")


@workflow
def job(*args, **kwargs):
    note(json.dumps([list(args), kwargs]))
    return {"args": list(args), "kwargs": kwargs}


@step
def flaky():
    note("attempt")
    raise RuntimeError("the service is down")


@workflow
def always_failing():
    return flaky()


@workflow
def by_kind(kind):
    if kind == "fail":
        raise ValueError("this run fails")
    if kind == "sleep":
        sleep("1000 days")
    if kind in ("wait", "hooked"):
        for payload in approval.create(token="prune-" + kind):
            return payload
    return kind


@step
def hold_first():
    """The first run ever to get here waits for the test's `release` file; the others go on."""
    import os, time
    try:
        os.close(os.open(os.path.join(HERE, "held"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return "went on"
    while not os.path.exists(os.path.join(HERE, "release")):
        time.sleep(0.01)
    return "held"


@step
def note_run(line):
    note(line)


@workflow
def creation():
    """Notes its run's id and start in a step (which runs once the run is durable): the same line
    again if the step is retried, another for a new run of the same id."""
    from durable_cli import get_workflow_metadata
    meta = get_workflow_metadata()
    note_run(f"{meta.run_id} {meta.started_at.isoformat()}")


@workflow
def held_once():
    from durable_cli import get_workflow_metadata
    note(get_workflow_metadata().run_id)
    return hold_first()
'''


def utc(text: str) -> str:
    """An ISO instant for `tick --now` from "2026-10-25 00:31" (UTC)."""
    return text.replace(" ", "T") + ":00Z"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Scheduled(Project):
    """A Project with a durable.yaml in its root (so `durable` finds it in the cwd)."""

    def __init__(self, root: Path, schedules: list[dict[str, Any]] | None = None, store: str | None = None,
                 **top: Any) -> None:
        super().__init__(root, code=FLOWS, in_process=True, store=store)
        if schedules is not None or top:
            self.configure(schedules or [], **top)

    def configure(self, schedules: list[dict[str, Any]], **top: Any) -> None:
        document = dict(top)
        if schedules:
            document["schedules"] = [{"workflow": self.ref("job"), **entry} for entry in schedules]
        (self.root / "durable.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

    def tick_at(self, instant: str) -> dict[str, Any]:
        code, doc, err = self.json("tick", "--now", instant)
        assert code == 0, f"tick --now {instant} exited {code}: {err}"
        assert doc["errors"] == [], doc["errors"]
        summary: dict[str, Any] = doc
        return summary

    def fired(self) -> list[str]:
        """The run ids of every scheduled run, sorted."""
        runs = self.dir / "runs"
        return sorted(p.stem for p in runs.glob("sched-*.jsonl")) if runs.exists() else []

    def started(self, run_id: str) -> dict[str, Any]:
        return self.events(run_id)[0]


def hourly(name: str = "hourly", **extra: Any) -> dict[str, Any]:
    return {"name": name, "cron": "0 * * * *", **extra}


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, f"expected exit 2, got {code}: {out!r} {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr: {err!r}"
    return lines[0]


# durable.yaml: where it is found and what it sets


def test_durable_yaml_in_the_cwd_sets_the_journal_dir_relative_to_the_file(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, dir="data/journals")
    code, out, err = durable_in_process("run", "flows:job", "x", "--id", "from-cwd", cwd=tmp_path)
    assert code == 0, err
    assert journal_path(tmp_path / "data" / "journals", "from-cwd").exists()
    assert not project.dir.exists()


def test_config_option_names_the_file_and_dir_is_relative_to_that_file(tmp_path: Path) -> None:
    Scheduled(tmp_path / "app")
    (tmp_path / "app" / "conf").mkdir()
    (tmp_path / "app" / "conf" / "prod.yaml").write_text("dir: ../state\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = durable_in_process("--config", str(tmp_path / "app" / "conf" / "prod.yaml"),
                             "run", str(tmp_path / "app" / "flows.py") + ":job", "--id", "by-option",
                             cwd=elsewhere)
    assert code == 0, err
    assert journal_path(tmp_path / "app" / "state", "by-option").exists()
    assert not (elsewhere / "journals").exists()


def test_durable_config_environment_variable_names_the_file(tmp_path: Path) -> None:
    Scheduled(tmp_path / "app")
    (tmp_path / "settings.yaml").write_text("dir: env-journals\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = durable_in_process("run", str(tmp_path / "app" / "flows.py") + ":job", "--id", "by-env",
                             cwd=elsewhere, env={"DURABLE_CONFIG": str(tmp_path / "settings.yaml")})
    assert code == 0, err
    assert journal_path(tmp_path / "env-journals", "by-env").exists()


def test_dir_option_wins_over_dir_in_durable_yaml(tmp_path: Path) -> None:
    Scheduled(tmp_path, dir="from-yaml")
    code, out, err = durable_in_process("--dir", str(tmp_path / "from-option"), "run", "flows:job",
                             "--id", "option-wins", cwd=tmp_path)
    assert code == 0, err
    assert journal_path(tmp_path / "from-option", "option-wins").exists()
    assert not (tmp_path / "from-yaml").exists()


def test_import_paths_make_a_scheduled_workflow_importable(tmp_path: Path) -> None:
    project = Scheduled(tmp_path)
    project.write(FLOWS, module="src/jobs")
    (tmp_path / "durable.yaml").write_text(yaml.safe_dump({
        "import_paths": ["src"],
        "schedules": [{"name": "from-src", "cron": "0 * * * *", "workflow": "jobs:job"}],
    }))
    project.tick_at(utc("2026-05-01 09:30"))
    project.tick_at(utc("2026-05-01 10:00"))
    assert project.fired() == ["sched-from-src-20260501T1000"]
    assert project.result("sched-from-src-20260501T1000") == {"args": [], "kwargs": {}}


def test_import_paths_make_a_workflow_importable_for_durable_run(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, import_paths=["src"])
    project.write(FLOWS, module="src/jobs")
    code, out, err = project.cli("run", "jobs:job", "eu", "--id", "via-import-path")
    assert code == 0, f"durable run jobs:job exited {code}: {err}"
    assert project.result("via-import-path") == {"args": ["eu"], "kwargs": {}}


def test_defaults_set_max_retries_and_retry_delay_of_steps(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, defaults={"max_retries": 1, "retry_delay": "1h"})
    doc = project.run("always_failing", run_id="flaky-run")
    assert doc["status"] != "failed", doc  # waiting an hour for the second attempt
    failed = [e for e in project.events("flaky-run") if e["type"] == "step_failed"]
    assert len(failed) == 1
    delay = (datetime.fromisoformat(failed[0]["retry_at"].replace("Z", "+00:00"))
             - datetime.fromisoformat(failed[0]["at"].replace("Z", "+00:00")))
    assert timedelta(minutes=59) <= delay <= timedelta(minutes=61), delay  # retry_delay: 1h
    project.tick(hours=2)
    assert project.log() == ["attempt", "attempt"]  # max_retries: 1, so two attempts in all
    assert project.events("flaky-run")[-1]["type"] == "run_failed"


def test_without_a_max_retries_default_a_step_has_more_than_two_attempts(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, defaults={"retry_delay": "1h"})
    project.run("always_failing", run_id="flaky-run")
    project.tick(hours=2)
    assert project.log() == ["attempt", "attempt"]
    assert project.events("flaky-run")[-1]["type"] != "run_failed"


def test_unknown_top_level_key_exits_2_naming_the_key_and_the_file(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, colour="blue")
    line = one_line_error(*project.cli("tick", "--now", utc("2026-05-01 10:00")))
    assert "colour" in line and "durable.yaml" in line


def test_a_key_given_twice_exits_2_naming_it_and_its_line_for_every_command_that_reads_the_file(
        tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys: the first `cron:` would be dropped silently."""
    project = Scheduled(tmp_path)
    (tmp_path / "durable.yaml").write_text(
        f'schedules:\n  - name: hourly\n    cron: "0 * * * *"\n    cron: "*/5 * * * *"\n'
        f'    workflow: {project.ref("job")}\n')
    expected = "Error: durable.yaml: not valid YAML (line 4): duplicate key 'cron' (first at line 3)"
    for command in (["tick"], ["schedules"], ["schedules", "trigger", "hourly"], ["run", project.ref("job")],
                    ["queues"]):
        assert one_line_error(*project.cli(*command)) == expected, command
    code, out, err = durable("ls", cwd=tmp_path)  # a real process, finding durable.yaml for its store
    assert one_line_error(code, out, err) == expected
    assert not project.dir.exists()


def test_unknown_schedule_key_exits_2_naming_the_key_and_the_file(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly(catchup="all")])
    line = one_line_error(*project.cli("schedules"))
    assert "catchup" in line and "durable.yaml" in line


def test_wrong_type_exits_2_naming_the_key_and_the_file(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, import_paths="src")
    line = one_line_error(*project.cli("tick", "--now", utc("2026-05-01 10:00")))
    assert "import_paths" in line and "durable.yaml" in line


def test_wrong_type_in_defaults_exits_2_naming_the_key_and_the_file(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, defaults={"max_retries": "five"})
    line = one_line_error(*project.cli("run", project.ref("job")))
    assert "max_retries" in line and "durable.yaml" in line


def test_errors_name_the_file_given_by_config_option(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("dri: journals\n")
    line = one_line_error(*durable_in_process("--config", str(tmp_path / "other.yaml"), "schedules", cwd=tmp_path))
    assert "dri" in line and "other.yaml" in line


def test_a_missing_config_file_exits_2_naming_it(tmp_path: Path) -> None:
    line = one_line_error(*durable_in_process("--config", str(tmp_path / "absent.yaml"), "tick", cwd=tmp_path))
    assert "absent.yaml" in line
    line = one_line_error(*durable_in_process("tick", cwd=tmp_path, env={"DURABLE_CONFIG": "gone.yaml"}))
    assert "gone.yaml" in line and "DURABLE_CONFIG" in line


def test_duplicate_schedule_names_exit_2_naming_the_name_and_the_file(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly("twice"), {"name": "twice", "cron": "0 2 * * *"}])
    line = one_line_error(*project.cli("tick"))
    assert "twice" in line and "durable.yaml" in line


def test_a_schedule_name_outside_a_z_0_9_dash_underscore_exits_2(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly("Nightly Report")])
    line = one_line_error(*project.cli("schedules"))
    assert "Nightly Report" in line and "durable.yaml" in line


def test_commands_without_a_config_file_do_not_import_yaml(tmp_path: Path) -> None:
    code, out, err = durable("--dir", str(tmp_path / "j"), "tick", cwd=tmp_path,
                             env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert code == 0, err
    imported = {line.split("|")[-1].strip() for line in err.splitlines() if "|" in line}
    assert "yaml" not in imported and "croniter" not in imported
    (tmp_path / "durable.yaml").write_text("dir: j\n")
    code, out, err = durable("tick", cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert code == 0, err
    assert "yaml" in {line.split("|")[-1].strip() for line in err.splitlines() if "|" in line}


def test_invalid_cron_exits_2_naming_the_schedule_and_the_expression(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [{"name": "broken-cron", "cron": "61 * * * *"}])
    line = one_line_error(*project.cli("tick", "--now", utc("2026-05-01 10:00")))
    assert "broken-cron" in line and "61 * * * *" in line


def test_invalid_time_zone_exits_2_naming_the_schedule_and_the_zone(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly("martian", timezone="Mars/Olympus_Mons")])
    line = one_line_error(*project.cli("schedules"))
    assert "martian" in line and "Mars/Olympus_Mons" in line


def test_a_file_that_is_not_yaml_exits_2_naming_the_file(tmp_path: Path) -> None:
    Scheduled(tmp_path)
    (tmp_path / "durable.yaml").write_text("schedules: [unclosed\n  - {name: x\n")
    line = one_line_error(*durable_in_process("tick", "--now", utc("2026-05-01 10:00"), cwd=tmp_path))
    assert "durable.yaml" in line


# Schedules: which instants fire


def test_a_new_schedule_does_not_fire_instants_before_the_first_tick_that_saw_it(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly()])
    assert project.tick_at(utc("2026-05-01 10:30"))["fired"] == 0
    assert project.tick_at(utc("2026-05-01 10:59"))["fired"] == 0
    assert project.fired() == []
    assert project.tick_at(utc("2026-05-01 11:00"))["fired"] == 1
    assert project.fired() == ["sched-hourly-20260501T1100"]


def test_a_schedule_added_later_ignores_instants_before_the_tick_that_first_saw_it(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly("early")])
    project.tick_at(utc("2026-05-01 08:30"))
    project.configure([hourly("early"), hourly("late")])
    project.tick_at(utc("2026-05-01 10:30"))  # early catches up 10:00; late is seen for the first time
    assert project.fired() == ["sched-early-20260501T1000"]
    project.tick_at(utc("2026-05-01 11:00"))
    assert project.fired() == ["sched-early-20260501T1000", "sched-early-20260501T1100",
                               "sched-late-20260501T1100"]


def test_two_ticks_at_the_same_instant_fire_it_once(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly()])
    project.tick_at(utc("2026-05-01 09:30"))
    assert project.tick_at(utc("2026-05-01 10:00"))["fired"] == 1
    assert project.tick_at(utc("2026-05-01 10:00"))["fired"] == 0
    assert project.fired() == ["sched-hourly-20260501T1000"]
    assert len(project.log()) == 1


def _overlapping_ticks(project: Scheduled, instant: str, count: int) -> list[dict[str, Any]]:
    """Start `count` `durable tick --now instant` processes at once; their JSON summaries."""
    procs = [spawn([DURABLE, "--dir", str(project.dir), "tick", "--now", instant, "--json"],
                              cwd=project.root, env=durable_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(count)]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        summaries.append(json.loads(out))
    return summaries


def test_overlapping_ticks_at_the_same_instant_fire_it_exactly_once(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly()])
    project.tick_at(utc("2026-05-01 09:30"))
    _overlapping_ticks(project, utc("2026-05-01 10:00"), 6)
    assert project.fired() == ["sched-hourly-20260501T1000"]
    assert project.log() == ['[[], {}]']  # the workflow ran once
    assert project.result("sched-hourly-20260501T1000") == {"args": [], "kwargs": {}}
    assert [e["type"] for e in project.events("sched-hourly-20260501T1000")].count("run_started") == 1


def _catch_up_race(tmp_path: Path) -> tuple[Scheduled, list[str], list[dict[str, Any]]]:
    """Five ticks at once, each catching up the same 31 missed instants (catch_up: all)."""
    project = Scheduled(tmp_path, [{"name": "each", "cron": "*/2 * * * *", "catch_up": "all"}])
    project.tick_at(utc("2026-05-01 09:59"))
    summaries = _overlapping_ticks(project, utc("2026-05-01 11:00"), 5)
    expected = [f"sched-each-20260501T10{m:02d}" for m in range(0, 60, 2)] + ["sched-each-20260501T1100"]
    return project, expected, summaries


def test_overlapping_ticks_catching_up_fire_each_missed_instant_exactly_once(tmp_path: Path) -> None:
    project, expected, summaries = _catch_up_race(tmp_path)
    assert project.fired() == expected
    assert len(project.log()) == len(expected)
    assert all(s["errors"] == [] for s in summaries)
    for run_id in expected:
        assert [e["type"] for e in project.events(run_id)].count("run_started") == 1


def test_overlapping_tick_summaries_count_each_firing_once(tmp_path: Path) -> None:
    project, expected, summaries = _catch_up_race(tmp_path)
    assert project.fired() == expected
    assert sum(s["fired"] for s in summaries) == len(expected), [s["fired"] for s in summaries]


def test_an_instant_pruned_by_an_overlapping_tick_is_not_fired_again_by_a_slower_tick(tmp_path: Path) -> None:
    """Ticks B and A catch up the same minutes (catch_up: all) under `retention: completed: 0`. B
    fires the oldest and is held in it; A fires the rest, records the schedule as handled, and its
    retention prunes them at once. B, let go, must not fire those instants a second time."""
    project = Scheduled(tmp_path, retention={"completed": 0})
    project.configure([{"name": "each", "cron": "* * * * *", "catch_up": "all",
                        "workflow": project.ref("held_once")}], retention={"completed": 0})
    project.tick_at(iso(datetime.now(timezone.utc) - timedelta(minutes=4)))  # first seen 4 min ago
    slow = spawn([DURABLE, "--dir", str(project.dir), "tick", "--json"], cwd=project.root, env=durable_env(),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while not (project.root / "held").exists() and slow.poll() is None:
            time.sleep(0.01)  # until B holds the oldest instant's run (or ended: the assert says)
        assert (project.root / "held").exists()
        code, doc, err = project.json("tick")
        assert code == 0, err
        assert doc["fired"] >= 2 and doc["pruned"] >= 2, doc
    finally:
        (project.root / "release").touch()
        out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err.decode()
    fired = project.log()
    assert len(fired) == len(set(fired)), f"instants fired twice: {sorted(fired)}"


def test_a_slower_tick_does_not_move_back_what_a_faster_tick_recorded_and_pruned(tmp_path: Path) -> None:
    """Tick A (at 10:00:30) is held in the 09:59 instant's run. Tick B (at 10:01:30) fires 10:00
    and 10:01, records the schedule as handled to 10:01:30, and its retention prunes both runs.
    A, let go, must not save its older 10:00:30 over that record: a tick at 10:01:45 would then
    find 10:01 unhandled, its run gone, and fire it again."""
    project = Scheduled(tmp_path, retention={"completed": 0})
    project.configure([{"name": "each", "cron": "* * * * *", "catch_up": "all",
                        "workflow": project.ref("held_once")}], retention={"completed": 0})
    project.tick_at("2026-05-01T09:58:30Z")
    slow = spawn([DURABLE, "--dir", str(project.dir), "tick", "--now", "2026-05-01T10:00:30Z", "--json"],
                 cwd=project.root, env=durable_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while not (project.root / "held").exists() and slow.poll() is None:
            time.sleep(0.01)  # until A holds the 09:59 instant's run (or ended: the assert says)
        assert (project.root / "held").exists()
        assert project.tick_at("2026-05-01T10:01:30Z")["pruned"] == 2
    finally:
        (project.root / "release").touch()
        out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err.decode()
    assert project.tick_at("2026-05-01T10:01:45Z")["fired"] == 0
    fired = project.log()
    assert sorted(fired) == [f"sched-each-20260501T{hhmm}" for hhmm in ("0959", "1000", "1001")], fired


def test_an_instant_fires_once_when_its_tick_is_killed_at_any_operation_and_prune_runs_before_the_next(
        tmp_path: Path) -> None:
    """A tick fires the 10:00 instant (its run completes at once) and then saves the schedule's
    state. Killed at each store operation, then `prune --older-than 0`, then two more ticks (with
    a prune between): one run was ever created for the instant. Before the fix, a tick killed after the
    run completed but before the save left the run as the only sign the instant fired, prune
    deleted it and the next tick fired the instant again."""
    base = Scheduled(tmp_path / "base")
    base.configure([hourly(workflow=base.ref("creation"))])
    base.tick_at(utc("2026-05-01 09:30"))
    ops = tmp_path / "ops.txt"
    base.copy(tmp_path / "count").cli("tick", "--now", utc("2026-05-01 10:00"), env={"DURABLE_CRASH_LOG": str(ops)})
    points = ops.read_text().splitlines()
    assert any(line.endswith(" schedule.save") for line in points), points
    for n in range(1, len(points) + 1):
        project = base.copy(tmp_path / f"crash{n}")
        assert project.cli("tick", "--now", utc("2026-05-01 10:00"), crash_at=n).killed, points[n - 1]
        for step in (("prune", "--older-than", "0s"), ("tick", "--now", utc("2026-05-01 10:02")),
                     ("prune", "--older-than", "0s"), ("tick", "--now", utc("2026-05-01 10:04"))):
            code, _, err = project.cli(*step)
            assert code == 0, err
        creations = sorted(set(project.log()))
        assert len(creations) == 1, f"killed at {points[n - 1]}, the instant fired twice: {creations}"
        assert creations[0].startswith("sched-hourly-20260501T1000 "), creations


def test_a_schedule_whose_workflow_cannot_be_imported_is_reported_by_tick(tmp_path: Path) -> None:
    project = Scheduled(tmp_path)
    (tmp_path / "durable.yaml").write_text(yaml.safe_dump({"schedules": [
        {"name": "typo", "cron": "0 * * * *", "workflow": "flowz:job"}]}))
    project.tick_at(utc("2026-05-01 09:30"))
    code, doc, err = project.json("tick", "--now", utc("2026-05-01 10:00"))
    assert code == 1, err
    assert len(doc["errors"]) == 1
    assert "typo" in doc["errors"][0]["error"] and "flowz" in doc["errors"][0]["error"]


def test_an_instant_that_failed_to_import_fires_once_the_workflow_is_fixed(tmp_path: Path) -> None:
    project = Scheduled(tmp_path)
    (tmp_path / "durable.yaml").write_text(yaml.safe_dump({"schedules": [
        {"name": "typo", "cron": "0 * * * *", "workflow": "flowz:job"}]}))
    project.tick_at(utc("2026-05-01 09:30"))
    project.json("tick", "--now", utc("2026-05-01 10:00"))  # reports: no module named 'flowz'
    project.write(FLOWS, module="flowz")
    project.tick_at(utc("2026-05-01 10:10"))
    assert project.fired() == ["sched-typo-20260501T1000"]


def test_the_run_id_and_start_event_name_the_schedule_and_the_instant(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [{"name": "nightly-report", "cron": "0 2 * * *",
                                    "timezone": "Europe/Berlin"}])
    project.tick_at(utc("2026-05-01 12:00"))
    project.tick_at(utc("2026-05-02 00:05"))  # 02:05 in Berlin (CEST, UTC+2)
    assert project.fired() == ["sched-nightly-report-20260502T0200"]
    started = project.started("sched-nightly-report-20260502T0200")
    assert started["schedule"]["name"] == "nightly-report"
    assert started["schedule"]["instant"].startswith("2026-05-02T00:00:00")


def test_catch_up_latest_fires_only_the_most_recent_missed_instant(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly()])  # latest is the default
    project.tick_at(utc("2026-05-01 00:30"))
    assert project.tick_at(utc("2026-05-01 05:30"))["fired"] == 1
    assert project.fired() == ["sched-hourly-20260501T0500"]
    assert project.tick_at(utc("2026-05-01 05:45"))["fired"] == 0
    assert project.fired() == ["sched-hourly-20260501T0500"]


def test_catch_up_all_fires_each_missed_instant(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly(catch_up="all")])
    project.tick_at(utc("2026-05-01 00:30"))
    assert project.tick_at(utc("2026-05-01 03:30"))["fired"] == 3
    assert project.fired() == [f"sched-hourly-20260501T{h:02d}00" for h in (1, 2, 3)]
    assert project.tick_at(utc("2026-05-01 03:45"))["fired"] == 0


def test_catch_up_all_fires_at_most_the_100_most_recent_missed_instants(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [{"name": "minutely", "cron": "* * * * *", "catch_up": "all"}])
    start = datetime(2026, 5, 1, 0, 0, 30, tzinfo=timezone.utc)
    project.tick_at(iso(start))
    now = start + timedelta(minutes=150)  # 150 instants missed
    assert project.tick_at(iso(now))["fired"] == 100
    fired = project.fired()
    assert len(fired) == 100
    assert fired[0] == "sched-minutely-20260501T0051"  # the 100 most recent: 00:51 .. 02:30
    assert fired[-1] == "sched-minutely-20260501T0230"


def test_catch_up_none_skips_missed_instants_and_fires_the_next_one(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly(catch_up="none")])
    project.tick_at(utc("2026-05-01 00:30"))
    assert project.tick_at(utc("2026-05-01 03:30"))["fired"] == 0
    assert project.fired() == []
    assert project.tick_at(utc("2026-05-01 04:00"))["fired"] == 1
    assert project.tick_at(utc("2026-05-01 04:30"))["fired"] == 0
    assert project.fired() == ["sched-hourly-20260501T0400"]


def test_args_and_kwargs_are_passed_to_the_workflow(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly(args=["eu", 3], kwargs={"dry_run": True, "tags": ["a"]})])
    project.tick_at(utc("2026-05-01 09:30"))
    project.tick_at(utc("2026-05-01 10:00"))
    run_id = "sched-hourly-20260501T1000"
    assert project.result(run_id) == {"args": ["eu", 3], "kwargs": {"dry_run": True, "tags": ["a"]}}
    assert project.started(run_id)["args"] == ["eu", 3]
    assert project.started(run_id)["kwargs"] == {"dry_run": True, "tags": ["a"]}


# Daylight saving time in Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC),
# 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC): the wall hour 02:00-03:00 occurs twice.


def _ticks_at(project: Scheduled, day: str, *times: str) -> dict[str, list[str]]:
    """Tick at each UTC time of `day`; the run ids each tick fired, for the ticks that fired any."""
    fired: dict[str, list[str]] = {}
    for hhmm in times:
        before = set(project.fired())
        project.tick_at(utc(f"{day} {hhmm}"))
        new = sorted(set(project.fired()) - before)
        if new:
            fired[hhmm] = new
    return fired


def test_fall_back_night_fires_a_repeated_0230_once(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [{"name": "night", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}])
    project.tick_at(utc("2026-10-24 12:00"))
    project.tick_at(utc("2026-10-25 00:31"))  # 02:31 CEST: the first 02:30
    assert project.fired() == ["sched-night-20261025T0230"]
    assert project.started("sched-night-20261025T0230")["schedule"]["instant"].startswith(
        "2026-10-25T00:30:00")
    for tick in ("01:00", "01:29", "01:30", "01:31", "01:45", "02:30", "03:30"):  # 01:31 = the second 02:30
        assert project.tick_at(utc(f"2026-10-25 {tick}"))["fired"] == 0, tick
    assert project.fired() == ["sched-night-20261025T0230"]
    assert len(project.log()) == 1


def test_fall_back_night_fires_the_repeated_wall_time_once_when_ticks_skip_the_first(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [{"name": "night", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}])
    project.tick_at(utc("2026-10-24 12:00"))
    project.tick_at(utc("2026-10-25 01:45"))  # no tick between the two 02:30s: caught up once
    project.tick_at(utc("2026-10-25 02:15"))
    assert project.fired() == ["sched-night-20261025T0230"]


def test_fall_back_night_fires_an_hourly_schedule_once_per_wall_hour(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly(timezone="Europe/Berlin")])
    project.tick_at(utc("2026-10-24 23:30"))  # 01:30 CEST
    fired = _ticks_at(project, "2026-10-25", "00:00", "00:45", "01:00", "01:05", "01:59", "02:00", "03:00")
    # 02:00 occurs at 00:00 UTC (CEST) and 01:00 UTC (CET) and fires once, at the first
    assert fired == {"00:00": ["sched-hourly-20261025T0200"], "02:00": ["sched-hourly-20261025T0300"],
                     "03:00": ["sched-hourly-20261025T0400"]}
    instant = project.started("sched-hourly-20261025T0200")["schedule"]["instant"]
    assert instant.startswith("2026-10-25T00:00:00")
    assert len(project.log()) == 3


def test_fall_back_night_catching_up_all_fires_the_repeated_hour_once(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly(timezone="Europe/Berlin", catch_up="all")])
    project.tick_at(utc("2026-10-24 23:30"))  # 01:30 CEST
    project.tick_at(utc("2026-10-25 02:30"))  # 03:30 CET: 02:00 CEST, 02:00 CET and 03:00 CET missed
    assert project.fired() == ["sched-hourly-20261025T0200", "sched-hourly-20261025T0300"]


def test_spring_forward_night_fires_a_missing_0230_once_at_0300_local(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [{"name": "night", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}])
    project.tick_at(utc("2026-03-28 12:00"))
    assert project.tick_at(utc("2026-03-29 00:59"))["fired"] == 0  # 01:59 CET
    assert project.tick_at(utc("2026-03-29 01:00"))["fired"] == 1  # 03:00 CEST, the gap's end
    assert project.fired() == ["sched-night-20260329T0300"]
    assert project.started("sched-night-20260329T0300")["schedule"]["instant"].startswith(
        "2026-03-29T01:00:00")
    for tick in ("01:30", "02:30", "12:00"):
        assert project.tick_at(utc(f"2026-03-29 {tick}"))["fired"] == 0, tick
    project.tick_at(utc("2026-03-30 00:30"))  # 02:30 CEST the next night
    assert project.fired() == ["sched-night-20260329T0300", "sched-night-20260330T0230"]


def test_spring_forward_night_fires_an_hourly_schedule_once_for_the_missing_hour(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [hourly(timezone="Europe/Berlin")])
    project.tick_at(utc("2026-03-28 23:30"))  # 00:30 CET
    fired = _ticks_at(project, "2026-03-29", "00:00", "00:30", "00:59", "01:00", "01:30", "02:00")
    # 00:00 UTC = 01:00 CET; 01:00 UTC = 03:00 CEST (02:00 does not exist); 02:00 UTC = 04:00 CEST
    assert fired == {"00:00": ["sched-hourly-20260329T0100"], "01:00": ["sched-hourly-20260329T0300"],
                     "02:00": ["sched-hourly-20260329T0400"]}


# durable schedules


def _next_new_year(after: datetime) -> str:
    return f"{after.year + 1}-01-01T00:00:00"


def test_schedules_lists_each_schedule_with_last_and_next_fire_time(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [{"name": "new-year", "cron": "0 0 1 1 *"}])
    project.tick_at(utc("2020-12-31 12:00"))
    project.tick_at(utc("2021-01-01 00:10"))
    project.configure([{"name": "new-year", "cron": "0 0 1 1 *"}, hourly("never-ticked")])
    code, out, err = project.cli("schedules")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert set(lines) == {"new-year", "never-ticked"}
    assert "2021-01-01T00:00" in lines["new-year"]  # last fire
    assert _next_new_year(datetime.now(timezone.utc)) in lines["new-year"]  # next fire (real now)
    assert "last -" in lines["never-ticked"]


def test_schedules_json_lists_each_schedule_with_last_and_next_fire_time(tmp_path: Path) -> None:
    project = Scheduled(tmp_path, [{"name": "new-year", "cron": "0 0 1 1 *"}])
    project.tick_at(utc("2020-12-31 12:00"))
    project.tick_at(utc("2021-01-01 00:10"))
    project.configure([{"name": "new-year", "cron": "0 0 1 1 *"}, hourly("never-ticked")])
    code, rows, err = project.json("schedules")
    assert code == 0, err
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"new-year", "never-ticked"}
    assert by_name["new-year"]["last_fire"].startswith("2021-01-01T00:00:00")
    assert by_name["new-year"]["next_fire"].startswith(_next_new_year(datetime.now(timezone.utc)))
    assert by_name["never-ticked"]["last_fire"] is None
    next_hour = datetime.fromisoformat(by_name["never-ticked"]["next_fire"].replace("Z", "+00:00"))
    assert timedelta(0) < next_hour - datetime.now(timezone.utc) <= timedelta(hours=1)


def test_schedules_without_any_prints_no_schedules(tmp_path: Path) -> None:
    project = Scheduled(tmp_path)
    code, out, err = project.cli("schedules")
    assert code == 0, err
    assert out.strip() == "no schedules"
    assert project.json("schedules")[1] == []


# durable prune


def _old_runs(tmp_path: Path) -> tuple[Scheduled, dict[str, str]]:
    """Runs finished (completed, failed, completed after a hook) and unfinished (sleeping, waiting) 60 days ago, plus a
    run completed just now; returns the project and the run id of each kind."""
    kinds = ("ok", "fail", "sleep", "wait", "hooked")
    project = Scheduled(tmp_path)
    project.configure([{"name": kind, "cron": "0 0 * * *", "args": [kind]} for kind in kinds])
    text = (tmp_path / "durable.yaml").read_text().replace("flows:job", "flows:by_kind")
    (tmp_path / "durable.yaml").write_text(text)
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    seen, fire = midnight - timedelta(days=61, hours=1), midnight - timedelta(days=60)
    project.tick_at(iso(seen))
    project.tick_at(iso(fire + timedelta(minutes=1)))
    ids = {kind: f"sched-{kind}-{fire:%Y%m%dT%H%M}" for kind in kinds}
    assert project.fired() == sorted(ids.values())
    code, _, err = project.resume("prune-hooked", {"approved": True}, "--enqueue")
    assert code == 0, err
    project.tick_at(iso(fire + timedelta(minutes=2)))  # delivered, and completed, 60 days ago
    (tmp_path / "durable.yaml").unlink()  # no more firings
    project.run("by_kind", "ok", run_id="recent")
    ids["recent"] = "recent"
    return project, ids


def _statuses(project: Scheduled) -> dict[str, str]:
    return {row["run_id"]: row["status"] for row in project.runs()}


def test_prune_status_completed_removes_old_completed_runs_and_prints_them(tmp_path: Path) -> None:
    project, ids = _old_runs(tmp_path)
    code, out, err = project.cli("prune", "--older-than", "30d", "--status", "completed")
    assert code == 0, err
    assert f"removed {ids['ok']}" in out
    assert ids["fail"] not in out and "recent" not in out
    assert not journal_path(project.dir, ids["ok"]).exists()
    assert not any(ids["ok"] in path for path in all_files(project.dir))
    assert f"removed {ids['hooked']}" in out
    assert set(_statuses(project)) == {ids["fail"], ids["sleep"], ids["wait"], "recent"}


def test_prune_never_removes_a_sleeping_or_waiting_run(tmp_path: Path) -> None:
    project, ids = _old_runs(tmp_path)
    code, doc, err = project.json("prune", "--older-than", "30d")
    assert code == 0, err
    assert sorted(doc["removed"]) == sorted([ids["ok"], ids["fail"], ids["hooked"]])
    statuses = _statuses(project)
    assert statuses == {ids["sleep"]: "sleeping", ids["wait"]: "waiting", "recent": "completed"}
    assert journal_path(project.dir, ids["sleep"]).exists()
    assert journal_path(project.dir, ids["wait"]).exists()
    # the waiting run still receives its payload
    code, _, err = project.resume("prune-wait", {"approved": True})
    assert code == 0, err


def test_prune_removes_index_entries_of_the_runs_it_removes(tmp_path: Path) -> None:
    project, ids = _old_runs(tmp_path)
    before = all_files(project.dir)
    code, doc, err = project.json("prune", "--older-than", "30d")
    assert code == 0, err
    gone = before - all_files(project.dir)
    for kind in ("ok", "fail", "hooked"):
        assert f"runs/{ids[kind]}.jsonl" in gone
    removed = [ids["ok"], ids["fail"], ids["hooked"]]
    mentions = [path for path in all_files(project.dir)
                if any(run_id in path or run_id in (project.dir / path).read_text(errors="replace")
                       for run_id in removed)]
    assert mentions == [], mentions  # no lock, due entry, token or stream names a removed run
    code, out, err = project.cli("inspect", ids["ok"])
    assert code != 0


def test_prune_refuses_an_unfinished_status(tmp_path: Path) -> None:
    project, ids = _old_runs(tmp_path)
    code, out, err = project.cli("prune", "--older-than", "30d", "--status", "sleeping")
    assert code == 2
    assert journal_path(project.dir, ids["sleep"]).exists()


def test_prune_with_nothing_old_enough_removes_nothing(tmp_path: Path) -> None:
    project = Scheduled(tmp_path)
    project.run("job", run_id="fresh")
    code, out, err = project.cli("prune", "--older-than", "30d")
    assert code == 0, err
    assert "pruned 0 run(s)" in out
    assert journal_path(project.dir, "fresh").exists()


# examples/deploy


DEPLOY = Path(__file__).resolve().parent.parent / "examples" / "deploy"


def test_deploy_example_has_a_crontab_line_running_durable_tick() -> None:
    lines = [line for line in (DEPLOY / "crontab").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines, "no crontab entry"
    for line in lines:
        fields = line.split(None, 5)
        assert len(fields) == 6, line  # five time fields and a command
        assert "durable tick" in fields[5], line


def test_deploy_example_has_a_systemd_service_and_timer_pair_running_durable_tick() -> None:
    timers = sorted(DEPLOY.glob("*.timer"))
    assert timers, "no systemd timer"
    for timer in timers:
        text = timer.read_text()
        assert "[Timer]" in text and ("OnUnitActiveSec" in text or "OnCalendar" in text)
        unit = next((line.split("=", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("Unit=")), timer.stem + ".service")
        service = DEPLOY / unit
        assert service.exists(), f"{timer.name} starts {unit}, which is missing"
        exec_start = [line for line in service.read_text().splitlines() if line.startswith("ExecStart=")]
        assert exec_start and "durable tick" in exec_start[0]


def test_deploy_readme_shows_both_and_explains_overlap_without_flock() -> None:
    text = (DEPLOY / "README.md").read_text()
    assert "crontab" in text and ".timer" in text
    assert "flock" in text
