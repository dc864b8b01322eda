"""The typer app, its global options, and the one error wrapper every command uses.

Domain errors (:class:`~pseudocell.errors.PseudocellError`) end with exit code 1 and a
one-line message; anything else is a bug and keeps its traceback. Per-invocation state
(log level, quiet, console) lives on the click context, never in module globals.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import inspect
import logging
import os
import signal
import threading
import typing
from dataclasses import dataclass
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer 0.29 runs on its own copy of click: its contexts are only seen from there
    from typer._click.exceptions import NoSuchOption
    from typer._click.globals import get_current_context as _current_context
except ImportError:  # pragma: no cover (typer on click)
    from click.exceptions import NoSuchOption
    _current_context = click.get_current_context

from pseudocell import __version__
from pseudocell.errors import PseudocellError

__all__ = ["app", "command", "with_options", "state", "CliState", "console"]

logger = logging.getLogger("pseudocell")

LOG_LEVEL_HELP = "Logging level: DEBUG, INFO, WARNING."
QUIET_HELP = "Only warnings and the result table."


def _plain_flags(params: list) -> list:
    """Flags take no value, so --help shows no ``<bool>`` type for them."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


def _parse_suggesting_related(command, ctx: Any, args: list[str], parse) -> list[str]:
    """Parse ``args``; an unknown option suggests only options whose names (without
    ``--``) are close to it (click compares with the dashes, so ``--epochs`` suggested
    ``--points``)."""
    try:
        return parse(ctx, args)
    except NoSuchOption as e:
        names = {o[2:] for p in command.get_params(ctx)
                 for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
        e.possibilities = [f"--{n}" for n in difflib.get_close_matches(
            e.option_name.lstrip("-"), sorted(names), n=3, cutoff=0.6)]
        raise


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list:
        return _plain_flags(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return _parse_suggesting_related(self, ctx, args, super().parse_args)


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list:
        return _plain_flags(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return _parse_suggesting_related(self, ctx, args, super().parse_args)


app = typer.Typer(
    cls=_Group,
    name="pseudocell",
    help="Cell detection from a few annotated points, grown by PU pseudo-labelling.\n\n"
         "Example: pseudocell run --images imgs/ --points clicks.csv --out runs/exp1",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class CliState:
    """What the global options set for this invocation."""

    quiet: bool = False
    level: int = logging.INFO
    console: Any = None


def state() -> CliState:
    """This invocation's :class:`CliState` (defaults outside a command line)."""
    ctx = _current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, CliState) else CliState()


def console():
    """The stderr console the log handler writes to."""
    from rich.console import Console

    return state().console or Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pseudocell {__version__}")
        raise typer.Exit()


class _ConsoleFormatter(logging.Formatter):
    """Console lines without tracebacks (the run's log file keeps them; ``--log-level
    DEBUG`` shows them here too)."""

    def __init__(self, show_tracebacks: bool) -> None:
        super().__init__("%(message)s")
        self.show_tracebacks = show_tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if self.show_tracebacks or not record.exc_info:
            return super().format(record)
        plain = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(plain)


def _parse_level(log_level: str) -> int:
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"{log_level!r}: use DEBUG, INFO or WARNING",
                                 param_hint="--log-level")
    return level


@app.callback()
def _main(
    ctx: typer.Context,
    log_level: Annotated[str, typer.Option(help=LOG_LEVEL_HELP)] = "INFO",
    quiet: Annotated[bool, typer.Option("--quiet", help=QUIET_HELP)] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Configure logging once, for every command."""
    _configure(ctx, _parse_level(log_level), quiet)


def _configure(ctx: click.Context, level: int, quiet: bool) -> None:
    """Set this invocation's :class:`CliState` and the console log handler."""
    from rich.console import Console
    from rich.logging import RichHandler

    ctx.obj = CliState(quiet=quiet, level=level, console=Console(stderr=True))
    shown = logging.WARNING if quiet else level
    handler = RichHandler(console=ctx.obj.console, show_path=False, rich_tracebacks=False)
    handler.setFormatter(_ConsoleFormatter(show_tracebacks=level <= logging.DEBUG))
    handler.setLevel(shown)
    root = logging.getLogger("pseudocell")
    root.handlers[:] = [handler]
    root.setLevel(min(level, logging.INFO))  # the run's log file always gets INFO
    # MLflow configures its own loggers when imported; keep its database set-up chatter
    # out of the console unless asked for
    if level > logging.DEBUG:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        for name in ("mlflow", "alembic"):  # in case they were imported already
            logging.getLogger(name).setLevel(logging.WARNING)


class Terminated(SystemExit):
    """SIGTERM or SIGHUP reached the command: unwinds like Ctrl-C, so that every
    ``finally`` and context manager runs (Ray shut down, the MLflow run marked KILLED,
    partial outputs left for ``resume``); exit code 128 + the signal's number."""


@contextlib.contextmanager
def _terminate_cleanly():
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while the command runs."""
    def raise_terminated(signum, frame):
        logger.warning("stopped by %s; `pseudocell resume` continues a stopped run",
                       signal.Signals(signum).name)
        raise Terminated(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals (an embedding application's)
        return
    old = {s: signal.signal(s, raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def command(*args: Any, **kwargs: Any):
    """``app.command`` with the one error wrapper: a :class:`PseudocellError` becomes
    ``error: <message>`` on stderr and exit code 1; anything else keeps its traceback.

    Every command also takes the global ``--quiet`` and ``--log-level`` after its name
    (``pseudocell run ... --quiet`` = ``pseudocell --quiet run ...``)."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            late_level, late_quiet = k.pop("log_level"), k.pop("quiet")
            if late_level is not None or late_quiet:
                root = _current_context().find_root()
                st = state()
                _configure(root, st.level if late_level is None else _parse_level(late_level),
                           st.quiet or late_quiet)
            try:
                with _terminate_cleanly():
                    return fn(*a, **k)
            except PseudocellError as e:
                typer.secho(f"error: {e}", fg="red", err=True)
                raise typer.Exit(code=1) from None

        sig = inspect.signature(fn, eval_str=True)
        late = {
            "log_level": Annotated[str | None, typer.Option(
                "--log-level", help=LOG_LEVEL_HELP + " Also accepted before the command.")],
            "quiet": Annotated[bool, typer.Option("--quiet", help=QUIET_HELP)],
        }
        wrapper.__signature__ = sig.replace(parameters=[
            *sig.parameters.values(),
            *(inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=t,
                                default=None if n == "log_level" else False)
              for n, t in late.items())])
        wrapper.__annotations__ = {**typing.get_type_hints(fn, include_extras=True), **late}
        return app.command(*args, cls=_Command, **kwargs)(wrapper)
    return decorate


def with_options(**bundles: type):
    """Add every field of each dataclass in ``bundles`` (``keyword=OptionsClass``) as an
    option of the decorated command; the command receives one instance per bundle under
    its keyword. The fields' ``Annotated`` types carry their help texts."""
    def decorate(fn):
        sig = inspect.signature(fn, eval_str=True)
        params = [p for p in sig.parameters.values() if p.name not in bundles]
        annotations = dict(typing.get_type_hints(fn, include_extras=True))
        names: dict[str, list[str]] = {}
        for kw, cls in bundles.items():
            hints = typing.get_type_hints(cls, include_extras=True)
            names[kw] = [f.name for f in dataclasses.fields(cls)]
            for f in dataclasses.fields(cls):
                params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                                default=f.default, annotation=hints[f.name]))
                annotations[f.name] = hints[f.name]
            annotations.pop(kw, None)

        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            for kw, cls in bundles.items():
                k[kw] = cls(**{n: k.pop(n) for n in names[kw]})
            return fn(*a, **k)

        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = annotations
        return wrapper
    return decorate
