"""The stage contract: store URIs and small metadata in, store URIs and metrics out."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from pseudocell.config import Config

__all__ = ["StageInputs", "StageOutputs", "StageFn", "ProgressFn", "stage_seed"]

#: ``progress(done, total, value)``: training stages call it after every logging window
#: (detector: optimiser steps, value = mean loss) or epoch (PU: value = nnPU risk).
ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class StageInputs:
    """What a stage reads.

    Attributes
    ----------
    out_dir : str
        Fresh, empty directory the stage writes its outputs into.
    round : int
    seed : int
        Derived from (run seed, round, stage name) by :func:`stage_seed`.
    uris : dict[str, str]
        Named input stores (images, points, heatmaps, ...). Absent optional inputs are
        simply not in the dict.
    """

    out_dir: str
    round: int
    seed: int
    uris: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StageOutputs:
    """What a stage wrote (name → URI) and small JSON-safe metrics."""

    uris: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)


class StageFn(Protocol):
    def __call__(self, inp: StageInputs, cfg: Config) -> StageOutputs: ...


def stage_seed(run_seed: int, rnd: int, stage: str) -> int:
    """Deterministic 63-bit seed of one stage.

    >>> stage_seed(0, 1, "train_pu") == stage_seed(0, 1, "train_pu")
    True
    >>> stage_seed(0, 1, "train_pu") != stage_seed(0, 2, "train_pu")
    True
    """
    ss = np.random.SeedSequence([int(run_seed), int(rnd), zlib.crc32(stage.encode())])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
