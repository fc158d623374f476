"""durable.yaml: where it is found, what it holds, and the one-sentence error for each mistake."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from durable_cli._config import Config, Schedule, find_config, load_config
from durable_cli.errors import ConfigError

NIGHTLY = """\
schedules:
  - name: nightly
    cron: "0 3 * * *"
    workflow: jobs.reports:nightly
"""


@pytest.fixture(autouse=True)
def _in_tmp_path_without_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURABLE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    """The ConfigError message for a ./durable.yaml holding `text`."""
    write(tmp_path / "durable.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_config()
    return str(caught.value)


# Where the file is found


def test_explicit_path_wins_over_durable_config_and_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "durable.yaml", "store: cwd\n")
    write(tmp_path / "env.yaml", "store: env\n")
    explicit = write(tmp_path / "explicit.yaml", "store: explicit\n")
    monkeypatch.setenv("DURABLE_CONFIG", "env.yaml")
    assert load_config(str(explicit)).store == "explicit"


def test_durable_config_wins_over_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "durable.yaml", "store: cwd\n")
    env = write(tmp_path / "elsewhere" / "env.yaml", "store: env\n")
    monkeypatch.setenv("DURABLE_CONFIG", str(env))
    config = load_config()
    assert config.store == "env"
    assert config.path == str(env)


def test_durable_yaml_in_the_current_directory_is_found(tmp_path: Path) -> None:
    write(tmp_path / "durable.yaml", "store: here\n")
    config = load_config()
    assert config.store == "here"
    assert config.path == str(tmp_path / "durable.yaml")


def test_without_any_file_the_config_is_empty(tmp_path: Path) -> None:
    assert load_config() == Config()
    assert load_config().path is None


def test_a_missing_explicit_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^nope\.yaml: no such file$"):
        load_config("nope.yaml")


def test_a_missing_file_named_by_durable_config_says_who_named_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "durable.yaml", "store: cwd\n")
    monkeypatch.setenv("DURABLE_CONFIG", "gone.yaml")
    with pytest.raises(ConfigError, match=r"^gone\.yaml: no such file \(named by DURABLE_CONFIG\)$"):
        load_config()


def test_a_directory_given_as_the_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(str(tmp_path))


@pytest.mark.parametrize("text", ["", "\n", "# nothing configured yet\n"])
def test_an_empty_file_is_an_empty_config_that_knows_its_path(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "durable.yaml", text)
    assert load_config(str(path)) == Config(path=str(path))


def test_a_relative_path_is_reported_absolute(tmp_path: Path) -> None:
    write(tmp_path / "conf" / "durable.yaml", "store: x\n")
    assert load_config("conf/durable.yaml").path == str(tmp_path / "conf" / "durable.yaml")


def test_find_config_is_none_without_a_file(tmp_path: Path) -> None:
    assert find_config() is None


def test_find_config_reads_the_file_once_per_directory(tmp_path: Path) -> None:
    path = write(tmp_path / "durable.yaml", "store: first\n")
    first = find_config()
    path.write_text("store: second\n")
    assert find_config() is first
    assert first is not None and first.store == "first"
    assert load_config().store == "second"


def test_find_config_looks_again_when_durable_config_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "a.yaml", "store: a\n")
    write(tmp_path / "b.yaml", "store: b\n")
    monkeypatch.setenv("DURABLE_CONFIG", "a.yaml")
    found_a = find_config()
    monkeypatch.setenv("DURABLE_CONFIG", "b.yaml")
    found_b = find_config()
    assert found_a is not None and found_a.store == "a"
    assert found_b is not None and found_b.store == "b"


def test_loading_the_config_modules_does_not_import_yaml_or_croniter() -> None:
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, durable_cli._config, durable_cli._cron;"
        " print(sorted({'yaml', 'croniter'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# What the file holds


def test_dir_and_import_paths_resolve_against_the_file_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path / "project" / "durable.yaml",
        f"""\
        dir: journals
        import_paths: [src, ../shared, {tmp_path / 'abs'}]
        """,
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_config(str(path))
    assert config.dir == str(tmp_path / "project" / "journals")
    assert config.import_paths == [
        str(tmp_path / "project" / "src"),
        str(tmp_path / "shared"),
        str(tmp_path / "abs"),
    ]


def test_every_setting_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "durable.yaml",
        """\
        store: postgresql://user@db/durable?sslmode=require
        public_url: https://durable.example.com
        max_recoveries: 5
        payload_limit: 1048576
        defaults:
          max_retries: 3
          retry_delay: 2 min
        schedules:
          - name: nightly-report
            cron: "30 2 * * *"
            timezone: Europe/Berlin
            workflow: jobs.reports:nightly
            args: [eu, 7]
            kwargs: {dry_run: true}
            catch_up: all
        """,
    )
    config = load_config(str(path))
    assert config.store == "postgresql://user@db/durable?sslmode=require"
    assert config.public_url == "https://durable.example.com"
    assert config.max_recoveries == 5
    assert config.payload_limit == 1048576
    assert config.defaults == {"max_retries": 3, "retry_delay": 120.0}
    assert config.schedules == [
        Schedule(
            name="nightly-report", cron="30 2 * * *", timezone="Europe/Berlin",
            workflow="jobs.reports:nightly", args=["eu", 7], kwargs={"dry_run": True}, catch_up="all",
        )
    ]


def test_a_schedule_defaults_to_utc_latest_and_no_arguments(tmp_path: Path) -> None:
    path = write(tmp_path / "durable.yaml", NIGHTLY)
    (schedule,) = load_config(str(path)).schedules
    assert (schedule.timezone, schedule.catch_up, schedule.args, schedule.kwargs) == ("UTC", "latest", [], {})


def test_keys_left_empty_read_as_absent(tmp_path: Path) -> None:
    path = write(
        tmp_path / "durable.yaml",
        NIGHTLY + "    timezone:\n    args:\n    catch_up:\ndir:\ndefaults:\n",
    )
    config = load_config(str(path))
    assert (config.dir, config.defaults) == (None, {})
    assert (config.schedules[0].timezone, config.schedules[0].args, config.schedules[0].catch_up) == (
        "UTC", [], "latest"
    )


def test_a_numeric_retry_delay_is_seconds(tmp_path: Path) -> None:
    path = write(tmp_path / "durable.yaml", "defaults: {retry_delay: 1.5}\n")
    assert load_config(str(path)).defaults == {"retry_delay": 1.5}


def test_cron_aliases_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "durable.yaml", NIGHTLY.replace('"0 3 * * *"', "'@daily'"))
    assert load_config(str(path)).schedules[0].cron == "@daily"


# One sentence for each mistake, naming the file and the key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shedules: []\n",
         "durable.yaml: unknown key 'shedules' (known: dir, store, import_paths, defaults, schedules, "),
        ("dir: a\nstore: b\n  nested: c\n", "durable.yaml: not valid YAML (line 3): "),
        ("- dir\n- store\n", "durable.yaml: the top level must be a mapping of keys"),
        ("schedules:\n  - cron: * * * * *\n", "durable.yaml: not valid YAML (line 2): expected alphabetic or numeric"
         " character, but found ' ' (quote values that start with '*', such as cron expressions)"),
        ("dir: 3\n", "durable.yaml: dir must be a non-empty string, got 3"),
        ("store: ''\n", "durable.yaml: store must be a non-empty string"),
        ("import_paths: src\n", "durable.yaml: import_paths must be a list of directory paths"),
        ("public_url: durable.example.com\n", "durable.yaml: public_url must be an http:// or https:// URL"),
        ("max_recoveries: -1\n", "durable.yaml: max_recoveries must be an integer >= 0, got -1"),
        ("payload_limit: 0\n", "durable.yaml: payload_limit must be an integer >= 1, got 0"),
        ("payload_limit: 1 MB\n", "durable.yaml: payload_limit must be an integer >= 1, got '1 MB'"),
        ("defaults: [3]\n", "durable.yaml: defaults must be a mapping"),
        ("defaults: {max_retries: three}\n",
         "durable.yaml: defaults.max_retries must be an integer >= 0, got 'three'"),
        ("defaults: {max_retries: -2}\n", "durable.yaml: defaults.max_retries must be an integer >= 0"),
        ("defaults: {max_retries: true}\n", "durable.yaml: defaults.max_retries must be an integer >= 0, got True"),
        ("defaults: {retry_delay: soon}\n", "durable.yaml: defaults.retry_delay must be a duration"),
        ("defaults: {timeout: soon}\n", "durable.yaml: defaults.timeout must be a duration"),
        ("defaults: {timeout: 0}\n", "durable.yaml: defaults.timeout must be a duration above 0, got 0"),
        ("defaults: {retries: 3}\n",
         "durable.yaml: defaults: unknown key 'retries' (known: max_retries, retry_delay, timeout)"),
        ("schedules: {nightly: x}\n", "durable.yaml: schedules must be a list of schedules"),
        ("schedules: []\ndir: a\nschedules: []\n",
         "durable.yaml: not valid YAML (line 3): duplicate key 'schedules' (first at line 1)"),
        ('schedules:\n  - name: a\n    cron: "0 3 * * *"\n    cron: "0 4 * * *"\n',
         "durable.yaml: not valid YAML (line 4): duplicate key 'cron' (first at line 3)"),
        ("queues:\n  q: {concurrency: 1, concurrency: 2}\n",
         "durable.yaml: not valid YAML (line 2): duplicate key 'concurrency' (first at line 2)"),
    ],
)
def test_top_level_mistakes_are_one_sentence_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    error = error_of(tmp_path, text)
    assert error.startswith(message)
    assert "\n" not in error


def test_keys_merged_from_an_anchor_may_be_overridden_beside_the_merge(tmp_path: Path) -> None:
    write(tmp_path / "durable.yaml", "queues:\n  a: &base {concurrency: 1, rate: 1/h}\n"
                                     "  b:\n    <<: *base\n    concurrency: 2\n")
    queues = load_config().queues
    assert (queues["a"].concurrency, queues["b"].concurrency, queues["b"].rate) == (1, 2, (1, 3600.0))


def schedule_yaml(**fields: str) -> str:
    """A schedules list with one entry: the nightly schedule with `fields` replacing or adding lines."""
    entry = {"name": "nightly", "cron": '"0 3 * * *"', "workflow": "jobs.reports:nightly", **fields}
    lines = [f"    {key}: {value}" for key, value in entry.items() if value != "<absent>"]
    return "schedules:\n  -\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "'61 * * * *'"}, "durable.yaml: schedule 'nightly': invalid cron expression '61 * * * *'"),
        ({"cron": "'0 0 30 2 *'"},
         "durable.yaml: schedule 'nightly': invalid cron expression '0 0 30 2 *' (it never fires)"),
        ({"cron": "'0 * * * * *'"}, "invalid cron expression '0 * * * * *' (use five fields"),
        ({"cron": "'R 3 * * *'"}, "invalid cron expression 'R 3 * * *' (random 'R' fields"),
        ({"cron": "<absent>"}, "durable.yaml: schedule 'nightly': cron is required"),
        ({"cron": "5"}, "durable.yaml: schedule 'nightly': cron must be a string, got 5"),
        ({"timezone": "Mars/Base"}, "durable.yaml: schedule 'nightly': unknown time zone 'Mars/Base'"),
        ({"timezone": "Europe"}, "durable.yaml: schedule 'nightly': unknown time zone 'Europe'"),
        ({"workflow": "<absent>"}, "durable.yaml: schedule 'nightly': workflow is required"),
        ({"workflow": "jobs.reports.nightly"},
         "durable.yaml: schedule 'nightly': workflow must look like 'module.path:function', got 'jobs.reports.nightly'"),
        ({"workflow": "jobs-reports:nightly"}, "workflow must look like 'module.path:function'"),
        ({"workflow": "'jobs:'"}, "workflow must look like 'module.path:function'"),
        ({"args": "eu"}, "durable.yaml: schedule 'nightly': args must be a list, got 'eu'"),
        ({"kwargs": "[1]"}, "durable.yaml: schedule 'nightly': kwargs must be a mapping, got [1]"),
        ({"args": "[2026-01-01]"},
         "durable.yaml: schedule 'nightly': args: datetime.date(2026, 1, 1) is not a JSON value"),
        ({"kwargs": "{1: a}"}, "durable.yaml: schedule 'nightly': kwargs: key 1 is not a string"),
        ({"catch_up": "some"},
         "durable.yaml: schedule 'nightly': catch_up must be one of latest, all, none, got 'some'"),
        ({"crn": "x"},
         "durable.yaml: schedule 'nightly': unknown key 'crn' (known: name, cron, timezone, workflow, "),
        ({"name": "<absent>"}, "durable.yaml: schedules[0]: name is required"),
        ({"name": "Nightly Job"}, "durable.yaml: schedules[0]: name 'Nightly Job' must match [a-z0-9_-]+"),
        ({"name": "<absent>", "nmae": "x"}, "durable.yaml: schedules[0]: unknown key 'nmae'"),
        ({"name": "a/b"}, "durable.yaml: schedules[0]: name 'a/b' must match [a-z0-9_-]+"),
        ({"name": "n" * 101}, f"durable.yaml: schedule '{'n' * 101}': name is 101 characters long, over 100"),
        ({"args": '["\\ud800"]'}, "durable.yaml: schedule 'nightly': args: '\\ud800' is not valid Unicode"),
        ({"kwargs": '{"\\udcff": 1}'}, "durable.yaml: schedule 'nightly': kwargs: '\\udcff' is not valid Unicode"),
        ({"args": "[.nan]"}, "durable.yaml: schedule 'nightly': args: nan is not a JSON number"),
    ],
)
def test_schedule_mistakes_are_one_sentence_naming_the_schedule_and_key(
    tmp_path: Path, fields: dict[str, str], message: str
) -> None:
    error = error_of(tmp_path, schedule_yaml(**fields))
    assert message in error
    assert error.startswith("durable.yaml: ")
    assert "\n" not in error


def test_a_schedule_that_is_not_a_mapping_is_named_by_position(tmp_path: Path) -> None:
    error = error_of(tmp_path, NIGHTLY + "  - just text\n")
    assert error == "durable.yaml: schedules[1] must be a mapping with name, cron and workflow"


def test_schedule_names_must_be_unique(tmp_path: Path) -> None:
    error = error_of(tmp_path, NIGHTLY + NIGHTLY.removeprefix("schedules:\n"))
    assert error == "durable.yaml: schedules[1]: name 'nightly' is already used by schedules[0]"


def test_schedule_args_that_contain_themselves_through_a_yaml_alias_are_one_sentence(tmp_path: Path) -> None:
    error = error_of(tmp_path, NIGHTLY + "    args: &loop [*loop]\n")
    assert error.startswith("durable.yaml: schedule 'nightly': args: more than 100000 values once YAML")
    assert "\n" not in error


def test_a_yaml_alias_bomb_in_schedule_kwargs_is_refused_not_expanded(tmp_path: Path) -> None:
    levels = ["      l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"] + [
        f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 6)]
    error = error_of(tmp_path, NIGHTLY + "    kwargs:\n" + "".join(levels))  # a million values
    assert error.startswith("durable.yaml: schedule 'nightly': kwargs: more than 100000 values")


def test_unreadable_bytes_are_a_one_line_yaml_error(tmp_path: Path) -> None:
    (tmp_path / "durable.yaml").write_bytes(b"\xff\xfe\xfa bad")
    with pytest.raises(ConfigError, match=r"^durable\.yaml: not valid YAML: [^\n]+$"):
        load_config()


def test_errors_name_the_file_as_the_user_gave_it(tmp_path: Path) -> None:
    write(tmp_path / "conf" / "prod.yaml", "shedules: []\n")
    with pytest.raises(ConfigError, match=r"^conf/prod\.yaml: unknown key 'shedules'"):
        load_config("conf/prod.yaml")


# Loaded once, at the edge, and passed down


def test_reading_the_config_leaves_sys_path_alone(tmp_path: Path) -> None:
    """import_paths reach sys.path only when a workflow is imported (the loader applies them)."""
    write(tmp_path / "durable.yaml", "import_paths: [lib]\n")
    before = list(sys.path)
    from durable_cli._config import forget, options_from

    forget()
    options = options_from(find_config())
    assert options.import_paths == [str(tmp_path / "lib")]
    assert sys.path == before


def test_the_store_layer_reads_neither_durable_yaml_nor_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable_cli._store import open_store

    write(tmp_path / "durable.yaml", "dir: from-yaml\n")
    monkeypatch.setenv("DURABLE_DIR", str(tmp_path / "from-env"))
    store = open_store()
    try:
        assert Path(getattr(store, "root")).resolve() == (tmp_path / "journals").resolve()
    finally:
        store.close()


def test_the_config_option_is_passed_down_not_written_to_the_environment(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from durable_cli.cli import main

    write(tmp_path / "conf" / "prod.yaml", "dir: prod-journals\n" + NIGHTLY)
    result = CliRunner().invoke(main, ["--config", "conf/prod.yaml", "schedules", "--json"])
    assert result.exit_code == 0, result.output
    assert '"nightly"' in result.output
    assert "DURABLE_CONFIG" not in os.environ


def test_flags_beat_the_environment_which_beats_durable_yaml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable_cli._config import store_location

    config = Config(store="postgresql://yaml", dir="/yaml-dir")
    assert store_location(None, None, lambda: config) == "postgresql://yaml"
    monkeypatch.setenv("DURABLE_DIR", "/env-dir")
    assert store_location(None, None, lambda: config) == "/env-dir"
    monkeypatch.setenv("DURABLE_STORE", "postgresql://env")
    assert store_location(None, None, lambda: config) == "postgresql://env"
    assert store_location("/flag-dir", None, lambda: config) == "/flag-dir"


def test_a_broken_durable_yaml_is_not_read_when_flags_choose_the_store(tmp_path: Path) -> None:
    from durable_cli._config import store_location

    def broken() -> Config:
        raise ConfigError("durable.yaml: not valid YAML")

    assert store_location(str(tmp_path), None, broken) == str(tmp_path)
