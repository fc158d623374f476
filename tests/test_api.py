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
        if not module.name.startswith(("durable_cli.serve", "durable_cli.cli.serving", "durable_cli.store.pg")) \
                and module.name != "durable_cli.store.postgres":
            importlib.import_module(module.name)
    for name in durable_cli.__all__:
        assert not isinstance(getattr(durable_cli, name), type(durable_cli)), f"{name} is a module"


def test_tick_is_the_function_even_after_the_tick_machinery_was_imported(tmp_path):
    importlib.import_module("durable_cli.ticker")
    summary = durable_cli.tick(dir=str(tmp_path))
    assert summary.to_json()["resumed"] == 0
