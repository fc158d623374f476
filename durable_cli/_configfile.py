"""Whether a durable.yaml applies, without importing the config machinery when none does."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import Config

FILENAME = "durable.yaml"


def locate() -> tuple[str, str] | None:
    """The file to read when no path is given, and a note saying who chose it."""
    named = os.environ.get("DURABLE_CONFIG")
    if named:
        return named, " (named by DURABLE_CONFIG)"
    return (FILENAME, "") if os.path.isfile(FILENAME) else None


def find_config() -> Config | None:
    """The Config in effect (see `config.find_config`), or None; imports it only when there is one."""
    if locate() is None:
        return None
    from ._config import find_config as load

    return load()
