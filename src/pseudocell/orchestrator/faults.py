"""Fault injection for the resume and fault-tolerance tests (off unless the environment
variable ``PSEUDOCELL_FAULT`` is set in the driver's environment).

``PSEUDOCELL_FAULT=kill_driver:0/predict``
    the driver SIGKILLs itself right after it has handed round 0's ``predict`` to its
    actors (the stage is running, its manifest is not written); with the local
    executor, right after the stage has written its outputs (its manifest is not).
``PSEUDOCELL_FAULT=kill_actor:0/train_pu``
    the actor running round 0's ``train_pu`` writes a stray file into the stage folder
    and SIGKILLs itself before returning, on the first attempt only.
``PSEUDOCELL_FAULT=term_driver:0/train_pu``
    the driver sends itself SIGTERM as round 0's ``train_pu`` starts (any executor).
``PSEUDOCELL_FAULT=kill_sweep:trial/2``
    a sweep's driver SIGKILLs itself when Tune starts its second trial (with
    ``--max-concurrent 1``: right after the first trial finished).
"""
from __future__ import annotations

import logging
import os
import signal

__all__ = ["FAULT_ENV", "fault_at", "fault_requested", "kill_driver_if_asked", "kill_self",
           "term_driver_if_asked"]

logger = logging.getLogger(__name__)

FAULT_ENV = "PSEUDOCELL_FAULT"


def fault_requested(kind: str, where: str) -> bool:
    """True when ``PSEUDOCELL_FAULT`` asks for fault ``kind`` at ``where``."""
    spec = os.environ.get(FAULT_ENV, "")
    return any(s.strip() == f"{kind}:{where}" for s in spec.split(",") if s.strip())


def fault_at(kind: str, rnd: int, stage: str) -> bool:
    """True when ``PSEUDOCELL_FAULT`` asks for fault ``kind`` at (round, stage)."""
    return fault_requested(kind, f"{rnd}/{stage}")


def kill_self(why: str) -> None:
    """SIGKILL this process (after flushing the log handlers)."""
    logger.warning("fault injection: killing this process (%s)", why)
    for h in logging.getLogger().handlers:
        h.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def term_driver_if_asked(rnd: int, stage: str) -> None:
    """SIGTERM this process when ``term_driver`` is asked for at (round, stage)."""
    if fault_at("term_driver", rnd, stage):
        logger.warning("fault injection: SIGTERM to the driver in round %d stage %s", rnd,
                       stage)
        os.kill(os.getpid(), signal.SIGTERM)


def kill_driver_if_asked(rnd: int, stage: str) -> None:
    """SIGKILL this process when ``kill_driver`` is asked for at (round, stage)."""
    if fault_at("kill_driver", rnd, stage):
        kill_self(f"the driver in round {rnd} stage {stage}")
