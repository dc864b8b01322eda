"""Parquet tables as dicts of 1-D numpy columns (no pandas)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pseudocell.storage import fs

__all__ = ["write_table", "read_table", "POINT_COLUMNS", "concat_tables",
           "take"]

#: Columns of a labels table (annotated and pseudo points).
POINT_COLUMNS = ("image_id", "y", "x", "kind", "round", "score")


def write_table(uri: str, columns: dict[str, np.ndarray]) -> None:
    """Write equal-length columns to ``uri`` as Parquet (deterministic bytes)."""
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns differ in length: {lengths}")
    table = pa.table({k: pa.array(np.asarray(v).tolist() if np.asarray(v).dtype.kind in "OU"
                                  else np.asarray(v)) for k, v in columns.items()})
    with fs.open_uri(uri, "wb") as f:
        pq.write_table(table, f, compression="zstd")


def read_table(uri: str) -> dict[str, np.ndarray]:
    """Read a Parquet file → {column: ndarray}; strings come back as object arrays.

    A string column's equal values are one Python object (its rows hold references to
    its distinct values): a table of a million peaks in 640 images holds 640 image ids,
    not a million copies of them."""
    with fs.open_uri(uri, "rb") as f:
        t = pq.read_table(f)
    out = {}
    for name in t.column_names:
        col = t.column(name)
        if (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) \
                and col.null_count == 0:
            enc = col.combine_chunks().dictionary_encode()
            values = np.array(enc.dictionary.to_pylist(), dtype=object)
            out[name] = values[enc.indices.to_numpy(zero_copy_only=False)]
            continue
        col = col.to_numpy(zero_copy_only=False)
        out[name] = np.asarray(col, dtype=object) if col.dtype.kind in "OU" else col
    return out


def concat_tables(*tables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Row-wise concatenation of tables with the same columns."""
    keys = list(tables[0])
    return {k: np.concatenate([np.asarray(t[k]) for t in tables]) for k in keys}


def take(table: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``idx`` (int indices or bool mask) of a table."""
    return {k: np.asarray(v)[idx] for k, v in table.items()}
