"""Stores addressed by URI: the same helpers work on local disk and on a non-local
fsspec filesystem (``memory://``), and chunk-aligned writers are enforced."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.errors import StoreError
from pseudocell.storage import arrays, fs, tables
from pseudocell.storage.manifest import (checksum, read_manifest, remove_tree, verify_outputs,
                                         write_manifest)


@pytest.fixture(params=["local", "memory", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path)
        return
    if request.param == "s3":
        uri = f"{request.getfixturevalue('s3_bucket')}/t{id(request)}"
    else:
        uri = f"memory://pseudocell-test-{id(request)}"
    yield uri
    fs.remove(uri)


def test_tables_manifest_and_checksums_round_trip_on_any_filesystem(root):
    t = {"image_id": np.array(["a", "b"], object), "y": np.array([1.5, 2.0])}
    uri = f"{root}/stage/table.parquet"
    tables.write_table(uri, t)
    back = tables.read_table(uri)
    assert back["image_id"].tolist() == ["a", "b"] and back["y"].tolist() == [1.5, 2.0]
    fs.write_bytes(f"{root}/stage/sub/x.bin", b"xyz")
    assert fs.list_files(f"{root}/stage") == ["sub/x.bin", "table.parquet"]
    m = f"{root}/stage/_manifest.json"
    write_manifest(m, {"outputs": {"t": {"uri": uri, "sha256": checksum(uri)},
                                   "d": {"uri": f"{root}/stage/sub",
                                         "sha256": checksum(f"{root}/stage/sub")}}})
    assert verify_outputs(read_manifest(m)) == []
    fs.write_bytes(f"{root}/stage/sub/x.bin", b"xyZ")
    assert verify_outputs(read_manifest(m)) == ["d"]
    remove_tree(f"{root}/stage")
    assert read_manifest(m) is None and not fs.exists(uri)
    with pytest.raises(StoreError, match="does not exist"):
        checksum(uri)


def test_manifest_write_leaves_no_temp_file_on_local_disk(tmp_path):
    write_manifest(str(tmp_path / "_manifest.json"), {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["_manifest.json"]


def test_write_rows_accepts_whole_chunks_only(tmp_path):
    uri = str(tmp_path / "a.zarr")
    arrays.create_array(uri, (10, 2), chunk_rows=4)
    arrays.write_rows(uri, 0, np.ones((4, 2), np.float32))
    arrays.write_rows(uri, 8, np.full((2, 2), 3, np.float32))  # the short last chunk
    with pytest.raises(ValueError, match="not whole chunks"):
        arrays.write_rows(uri, 2, np.ones((4, 2), np.float32))
    got = arrays.read_array(uri)
    assert got[:4].sum() == 8 and got[4:8].sum() == 0 and got[8:].sum() == 12


def test_read_table_shares_one_object_per_distinct_string(tmp_path):
    """A table of many rows in few images holds each image id once (memory at scale)."""
    import numpy as np

    from pseudocell.storage import tables

    ids = np.array(["img1", "img2"] * 500, object)
    tables.write_table(str(tmp_path / "t.parquet"), {"image_id": ids, "y": np.arange(1000.0)})
    t = tables.read_table(str(tmp_path / "t.parquet"))
    assert t["image_id"].dtype == object and list(t["image_id"]) == list(ids)
    assert len({id(v) for v in t["image_id"]}) == 2
    tables.write_table(str(tmp_path / "e.parquet"), {"image_id": ids[:0], "y": np.zeros(0)})
    empty = tables.read_table(str(tmp_path / "e.parquet"))
    assert empty["image_id"].dtype == object and len(empty["image_id"]) == 0
