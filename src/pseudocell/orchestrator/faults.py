"""Fault injection for the resume and fault-tolerance tests (off unless the environment
variable ``PSEUDOCELL_FAULT`` is set in the driver's environment).

``PSEUDOCELL_FAULT=kill_driver:0/predict``
    the driver SIGKILLs itself right after it has handed round 0's ``predict`` to its
    actors (the stage is running, its manifest is not written).
``PSEUDOCELL_FAULT=kill_actor:0/train_pu``
    the actor running round 0's ``train_pu`` writes a stray file into the stage folder
    and SIGKILLs itself before returning, on the first attempt only.
"""
from __future__ import annotations

import logging
import os
import signal

__all__ = ["FAULT_ENV", "fault_at", "kill_driver_if_asked"]

logger = logging.getLogger(__name__)

FAULT_ENV = "PSEUDOCELL_FAULT"


def fault_at(kind: str, rnd: int, stage: str) -> bool:
    """True when ``PSEUDOCELL_FAULT`` asks for fault ``kind`` at (round, stage)."""
    spec = os.environ.get(FAULT_ENV, "")
    return any(s.strip() == f"{kind}:{rnd}/{stage}" for s in spec.split(",") if s.strip())


def kill_driver_if_asked(rnd: int, stage: str) -> None:
    """SIGKILL this process when ``kill_driver`` is asked for at (round, stage)."""
    if fault_at("kill_driver", rnd, stage):
        logger.warning("fault injection: killing the driver in round %d stage %s", rnd, stage)
        for h in logging.getLogger().handlers:
            h.flush()
        os.kill(os.getpid(), signal.SIGKILL)
