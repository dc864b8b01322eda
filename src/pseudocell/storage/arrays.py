"""Zarr v3 stores of image stacks and patch/feature arrays.

Image-like stores are pre-sized ``(n, H_max, W_max)`` arrays with one chunk per image,
so independent writers can each fill whole chunks (no resize, no lost writes). The true
size and id of every image are stored in the array attributes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec

__all__ = ["create_stack", "write_stack_item", "write_stack", "read_stack_item", "stack_ids",
           "stack_shapes", "StackReader", "array_info", "iter_rows",
           "write_array", "create_array", "write_rows", "read_array"]

_COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def create_stack(uri: str, ids: Sequence[str], shapes: Sequence[tuple[int, int]],
                 dtype: str = "float32") -> zarr.Array:
    """Create an empty ``(n, H_max, W_max)`` stack with one chunk per image."""
    hmax = max(s[0] for s in shapes)
    wmax = max(s[1] for s in shapes)
    arr = zarr.create_array(uri, shape=(len(ids), hmax, wmax), chunks=(1, hmax, wmax),
                            dtype=dtype, compressors=[_COMPRESSOR], fill_value=0,
                            overwrite=True)
    arr.attrs.update({"ids": list(ids), "shapes": [list(map(int, s)) for s in shapes]})
    return arr


def write_stack_item(uri: str, index: int, image: np.ndarray) -> None:
    """Write image ``index`` (its whole chunk, zero-padded) into an existing stack."""
    arr = zarr.open_array(uri, mode="r+")
    block = np.zeros(arr.shape[1:], dtype=arr.dtype)
    block[: image.shape[0], : image.shape[1]] = image
    arr[index] = block


def write_stack(uri: str, ids: Sequence[str], images: Sequence[np.ndarray],
                dtype: str = "float32") -> None:
    """Create a stack and write all ``images`` (each (H_i, W_i))."""
    create_stack(uri, ids, [im.shape for im in images], dtype)
    for i, im in enumerate(images):
        write_stack_item(uri, i, im)


def stack_ids(uri: str) -> list[str]:
    """Image ids of a stack, in index order."""
    return list(zarr.open_array(uri, mode="r").attrs["ids"])


def stack_shapes(uri: str) -> list[tuple[int, int]]:
    """True (H, W) of every image of a stack, in index order (from the attributes)."""
    return [tuple(s) for s in zarr.open_array(uri, mode="r").attrs["shapes"]]


def read_stack_item(uri: str, index: int) -> np.ndarray:
    """Image ``index`` cropped to its true size → (H_i, W_i) in the stored dtype (to
    read many, open one :class:`StackReader`)."""
    return StackReader(uri).read(index)


class StackReader:
    """Images of a stack read one at a time through one open array (no metadata read
    per image). ``ids``, ``shapes`` as :func:`stack_ids`, :func:`stack_shapes`."""

    def __init__(self, uri: str) -> None:
        self._arr = zarr.open_array(uri, mode="r")
        self.ids: list[str] = list(self._arr.attrs["ids"])
        self.shapes: list[tuple[int, int]] = [tuple(s) for s in self._arr.attrs["shapes"]]

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` cropped to its true size → (H_i, W_i) in the stored dtype."""
        h, w = self.shapes[index]
        return np.asarray(self._arr[index, :h, :w])


def write_array(uri: str, data: np.ndarray, chunk_rows: int = 1024) -> None:
    """Write an (n, ...) array chunked along the first axis (~``chunk_rows`` rows a chunk)."""
    data = np.asarray(data)
    arr = create_array(uri, data.shape, min(chunk_rows, len(data)), data.dtype)
    if data.size:
        arr[...] = data


def create_array(uri: str, shape: tuple[int, ...], chunk_rows: int,
                 dtype: str | np.dtype = "float32") -> zarr.Array:
    """Pre-size an ``shape`` array chunked by ``chunk_rows`` along the first axis, for
    writers that each fill whole chunks (:func:`write_rows`)."""
    chunks = (max(1, chunk_rows),) + tuple(shape[1:])
    return zarr.create_array(uri, shape=shape, chunks=chunks, dtype=dtype,
                             compressors=[_COMPRESSOR], fill_value=0, overwrite=True)


def write_rows(uri: str, start: int, block: np.ndarray) -> None:
    """Write ``block`` into rows ``[start, start + len(block))`` of an existing array.

    Concurrent writers are safe only if every writer's rows are whole chunks (or end at
    the array's last row); nothing is resized here.
    """
    arr = zarr.open_array(uri, mode="r+")
    chunk = arr.chunks[0]
    stop = start + len(block)
    if start % chunk or (stop % chunk and stop != arr.shape[0]):
        raise ValueError(f"rows [{start}, {stop}) of {uri!r} are not whole chunks of {chunk}")
    if len(block):
        arr[start:stop] = block


def array_info(uri: str) -> dict:
    """``shape`` (tuple), ``dtype`` (str) and ``chunk_rows`` of an array."""
    arr = zarr.open_array(uri, mode="r")
    return {"shape": tuple(arr.shape), "dtype": str(arr.dtype), "chunk_rows": arr.chunks[0]}


def iter_rows(uri: str):
    """The array's rows one chunk at a time: yields (m, ...) ndarrays in order."""
    arr = zarr.open_array(uri, mode="r")
    step = max(1, arr.chunks[0])
    for start in range(0, arr.shape[0], step):
        yield np.asarray(arr[start:start + step])


def read_array(uri: str) -> np.ndarray:
    """The whole array."""
    return np.asarray(zarr.open_array(uri, mode="r")[...])
