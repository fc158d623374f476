"""durable.yaml, loaded once at the edge: where it is, what it holds, and what follows from it.

The entry points (the CLI's `main`, the functions of `_client.py`, `durable_cli.testing`) load the
file once and pass the Config, or the engine `Options` made from it, down; nothing below them reads
files or the environment for config. Precedence: flags, then the environment, then durable.yaml.
Every mistake in the file becomes one ConfigError sentence naming the file and the key, at load
time. Importing this module imports neither yaml nor croniter (`durable tick` without a
durable.yaml stays fast): they are imported when a file is read.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from durable_cli.errors import ConfigError
from durable_cli._queues import QueueLimits, parse_queues
from durable_cli._timeparse import parse_duration
from durable_cli._location import FILENAME as FILENAME, locate as locate, open_configured as open_configured
from durable_cli._location import store_location as store_location

if TYPE_CHECKING:
    from ._engine.run import Options
    from ._store.base import Store
    from ._telemetry import Telemetry

CATCH_UP = ("latest", "all", "none")
_TOP_KEYS = (
    "dir", "store", "import_paths", "defaults", "schedules",
    "public_url", "max_recoveries", "payload_limit", "retention", "otel", "queues",
)
_RETENTION_KEYS = ("completed", "failed", "cancelled", "continued")
_DEFAULT_KEYS = ("max_retries", "retry_delay", "timeout")
_SCHEDULE_KEYS = ("name", "cron", "timezone", "workflow", "args", "kwargs", "catch_up", "queue", "key")
_NAME = re.compile(r"[a-z0-9_-]+")
MAX_NAME = 100  # a schedule's run ids (`sched-<name>-<instant>`) stay well within the 200 allowed
_RANDOM_CRON = re.compile(r"(?:^|[\s,])R", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One cron entry: call `workflow` ("module:function") with args at each instant of `cron`."""

    name: str
    cron: str
    timezone: str = "UTC"
    workflow: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "latest"
    queue: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Config:
    """A loaded durable.yaml; paths are absolute, and an absent file gives all None/empty."""

    path: str | None = None
    dir: str | None = None
    store: str | None = None
    import_paths: list[str] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)
    schedules: list[Schedule] = field(default_factory=list)
    public_url: str | None = None
    max_recoveries: int | None = None
    payload_limit: int | None = None
    retention: dict[str, float] = field(default_factory=dict)
    """Finished status -> seconds a run of it is kept after it ended (`tick` prunes the older)."""
    otel: bool | None = None
    """Traces and metrics on (True) or off (False); None: the OTEL_* environment decides."""
    queues: dict[str, QueueLimits] = field(default_factory=dict)


_found: dict[tuple[str, str | None], Config | None] = {}


def load_config(path: str | None = None) -> Config:
    """Read `path`, else $DURABLE_CONFIG, else ./durable.yaml if present, else an empty Config."""
    return config_at(path) or Config()


def config_at(path: str | None = None) -> Config | None:
    """The file at `path` (the CLI's `--config`), else the one `locate` finds, or None without one."""
    if path is not None:
        return _load(path)
    located = locate()
    return None if located is None else _load(*located)


def find_config() -> Config | None:
    """`config_at()`, cached per (cwd, $DURABLE_CONFIG): what the Python API entry points use, so
    a program that calls `start()` in a loop reads its durable.yaml once.

    A running process does not see later edits to the file (`forget` drops the cache);
    `load_config` always rereads it.
    """
    key = (os.getcwd(), os.environ.get("DURABLE_CONFIG"))
    if key not in _found:
        _found[key] = config_at()
    return _found[key]


def forget() -> None:
    """Forget the configs `find_config` found: the next call reads the file again (for a test
    harness that runs several commands, each in its own directory and environment, in one process)."""
    _found.clear()


@functools.cache
def _option_parts() -> tuple[type[Options], int, str, Callable[[bool | None], Telemetry]]:
    """What `options_from` builds Options with, imported at its first call (a command that needs
    no Options never imports the engine) and kept: an import in a function costs a microsecond
    at every call, and every start() makes its Options."""
    from ._engine.run import Options
    from ._payloads import DEFAULT_LIMIT
    from ._store.fsutil import SHARED_ENV
    from ._telemetry import telemetry_for

    return Options, DEFAULT_LIMIT, SHARED_ENV, telemetry_for


def options_from(config: Config | None) -> Options:
    """The engine's Options from a loaded durable.yaml (and $DURABLE_PUBLIC_URL, which beats it)."""
    Options, DEFAULT_LIMIT, SHARED_ENV, telemetry_for = _option_parts()
    url = (os.environ.get("DURABLE_PUBLIC_URL") or (config.public_url if config else None)
           or Options.public_url)
    shared = os.environ.get(SHARED_ENV)
    if config is None:
        return Options(public_url=url.rstrip("/"), allow_shared=shared, telemetry=telemetry_for(None))
    return Options(
        defaults=dict(config.defaults),
        max_recoveries=config.max_recoveries if config.max_recoveries is not None else 3,
        payload_limit=config.payload_limit or DEFAULT_LIMIT,
        import_paths=list(config.import_paths),
        public_url=url.rstrip("/"),
        allow_shared=shared,
        telemetry=telemetry_for(config.otel),
        queues=dict(config.queues),
    )


@functools.cache
def _strict_loader() -> Any:
    """yaml's SafeLoader refusing a key given twice in one mapping (PyYAML keeps the last silently:
    a second `schedules:` or `cron:` would drop the first); made at the first file read."""
    import yaml  # type: ignore[import-untyped, unused-ignore]

    class StrictLoader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[tuple[str, str], int] = {}
            for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` may be overridden by the keys beside it, as YAML means
                key = (key_node.tag, key_node.value)  # the resolved type and the text: 'a' is "a"
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key_node.value!r}"
                                                            f" (first at line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep)

    return StrictLoader


def _load(shown: str, chosen_by: str = "") -> Config:
    """Parse and check the file at `shown`; errors begin with `shown` as the user wrote it."""
    import yaml  # type: ignore[import-untyped, unused-ignore]

    path = os.path.abspath(shown)
    try:
        with open(path, "rb") as handle:
            data = yaml.load(handle, Loader=_strict_loader())  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file{chosen_by}") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read the file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "alphabetic or numeric" in problem:  # an unquoted `*`, read as a YAML alias
            problem += " (quote values that start with '*', such as cron expressions)"
        raise ConfigError(f"{shown}: not valid YAML{where}: {problem}") from None
    if data is None:
        return Config(path=path)
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: the top level must be a mapping of keys ({', '.join(_TOP_KEYS)})")
    _reject_unknown(shown, "", data, _TOP_KEYS)
    base = os.path.dirname(path)
    directory = _text(shown, "dir", data.get("dir"))
    queues = parse_queues(shown, data.get("queues"))
    schedules = _schedules(shown, data.get("schedules"))
    for schedule in schedules:
        if schedule.queue is not None and schedule.queue not in queues:
            raise ConfigError(f"{shown}: schedule {schedule.name!r}: unknown queue {schedule.queue!r}"
                              " (declare it under queues:)")
    return Config(
        path=path,
        dir=None if directory is None else _resolve(base, directory),
        store=_text(shown, "store", data.get("store")),
        import_paths=[_resolve(base, p) for p in _paths(shown, data.get("import_paths"))],
        defaults=_defaults(shown, data.get("defaults")),
        schedules=schedules,
        public_url=_url(shown, data.get("public_url")),
        max_recoveries=_integer(shown, "max_recoveries", data.get("max_recoveries"), 0),
        payload_limit=_integer(shown, "payload_limit", data.get("payload_limit"), 1),
        retention=_retention(shown, data.get("retention")),
        otel=_flag(shown, "otel", data.get("otel")),
        queues=queues,
    )


def _retention(shown: str, value: Any) -> dict[str, float]:
    """retention: {completed: 30d, failed: 90d, cancelled: 7d}: how long finished runs are kept."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{shown}: retention must be a mapping such as {{completed: 30d, failed: 90d}}, got {value!r}")
    _reject_unknown(shown, "retention: ", value, _RETENTION_KEYS)
    kept: dict[str, float] = {}
    for status, duration in value.items():
        if duration is None:
            continue
        try:
            kept[status] = parse_duration(duration)
        except ValueError:
            raise ConfigError(f"{shown}: retention.{status} must be a duration such as '30d', got {duration!r}") from None
    return kept


def _reject_unknown(shown: str, where: str, mapping: dict[Any, Any], known: tuple[str, ...]) -> None:
    """Fail on the first key of `mapping` that is not in `known` (typos must not pass silently)."""
    for key in mapping:
        if key not in known:
            raise ConfigError(f"{shown}: {where}unknown key {key!r} (known: {', '.join(known)})")


def _resolve(base: str, path: str) -> str:
    """`path` made absolute against the config file's directory (`~` expands to home)."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _text(shown: str, key: str, value: Any) -> str | None:
    """A non-empty string setting, or None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{shown}: {key} must be a non-empty string, got {value!r}")
    return value


def _paths(shown: str, value: Any) -> list[str]:
    """The import_paths list as written (each a non-empty string)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise ConfigError(f"{shown}: import_paths must be a list of directory paths, got {value!r}")
    return value


def _integer(shown: str, key: str, value: Any, minimum: int) -> int | None:
    """A whole number of at least `minimum` (YAML booleans are refused), or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{shown}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _flag(shown: str, key: str, value: Any) -> bool | None:
    """A true/false setting, or None when absent."""
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(f"{shown}: {key} must be true or false, got {value!r}")


def _url(shown: str, value: Any) -> str | None:
    """public_url: the http(s) address at which this deployment is reached from outside."""
    url = _text(shown, "public_url", value)
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{shown}: public_url must be an http:// or https:// URL, got {url!r}")
    return url


def _defaults(shown: str, value: Any) -> dict[str, Any]:
    """Step defaults (retries, back-off, timeout); durations are normalised to seconds (floats)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{shown}: defaults must be a mapping (max_retries, retry_delay, timeout), got {value!r}")
    _reject_unknown(shown, "defaults: ", value, _DEFAULT_KEYS)
    defaults: dict[str, Any] = {}
    if value.get("max_retries") is not None:
        defaults["max_retries"] = _integer(shown, "defaults.max_retries", value["max_retries"], 0)
    for key in ("retry_delay", "timeout"):
        if value.get(key) is None:
            continue
        try:
            defaults[key] = parse_duration(value[key])
        except ValueError:
            raise ConfigError(
                f"{shown}: defaults.{key} must be a duration such as 30, '90s' or '5 min',"
                f" got {value[key]!r}"
            ) from None
        if key == "timeout" and defaults[key] <= 0:
            raise ConfigError(f"{shown}: defaults.timeout must be a duration above 0, got {value[key]!r}")
    return defaults


def _schedules(shown: str, value: Any) -> list[Schedule]:
    """The schedules list; names must be unique because run ids are derived from them."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{shown}: schedules must be a list of schedules, got {value!r}")
    schedules: list[Schedule] = []
    positions: dict[str, int] = {}
    for index, entry in enumerate(value):
        schedule = _schedule(shown, index, entry)
        if schedule.name in positions:
            raise ConfigError(
                f"{shown}: schedules[{index}]: name {schedule.name!r}"
                f" is already used by schedules[{positions[schedule.name]}]"
            )
        positions[schedule.name] = index
        schedules.append(schedule)
    return schedules


def _schedule(shown: str, index: int, entry: Any) -> Schedule:
    """One schedule entry, named by its name once valid and by its position until then."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{shown}: schedules[{index}] must be a mapping with name, cron and workflow")
    name = entry.get("name")
    named = isinstance(name, str) and _NAME.fullmatch(name) is not None
    where = f"schedule {name!r}" if named else f"schedules[{index}]"
    _reject_unknown(shown, f"{where}: ", entry, _SCHEDULE_KEYS)
    if name is None:
        raise ConfigError(f"{shown}: {where}: name is required")
    if not named:
        raise ConfigError(f"{shown}: {where}: name {name!r} must match [a-z0-9_-]+")
    if len(name) > MAX_NAME:
        raise ConfigError(f"{shown}: {where}: name is {len(name)} characters long, over {MAX_NAME}")
    cron = _cron(shown, where, entry.get("cron"))
    zone = _zone(shown, where, _get(entry, "timezone", "UTC"))
    workflow = _workflow(shown, where, entry.get("workflow"))
    args, kwargs = _get(entry, "args", []), _get(entry, "kwargs", {})
    if not isinstance(args, list):
        raise ConfigError(f"{shown}: {where}: args must be a list, got {args!r}")
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{shown}: {where}: kwargs must be a mapping, got {kwargs!r}")
    for key, value in (("args", args), ("kwargs", kwargs)):
        problem = _json_problem(value)
        if problem:
            raise ConfigError(f"{shown}: {where}: {key}: {problem}")
    catch_up = _get(entry, "catch_up", "latest")
    if catch_up not in CATCH_UP:
        raise ConfigError(f"{shown}: {where}: catch_up must be one of {', '.join(CATCH_UP)}, got {catch_up!r}")
    queue, queue_key = entry.get("queue"), entry.get("key")
    for field_name, text in (("queue", queue), ("key", queue_key)):
        if text is not None and (not isinstance(text, str) or not text or _json_problem(text)):
            raise ConfigError(f"{shown}: {where}: {field_name} must be a non-empty string, got {text!r}")
    return Schedule(
        name=str(name), cron=cron, timezone=zone, workflow=workflow,
        args=args, kwargs=kwargs, catch_up=catch_up, queue=queue, key=queue_key,
    )


def _get(mapping: dict[Any, Any], key: str, default: Any) -> Any:
    """`mapping[key]`, with a YAML null (`key:` left empty) read as absent."""
    value = mapping.get(key)
    return default if value is None else value


def _cron(shown: str, where: str, value: Any) -> str:
    """A five-field (or @alias) cron expression that croniter accepts and that fires at all."""
    from croniter import CroniterBadDateError, croniter  # type: ignore[import-untyped, unused-ignore]

    if value is None:
        raise ConfigError(f"{shown}: {where}: cron is required")
    if not isinstance(value, str):
        raise ConfigError(f"{shown}: {where}: cron must be a string, got {value!r}")
    fields = value.split()
    reason = ""
    if not (len(fields) == 5 or (len(fields) == 1 and value.strip().startswith("@"))):
        reason = " (use five fields: minute hour day month weekday, or an alias such as @daily)"
    elif _RANDOM_CRON.search(value):
        reason = " (random 'R' fields would fire at different instants on every tick)"
    elif croniter.is_valid(value):
        try:
            croniter(value, datetime(2000, 1, 1)).get_next(datetime)
            return value
        except CroniterBadDateError:
            reason = " (it never fires)"
    raise ConfigError(f"{shown}: {where}: invalid cron expression {value!r}{reason}")


def _zone(shown: str, where: str, value: Any) -> str:
    """An IANA time zone name that zoneinfo can load, such as "Europe/Berlin"."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if isinstance(value, str):
            ZoneInfo(value)
            return value
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    raise ConfigError(f"{shown}: {where}: unknown time zone {value!r}")


def _workflow(shown: str, where: str, value: Any) -> str:
    """A "module.path:function" reference; whether it imports is checked when it runs."""
    if value is None:
        raise ConfigError(f"{shown}: {where}: workflow is required")
    module, colon, function = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not (colon and function.isidentifier() and all(p.isidentifier() for p in module.split("."))):
        raise ConfigError(f"{shown}: {where}: workflow must look like 'module.path:function', got {value!r}")
    return str(value)


MAX_VALUES = 100_000  # values in one schedule's args or kwargs, YAML aliases expanded


def _json_problem(value: Any) -> str | None:
    """Why `value` cannot be a JSON payload (YAML also reads dates, for one), or None if it can.

    The walk counts every value, an alias's as often as it is used, so a value that refers to
    itself (`&a [*a]`) or an alias bomb is refused here, not expanded later by every run."""
    todo = [value]
    seen = 0
    while todo:
        value = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            return (f"more than {MAX_VALUES} values once YAML aliases are expanded"
                    " (a value that contains itself, or aliases repeated many times)")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{value!r} is not valid Unicode (a lone surrogate)"
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{value!r} is not a JSON number"
        elif value is None or isinstance(value, (int, float, bool)):
            pass
        elif isinstance(value, list):
            todo.extend(reversed(value))
        elif isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    return f"key {key!r} is not a string"
            for key, item in reversed(list(value.items())):
                todo.extend((item, key))
        else:
            return f"{value!r} is not a JSON value (quote it to pass a string)"
    return None
