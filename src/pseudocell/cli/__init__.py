"""The ``pseudocell`` command line (typer): thin commands over the library.

:mod:`.app` holds the app, the global options and the one error wrapper; :mod:`.options`
the shared option bundles (executor, tracking); each other module a few commands.
"""
from pseudocell.cli import run, human, results, tune, detect, bench  # noqa: F401,I001 (registers
# the commands, in the order --help lists them)
from pseudocell.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point: restarts once with glibc's malloc arenas limited
    (:mod:`pseudocell.runtime`), then runs the app."""
    from pseudocell.runtime import reexec_with_malloc_arena_limit

    reexec_with_malloc_arena_limit()
    app()
