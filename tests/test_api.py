"""The public surface: everything is importable from `durable_cli`, and stays callable."""

from __future__ import annotations

import importlib
import pkgutil

import durable_cli


def test_every_public_name_is_importable_from_the_package():
    for name in durable_cli.__all__:
        assert getattr(durable_cli, name) is not None, name


def test_importing_every_submodule_does_not_shadow_a_public_name():
    for module in pkgutil.walk_packages(durable_cli.__path__, "durable_cli."):
        if not module.name.startswith(("durable_cli._serve", "durable_cli.cli._serving", "durable_cli._store.pg")) \
                and module.name != "durable_cli._store.postgres":
            importlib.import_module(module.name)
    for name in durable_cli.__all__:
        assert not isinstance(getattr(durable_cli, name), type(durable_cli)), f"{name} is a module"


def test_tick_is_the_function_even_after_the_tick_machinery_was_imported(tmp_path):
    importlib.import_module("durable_cli._tick")
    summary = durable_cli.tick(dir=str(tmp_path))
    assert summary.to_json()["resumed"] == 0


def test_every_public_name_and_its_public_methods_have_a_docstring():
    import inspect
    import typing

    import durable_cli.testing

    names = [(durable_cli, n) for n in durable_cli.__all__] + [(durable_cli.testing, n) for n in durable_cli.testing.__all__]
    for module, name in names:
        value = getattr(module, name)
        if typing.get_origin(value) is typing.Literal:
            continue  # a type alias (RunStatus) cannot carry a docstring
        assert inspect.getdoc(value), name
        if inspect.isclass(value):
            for attr, member in vars(value).items():
                if not attr.startswith("_") and callable(member):
                    assert inspect.getdoc(member), f"{name}.{attr}"


def test_the_package_ships_py_typed_and_its_docs_pages_exist():
    from importlib.resources import files
    from pathlib import Path

    assert (files("durable_cli") / "py.typed").is_file()
    docs = Path(__file__).resolve().parent.parent / "docs"
    for page in ("concepts.md", "cli.md", "journal.md", "guarantees.md", "postgres.md", "serve.md"):
        assert (docs / page).stat().st_size > 1000, page


def test_importing_the_library_loads_neither_click_nor_yaml_nor_croniter():
    import subprocess
    import sys

    code = ("import sys, durable_cli\n"
            "from durable_cli import workflow, step, sleep, define_hook, start\n"
            "print(sorted(m for m in ('click', 'yaml', 'croniter') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class NeedsTwoArguments(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


@durable_cli.step(max_retries=0)
def raises_an_exception_that_cannot_be_rebuilt() -> None:
    raise NeedsTwoArguments(503, "gateway busy")


@durable_cli.workflow
def catches_step_failed() -> list[str]:
    try:
        raises_an_exception_that_cannot_be_rebuilt()
    except durable_cli.StepFailed as exc:
        return [type(exc).__name__, str(exc)]
    return []


def test_a_step_exception_that_cannot_be_rebuilt_reaches_the_workflow_as_step_failed(tmp_path):
    run = durable_cli.start(catches_step_failed, dir=str(tmp_path))
    assert run.status == "completed"
    assert run.result[0] == "StepFailed"
    assert "NeedsTwoArguments" in run.result[1] and "503: gateway busy" in run.result[1]
