"""What `durable tick` loads when it has nothing to do: cron starts it every minute, so its start
is a figure of its own (bench/README.md, "CLI start"). Each module below was once on that path and
was cut from it; this keeps them cut. The command runs in a fresh Python (not a `spawn` fork,
which has durable_cli preloaded: tests/helpers.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import durable_env

CUT = (
    "locale",  # click's --help looks up its translation (gettext) on every parse; ours when shown
    "json",  # the journal, the file store and the CLI import it where they read or write JSON
    "durable_cli.cli._operate",  # the other operator commands: tick is a module of its own
    "durable_cli._store.files_queues", "durable_cli._store.files_streams",  # made at first use
    "durable_cli._store.files_index",
    "durable_cli._payloads",  # an inbox message's parser: no message, no parser
    "durable_cli._engine", "durable_cli._config", "durable_cli._queues", "durable_cli.cli._render",
    "yaml", "hashlib", "dataclasses", "signal", "struct",
    "zlib",  # the journal's CRC: an idle tick reads and writes no journal
    "durable_cli._digest",  # names tokens and schedules: an idle tick names neither
    "durable_cli.errors",  # ~20 exception classes: what the store, journal and tick raise is in _errors_core
)


def test_an_empty_tick_does_not_import_what_was_cut_from_its_start(tmp_path):
    journals = tmp_path / "journals"
    code = ("import sys\n"
            "from durable_cli.cli import main\n"
            f"main(['--dir', {str(journals)!r}, 'tick'], standalone_mode=False)\n"
            f"print(sorted(name for name in {CUT!r} if name in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=durable_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    said, loaded = done.stdout.splitlines()
    assert said == "tick: nothing due"
    assert json.loads(loaded.replace("'", '"')) == []


def test_the_default_interval_is_what_parsing_it_would_give():
    """A tick does not parse the default --interval (its pattern would compile on every start)."""
    from durable_cli._timeparse import parse_duration
    from durable_cli.cli._tickloop import INTERVAL, INTERVAL_S

    assert parse_duration(INTERVAL) == INTERVAL_S


def test_errors_names_every_class_as_its_own():
    """Journals record `durable_cli.errors.X`: the classes _errors_core defines keep that name."""
    import pickle

    from durable_cli import _errors_core, errors

    for name, cls in vars(_errors_core).items():
        if isinstance(cls, type) and issubclass(cls, BaseException):
            assert getattr(errors, name) is cls
            assert f"{cls.__module__}.{cls.__qualname__}" == f"durable_cli.errors.{name}"
            assert type(pickle.loads(pickle.dumps(cls("x")))) is cls


def printed(code: str, *args: str) -> str:
    """What `python -c CODE ARGS` prints, in a fresh Python (nothing of durable_cli loaded yet)."""
    done = subprocess.run([sys.executable, "-c", code, *args], env=durable_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_collector_is_off_only_while_the_cli_loads():
    """`durable_cli.cli` turns the garbage collector off while click loads, and back to what it
    was: on stays on, off stays off (an embedding program's choice)."""
    code = ("import gc, sys\n"
            "gc.disable() if sys.argv[1] == 'off' else None\n"
            "import durable_cli.cli\n"
            "print(gc.isenabled())\n")
    for given, expected in (("on", "True"), ("off", "False")):
        assert printed(code, given) == expected


def test_no_older_generation_is_collected_while_the_cli_loads():
    """The collector is off from the CLI's first import on (typing, contextlib, click), and the
    package itself imports no typing: loading the CLI triggers no collection of the older
    generations, which would scan every object made so far."""
    code = ("import gc, sys\n"
            "seen = []\n"
            "gc.callbacks.append(lambda phase, info: seen.append(info['generation']) if phase == 'start' else None)\n"
            "import durable_cli.cli\n"
            "print([generation for generation in seen if generation > 0])\n")
    assert printed(code) == "[]"


def test_what_the_cli_loaded_is_never_scanned_again_by_the_collector():
    """Python's modules and click, loaded with `durable_cli.cli`, live until the process ends: they
    are frozen, so neither a collection while a command runs nor the full one at exit scans them
    (a tenth of an empty tick's instructions). What a command makes afterwards is collected as usual."""
    code = ("import gc, sys\n"
            "import durable_cli.cli\n"
            "import click\n"
            "frozen = gc.get_freeze_count()\n"
            "made_after = [[]]\n"
            "made_after.append(made_after)\n"
            "tracked = {id(o) for o in gc.get_objects()}\n"
            "print(frozen > 10000, id(click.echo) in tracked, id(made_after) in tracked)\n")
    assert printed(code) == "True False True"
