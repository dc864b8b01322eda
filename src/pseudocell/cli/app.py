"""The typer app, its global options, and the one error wrapper every command uses.

Domain errors (:class:`~pseudocell.errors.PseudocellError`) end with exit code 1 and a
one-line message; anything else is a bug and keeps its traceback. Per-invocation state
(log level, quiet, console) lives on the click context, never in module globals.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
import typing
from dataclasses import dataclass
from typing import Annotated, Any

import click
import typer

from pseudocell import __version__
from pseudocell.errors import PseudocellError

__all__ = ["app", "command", "with_options", "state", "CliState", "console"]

logger = logging.getLogger("pseudocell")

app = typer.Typer(
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
    ctx = click.get_current_context(silent=True)
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


@app.callback()
def _main(
    ctx: typer.Context,
    log_level: Annotated[str, typer.Option(help="Logging level: DEBUG, INFO, WARNING.")] = "INFO",
    quiet: Annotated[bool, typer.Option("--quiet", help="Only warnings and the result table.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Configure logging once, for every command."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"{log_level!r}: use DEBUG, INFO or WARNING",
                                 param_hint="--log-level")
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


def command(*args: Any, **kwargs: Any):
    """``app.command`` with the one error wrapper: a :class:`PseudocellError` becomes
    ``error: <message>`` on stderr and exit code 1; anything else keeps its traceback."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except PseudocellError as e:
                typer.secho(f"error: {e}", fg="red", err=True)
                raise typer.Exit(code=1) from None
        return app.command(*args, **kwargs)(wrapper)
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
