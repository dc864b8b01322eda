"""Sequences whose items are read or computed on demand, with a bounded cache, and
row files that training stages draw random batches from.

Training stages hand the core trainers these instead of lists of whole arrays, so a
stage's memory does not grow with the number of images: only the most recently used
items are held, up to a byte budget. Items are deterministic functions of their index,
so a cache miss recomputes exactly what a hit would have returned: results do not
depend on the budget (only the time does).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["LazyItems", "Chain", "Field", "RowFile", "Rows", "CACHE_BYTES"]

logger = logging.getLogger(__name__)

#: Default byte budget of one :class:`LazyItems` cache. The bright-field demo's 40
#: training images at their working scale fit in it, so a demo-sized stage reads each
#: image once, as before; a 16x larger set keeps at most this much.
CACHE_BYTES = 48 * 2**20


def _nbytes(item: Any) -> int:
    if isinstance(item, np.ndarray):
        return item.nbytes
    if isinstance(item, (tuple, list)):
        return sum(_nbytes(a) for a in item)
    return 0


class LazyItems(Sequence):
    """``n`` items, item ``k`` = ``load(k)``, the most recently used kept while their
    total size stays within ``budget`` bytes (the last item read is always kept).

    Parameters
    ----------
    n : int
        Number of items.
    load : callable(int) -> object
        Computes item ``k`` (an array, or a tuple of arrays); must be deterministic.
    budget : int
        Cache size in bytes.

    >>> calls = []
    >>> items = LazyItems(3, lambda k: (calls.append(k), np.full(2, k))[1], budget=16)
    >>> [int(items[k][0]) for k in (0, 1, 0, 2, 0)], calls
    ([0, 1, 0, 2, 0], [0, 1, 2, 0])
    """

    def __init__(self, n: int, load: Callable[[int], Any], budget: int = CACHE_BYTES) -> None:
        self._n, self._load, self._budget = int(n), load, int(budget)
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._bytes = 0
        self.misses = 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(self._n))]
        k = int(k)
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError(f"item {k} of {self._n}")
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        item = self._load(k)
        self.misses += 1
        self._cache[k] = item
        self._bytes += _nbytes(item)
        while self._bytes > self._budget and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= _nbytes(old)
        return item

    def __add__(self, other: Sequence) -> Chain:
        return Chain([self, other])


class Chain(Sequence):
    """Sequences one after another (``a + b`` without copying either).

    >>> list(Chain([[1, 2], (3,)]))
    [1, 2, 3]
    """

    def __init__(self, parts: Sequence[Sequence]) -> None:
        self._parts = list(parts)
        self._ends = np.cumsum([len(p) for p in self._parts])

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        k = int(k)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"item {k} of {len(self)}")
        j = int(np.searchsorted(self._ends, k, side="right"))
        return self._parts[j][k - (int(self._ends[j - 1]) if j else 0)]

    def __add__(self, other: Sequence) -> Chain:
        return Chain([*self._parts, other])


class Field(Sequence):
    """Element ``j`` of every item of ``items`` (e.g. the targets of (target, mask)
    pairs), sharing ``items``' cache.

    >>> list(Field([(1, "a"), (2, "b")], 1))
    ['a', 'b']
    """

    def __init__(self, items: Sequence, j: int) -> None:
        self._items, self._j = items, j

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self._items[k][self._j]

    def __add__(self, other: Sequence) -> Chain:
        return Chain([self, other])


class RowFile:
    """The rows of an (n, ...) array in an uncompressed local scratch file, read back a
    few at a time (``os.preadv``, no memory map: pages read are not held by the
    process). Training stages copy a Zarr array here once, chunk by chunk, to draw
    random batches of rows without decompressing a chunk per row.

    Parameters
    ----------
    path : str or Path
        Scratch file (created; the caller removes it).
    blocks : iterable of ndarray
        The array's rows, block after block, each (m, *row_shape) of ``dtype``.
    row_shape : tuple of int
    dtype : numpy dtype

    Indexing with an int array or a slice returns an ndarray ``(len, *row_shape)``;
    :meth:`take` gives a view on some rows (``view[j]`` = row ``idx[j]``).
    """

    def __init__(self, path, blocks, row_shape: tuple[int, ...], dtype) -> None:
        self._setup(row_shape, dtype)
        with open(path, "wb") as f:
            for b in blocks:
                self._append(f, b)
        self._fd = os.open(path, os.O_RDONLY)

    @classmethod
    def split(cls, paths, blocks, keep: np.ndarray, row_shape: tuple[int, ...],
              dtype) -> tuple[RowFile, RowFile]:
        """Two row files from one pass over ``blocks``: the rows where the (n,) bool
        ``keep`` is True (in order) in ``paths[0]``, the others in ``paths[1]``."""
        keep = np.asarray(keep, bool)
        files = tuple(cls.__new__(cls) for _ in range(2))
        for rf in files:
            rf._setup(row_shape, dtype)
        start = 0
        with open(paths[0], "wb") as f0, open(paths[1], "wb") as f1:
            for b in blocks:
                k = keep[start:start + len(b)]
                if len(k) != len(b):
                    raise ValueError(f"keep has {len(keep)} rows; the blocks have more")
                files[0]._append(f0, b[k])
                files[1]._append(f1, b[~k])
                start += len(b)
        if start != len(keep):
            raise ValueError(f"keep has {len(keep)} rows; the blocks have {start}")
        try:
            for rf, path in zip(files, paths):
                rf._fd = os.open(path, os.O_RDONLY)
        except OSError:
            for rf in files:
                rf.close()
            raise
        return files

    def _setup(self, row_shape: tuple[int, ...], dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(s) for s in row_shape)
        self._row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._n = 0
        self._fd = -1

    def _append(self, f, block: np.ndarray) -> None:
        b = np.ascontiguousarray(block, dtype=self.dtype)
        if b.shape[1:] != self.row_shape:
            raise ValueError(f"block of shape {b.shape} in rows of {self.row_shape}")
        f.write(b.tobytes())
        self._n += len(b)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self.row_shape)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            start, stop, step = idx.indices(self._n)
            if step == 1:
                out = np.empty((max(0, stop - start), *self.row_shape), self.dtype)
                if len(out):
                    self._read(out, start)
                return out
            idx = np.arange(start, stop, step)
        idx = np.asarray(idx, np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self._n):
            raise IndexError(f"rows outside [0, {self._n})")
        out = np.empty((len(idx), *self.row_shape), self.dtype)
        # one read per run of consecutive rows (a view's rows in order: a few reads)
        cut = np.flatnonzero(np.diff(idx) != 1) + 1
        for a, b in zip(np.r_[0, cut], np.r_[cut, len(idx)]) if len(idx) else ():
            self._read(out[a:b], int(idx[a]))
        return out

    def _read(self, out: np.ndarray, row: int) -> None:
        view = memoryview(out.reshape(-1).view(np.uint8))
        got = os.preadv(self._fd, [view], row * self._row_bytes)
        if got != len(view):
            raise OSError(f"short read of the row file: {got} of {len(view)} bytes")

    def take(self, idx) -> Rows:
        return Rows(self, np.asarray(idx, np.int64))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RowFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Rows:
    """Rows ``idx`` of a :class:`RowFile` (``rows[j]`` = ``file[idx[j]]``), indexable
    like an array by an int array or a slice."""

    def __init__(self, source: RowFile, idx: np.ndarray) -> None:
        self._src, self._idx = source, idx

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._idx), *self._src.row_shape)

    def __len__(self) -> int:
        return len(self._idx)

    def __getitem__(self, j) -> np.ndarray:
        return self._src[self._idx[j]]
