"""The `durable` command: parsing, output and exit codes over the library; nothing else.

Exit codes: 0 ok (a suspended run included), 1 the run failed, timed out or was cancelled (or the
store failed), 2 usage or bad input. Errors are one sentence on stderr. With `--json`, stdout holds one JSON document.
"""

from __future__ import annotations

import gc

# Importing click (and typing, contextlib) makes thousands of objects that live as long as the
# process, and the collector would scan them again and again while they are made (1% of an idle
# tick's instructions). It is off while this module loads (from its first import on: the package
# imports no typing), and back on (if it was on) at its end, before any command runs.
# There, what is loaded by then is frozen (gc.freeze): no collection scans it again, neither while
# the command runs nor the full one at exit (10% of an idle tick's instructions). In a program
# that imports this module (a test's CliRunner), what it holds then is frozen too: still freed when
# no longer referenced, only a reference cycle among those objects waits for the process's end.
_COLLECTING = gc.isenabled()
gc.disable()

import contextlib  # noqa: E402
import sys  # noqa: E402
from typing import Any, Callable, Iterator, NoReturn  # noqa: E402

import click  # noqa: E402


class Failure(click.ClickException):
    """A user-facing error: usage or bad input (exit 2). Under --json, stdout also gets it as the
    one JSON document (`{"error": ...}`), so scripts piping into jq always get JSON. Whether
    --json was given is read from the command's own arguments (set by `DurableGroup.invoke`), not
    from `sys.argv`, so the command behaves the same when called in-process."""

    exit_code = 2
    as_json = False
    extra: dict[str, Any] | None = None  # more fields of the JSON document (a failed tick's `errors`)

    def show(self, file: Any = None) -> None:
        if self.as_json:
            import json

            try:
                click.echo(json.dumps({"error": self.format_message(), "exit_code": self.exit_code,
                                       **(self.extra or {})}))
            except BrokenPipeError:
                pass  # nobody reads stdout any more; stderr still gets the message
        super().show(file)


class RunFailure(Failure):
    """A user-facing error about a run or the store (exit 1)."""

    exit_code = 1


def _fail_from(exc: BaseException) -> NoReturn:
    from .. import errors

    if isinstance(exc, (errors.JournalDamaged, errors.RunBusy, errors.EngineError)):
        raise RunFailure(str(exc)) from None
    if isinstance(exc, (errors.DurableError, ValueError)):
        raise Failure(str(exc)) from None
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        raise RunFailure(f"storage error{where}: {exc.strerror or exc}") from None
    raise exc


_COMMANDS = {
    "run": "_runs", "resume": "_resume", "cancel": "_runs", "retry": "_runs",
    "inspect": "_views", "ls": "_views", "tail": "_views",
    "tick": "_tickloop", "schedules": "_operate", "queues": "_operate", "prune": "_operate", "export": "_operate",
    "migrate": "_operate", "serve": "_serving", "stats": "_stats",
    "events": "_repair", "fork": "_repair", "wake": "_repair",
    "check": "_upgrade", "import": "_upgrade",
}


GLOBAL_OPTIONS = ("--dir", "--store", "--config")
_JSON_GIVEN = "durable_cli.json_given"  # ctx.meta key: was --json among the command's arguments


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the global options found after the command name in front of it, so that
    `durable run --dir X MOD:FN` means `durable --dir X run MOD:FN`; `--json`, given before the
    command, moves behind it. Arguments after `--` are left alone."""
    start = 0
    while start < len(args) and args[start].startswith("-"):
        start += 2 if args[start] in GLOBAL_OPTIONS else 1
    if start >= len(args):
        return args
    before, command, after = args[:start], args[start], args[start + 1:]
    hoisted: list[str] = []
    rest: list[str] = [arg for arg in before if arg == "--json"]
    before = [arg for arg in before if arg != "--json"]
    index = 0
    while index < len(after):
        arg = after[index]
        if arg == "--":
            rest += after[index:]
            break
        if arg in GLOBAL_OPTIONS and index + 1 < len(after):
            hoisted += after[index:index + 2]
            index += 2
            continue
        if arg.startswith(tuple(f"{name}=" for name in GLOBAL_OPTIONS)):
            hoisted.append(arg)
        else:
            rest.append(arg)
        index += 1
    return before + hoisted + [command] + rest


def _show_help(ctx: click.Context, _: click.Parameter, given: bool) -> None:
    """`--help`, as click's help option shows it."""
    if given and not ctx.resilient_parsing:
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


class _HelpOption(click.Option):
    """click's `--help` option, except that its help text is translated (gettext, which imports
    `locale`) when a help page shows it, not on every start as click's is."""

    @property
    def help(self) -> str | None:
        from gettext import gettext

        return gettext("Show this message and exit.")

    @help.setter
    def help(self, value: str | None) -> None:
        """Set (to None) by click's constructor: the text is the getter's."""


class Command(click.Command):
    """A command whose `--help` option is a `_HelpOption` (every command of `durable` is one)."""

    _durable_help: click.Option | None = None

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        names = self.get_help_option_names(ctx)
        if not names or not self.add_help_option:
            return None
        if self._durable_help is None:  # made once, as click does, so callbacks keep their order
            storage = getattr(click.core, "_HELP_OPTION_STORAGE_NAME", "help")
            self._durable_help = _HelpOption([*names, storage], is_flag=True, expose_value=False,
                                             is_eager=True, callback=_show_help)
        return self._durable_help


class Group(Command, click.Group):
    """A group of `Command`s (and of such groups)."""

    command_class = Command
    group_class: type[click.Group | type] | None = type  # its subgroups are Groups too


class DurableGroup(Group):
    """Loads each command's module only when it runs (a fast start for cron), and turns library
    errors into one-line messages with the documented exit codes. Global options are accepted
    after the command too. A closed stdout (`durable ls | head`) ends any command quietly (exit 1,
    click's handling of EPIPE)."""

    group_class = Group  # its subgroups (`schedules`, ...) are plain groups

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_JSON_GIVEN] = "--json" in args
        return super().parse_args(ctx, hoist_global_options(args))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = _COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            import importlib

            importlib.import_module(f"{__name__}.{module}")
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
                raise
            except Exception as exc:
                _fail_from(exc)
        except Failure as failure:
            failure.as_json = ctx.meta.get(_JSON_GIVEN, False)
            raise
        except click.UsageError as usage:  # shown by click as usage text: --json still gets its document
            if ctx.meta.get(_JSON_GIVEN, False):
                import json

                try:
                    click.echo(json.dumps({"error": usage.format_message(), "exit_code": usage.exit_code}))
                except BrokenPipeError:
                    pass
            raise


class Settings:
    """The global options of one command, and the durable.yaml they lead to, loaded once (on
    first use, so a command that needs no config never reads it) and passed down from here."""

    def __init__(self, dir: str | None, store: str | None, config_path: str | None = None) -> None:
        self.dir = dir
        self.store = store
        self.config_path = config_path
        self._config: tuple[Any] | None = None  # (Config or None,) once loaded
        self._options: Any = None

    @property
    def config(self) -> Any:
        """The Config of `--config`, else $DURABLE_CONFIG, else ./durable.yaml; None without one."""
        if self._config is None:
            from .._location import locate

            if self.config_path is None and locate() is None:
                self._config = (None,)  # no durable.yaml: its parser is not even imported
            else:
                from .._config import config_at

                self._config = (config_at(self.config_path),)
        return self._config[0]

    @property
    def options(self) -> Any:
        """The engine's Options made from the config (and $DURABLE_PUBLIC_URL), made once."""
        if self._options is None:
            from .._config import options_from

            self._options = options_from(self.config)
        return self._options

    @property
    def payload_limit(self) -> int:
        """The largest payload accepted, in bytes: `options.payload_limit`, read off durable.yaml
        without making the Options (telemetry, queue limits) as `options_from` would."""
        from .._payloads import DEFAULT_LIMIT

        config = self.config
        return (config.payload_limit if config is not None else None) or DEFAULT_LIMIT

    def reread(self) -> None:
        """Read durable.yaml again at next use (`tick --loop`: changed queue limits apply)."""
        self._config = self._options = None

    def open(self) -> Any:
        """The store of `--store`/`--dir`, else the environment, else durable.yaml."""
        from .._location import open_configured

        return open_configured(self.dir, self.store, lambda: self.config)

    @contextlib.contextmanager
    def opened(self, posting: bool = False) -> Iterator[Any]:
        """`open()`, closed when the block ends; `posting`: a store only posted to (`durable
        resume --enqueue`), which on PostgreSQL need not import psycopg (`open_for_posting`)."""
        if posting:
            from .._location import open_for_posting

            store = open_for_posting(self.dir, self.store, lambda: self.config)
        else:
            store = self.open()
        try:
            yield store
        finally:
            store.close()


def _emit(as_json: bool, document: Any, text: Callable[[], None]) -> None:
    if as_json:
        from ._render import safe_json

        click.echo(safe_json(document, indent=2))
    else:
        text()


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
log_format_option = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="json: log one JSON object a line on stderr (time, level, run_id, workflow, event, message).")


def workflow_output(as_json: bool) -> Any:
    """Where workflow code's prints go while a command runs it: stderr under --json, so that
    stdout holds nothing but the JSON document."""
    import contextlib

    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def _version(ctx: click.Context, given: bool) -> None:
    """`--version`, as click.version_option prints it (which would look up a translation of its
    help text through gettext on every start)."""
    if not given or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    click.echo(f"{ctx.find_root().info_name}, version {version('durable-cli')}", color=ctx.color)
    ctx.exit()


@click.group(cls=DurableGroup)
@click.option("--dir", "dir_", metavar="PATH", help="Journal dir (else $DURABLE_DIR, else ./journals).")
@click.option("--store", "store_url", metavar="URL",
              help="Store: postgresql://..., a libpq conninfo string (host=... dbname=...) or a journal "
                   "directory (else $DURABLE_STORE).")
@click.option("--config", "config_path", metavar="PATH", help="durable.yaml to use (else $DURABLE_CONFIG, else ./durable.yaml).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=lambda ctx, _, given: _version(ctx, given),
              help="Show the version and exit.")
@click.pass_context
def main(ctx: click.Context, dir_: str | None, store_url: str | None, config_path: str | None) -> None:
    """Durable workflows for Python that run as ordinary processes."""
    if dir_ is not None and store_url is not None:
        raise click.UsageError("give either --dir or --store, not both")
    ctx.obj = Settings(dir_, store_url, config_path)


def _run_document(run: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"run_id": run.run_id, "status": run.status}
    if run.status == "completed":
        document["result"] = run.result
    elif run.error is not None:  # failed, or blocked (the determinism error)
        document["error"] = run.error
    if run.wake_at:
        document["wake_at"] = run.wake_at
    if run.tags:
        document["tags"] = run.tags
    if run.events:
        document["events"] = run.events
    return document


# The ends that exit 1 as a failure does, with how stderr says them: the work was not done.
_UNFINISHED_WORK = {"timed_out": "timed out (its deadline passed)", "cancelled": "was cancelled"}


def unfinished_work(run: Any) -> str | None:
    """The sentence for a run that ended without finishing its work (timed out or cancelled), else None."""
    how = _UNFINISHED_WORK.get(run.status)
    return None if how is None else f"run {run.run_id} {how} before it finished its work"


def _report_run(run: Any, as_json: bool, document: dict[str, Any] | None = None,
                text: Callable[[], None] | None = None) -> None:
    """Print a run (or `document`/`text` about it); a run that failed, timed out, was cancelled or
    is blocked says so on stderr and exits 1: it did not finish its work."""
    from ._render import safe

    def default_text() -> None:
        import json

        line = f"{run.run_id} {run.status}"
        if run.wake_at:
            line += f" (until {run.wake_at})"
        click.echo(line)
        if run.status == "completed":
            click.echo(safe(json.dumps(run.result, ensure_ascii=False)))

    _emit(as_json, document or _run_document(run), text or default_text)
    if run.status == "failed":
        error = run.error or {}
        click.echo(safe(f"run {run.run_id} failed: {error.get('type')}: {error.get('message')}"), err=True)
        sys.exit(1)
    unfinished = unfinished_work(run)
    if unfinished is not None:
        click.echo(unfinished, err=True)
        sys.exit(1)
    if run.status == "blocked":
        error = run.error or {}
        click.echo(safe(f"run {run.run_id} blocked: {error.get('message')}; fix the code, then "
                        f"`durable retry {run.run_id}`"), err=True)
        sys.exit(1)


gc.freeze()
if _COLLECTING:
    gc.enable()
