"""The registry of modes: ``Config.mode`` names one of :data:`MODES`.

A new mode is one ``core/`` module (its algorithm), one ``stages/`` module (its stage
functions and its :class:`~pseudocell.stages.base.Mode`), one entry here and its config
fields; the engine, executors, resume, progress, tracking and the run reader follow from
the declaration.
"""
from __future__ import annotations

from pseudocell.errors import InvalidConfigError
from pseudocell.stages.adapt import ADAPT, ADAPT_RANKER
from pseudocell.stages.base import Mode
from pseudocell.stages.label_free import LABEL_FREE
from pseudocell.stages.loop import PARTIAL

__all__ = ["MODES", "get_mode", "actor_kinds"]

#: mode name → pipeline.
MODES: dict[str, Mode] = {m.name: m for m in (PARTIAL, LABEL_FREE, ADAPT, ADAPT_RANKER)}


def get_mode(name: str) -> Mode:
    """The mode called ``name``; an unknown name is an :class:`InvalidConfigError` that
    lists the known ones."""
    try:
        return MODES[name]
    except KeyError:
        raise InvalidConfigError(f"mode={name!r} is not a pseudocell mode; use one of "
                                 f"{', '.join(sorted(MODES))}") from None


def actor_kinds() -> tuple[str, ...]:
    """Every actor kind of every registered mode."""
    return tuple(dict.fromkeys(k for m in MODES.values() for k in m.actor_kinds))
