"""Rich progress bars of a run for the command line: rounds, the stages of the current
round, and the steps (detector) or epochs (PU) of the training stage running now.

Bars are drawn only on a terminal and without ``--quiet``; otherwise each stage is a log
line. Either way every event also reaches the log file of the run.
"""
from __future__ import annotations

import logging
import math

from pseudocell.orchestrator.run import StageEvent

__all__ = ["RunProgress", "count_bar"]

logger = logging.getLogger("pseudocell")


class RunProgress:
    """Progress callback for :func:`~pseudocell.orchestrator.run.run_loop` (a context
    manager).

    Parameters
    ----------
    rounds : int
        The config's ``rounds`` (the run has ``rounds + 1`` detector trainings).
    console : rich.console.Console
        The console the log handler writes to, so log lines print above the bars.
    enabled : bool
        Draw bars (False: log lines only).
    """

    def __init__(self, rounds: int, console, enabled: bool) -> None:
        self.rounds = rounds
        self.console = console
        self.enabled = enabled
        self._progress = None
        self._round = -1

    def __enter__(self) -> "RunProgress":
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self._progress = Progress(TextColumn("{task.description:<34}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      TextColumn("{task.fields[info]}"),
                                      console=self.console, transient=False)
            self._progress.start()
            p = self._progress
            self._rounds = p.add_task("rounds", total=self.rounds + 1, info="")
            self._stages = p.add_task("stages", total=1, info="")
            self._steps = p.add_task("steps", total=1, info="", visible=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, e: StageEvent) -> None:
        if e.status == "start":
            logger.info("round %d: %s ...", e.round, e.stage)
        elif e.status == "skipped":
            logger.info("round %d: %s already done (resumed)", e.round, e.stage)
        elif e.status == "done":
            logger.debug("round %d: %s done in %.1f s", e.round, e.stage, e.seconds)
        if self._progress is None:
            return
        p = self._progress
        if e.round != self._round:  # a new round: earlier ones are complete
            self._round = e.round
            p.update(self._rounds, completed=e.round, description=f"round {e.round}/{self.rounds}")
            p.reset(self._stages, total=e.n_stages)
        if e.status == "start":
            p.update(self._stages, description=f"  {e.stage}")
            p.update(self._steps, visible=False)
        elif e.status == "progress":
            what = e.unit or "steps"
            info = "" if math.isnan(e.value) else f"loss {e.value:.4f}"
            p.update(self._steps, total=e.total, completed=e.done, visible=True,
                     description=f"    {what}", info=info)
        else:  # done / skipped
            p.advance(self._stages)
            p.update(self._steps, visible=False)
            p.update(self._stages, info=f"{e.stage} {e.seconds:.1f} s"
                     + (" (resumed)" if e.status == "skipped" else ""))

    def finish(self) -> None:
        """Fill every bar (the run ended)."""
        if self._progress is not None:
            p = self._progress
            p.update(self._rounds, completed=self.rounds + 1)
            p.update(self._stages, completed=p.tasks[self._stages].total)


class count_bar:  # noqa: N801 (used like a function: ``with count_bar(...) as bar``)
    """A bar of ``done`` / ``total`` items (images scored, ...) for a command's long
    loop: a context manager whose value is the ``progress(done, total)`` callback. Drawn
    only on a terminal and without ``--quiet``; otherwise a log line per tenth."""

    def __init__(self, what: str) -> None:
        from pseudocell.cli.app import console, state

        self.what = what
        self.console = console()
        self.enabled = not state().quiet and self.console.is_terminal
        self._progress = self._task = None
        self._logged = -1

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(TextColumn(f"{self.what:<20}"), BarColumn(),
                                      MofNCompleteColumn(), console=self.console)
            self._progress.start()
            self._task = self._progress.add_task(self.what, total=1)
        return self.update

    def update(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)
            return
        tenth = 10 * done // max(total, 1)
        if tenth > self._logged:
            self._logged = tenth
            logger.info("%s: %d/%d", self.what, done, total)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
