"""Data-parallel settings a training loop needs, with no dependency on how the workers
were started (Ray Train, torchrun or a single process).

Every worker draws the *same* batch from the same seeded generator and keeps its slice
``[rank::world_size]``; gradients are then averaged by the ``wrap``-ped model (e.g.
``DistributedDataParallel``). With ``world_size == 1`` this is exactly the
single-process loop, bit for bit.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

__all__ = ["DataParallel", "SINGLE"]


@dataclass(frozen=True)
class DataParallel:
    """Rank, world size and model wrapper of one training worker.

    >>> DataParallel(rank=1, world_size=2).shard(np.arange(5)).tolist()
    [1, 3]
    """

    rank: int = 0
    world_size: int = 1
    wrap: Callable[[nn.Module], nn.Module] | None = None
    #: torch device of this worker (e.g. Ray Train's ``get_device()``); None: the caller's
    device: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank={self.rank} must be in [0, world_size={self.world_size})")

    def shard(self, items: np.ndarray) -> np.ndarray:
        """This worker's slice of a batch (every item of it when ``world_size == 1``)."""
        return items if self.world_size == 1 else items[self.rank::self.world_size]

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model to train (wrapped for gradient averaging when ``wrap`` is set)."""
        return self.wrap(model) if self.wrap is not None else model

    @property
    def is_main(self) -> bool:
        """True on the worker that writes results."""
        return self.rank == 0


#: The single-process setting.
SINGLE = DataParallel()
