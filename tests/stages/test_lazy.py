"""Lazily read sequences and row files: the streaming stages give the trainers the same
numbers as whole arrays would, whatever the cache budget."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudocell.core.detector import train_detector
from pseudocell.core.pu import iter_pu_features, pu_features, train_pu
from pseudocell.core.ranker import fit_ranker
from pseudocell.core.select import rank_unlabeled
from pseudocell.stages.lazy import Chain, Field, LazyItems, RowFile


def test_lazy_items_evicts_least_recently_used_and_recomputes_the_same():
    calls = []

    def load(k):
        calls.append(k)
        return np.full(4, k, np.float64)  # 32 bytes

    items = LazyItems(4, load, budget=64)  # two items fit
    assert [int(items[k][0]) for k in (0, 1, 0, 2, 1, 3, -1)] == [0, 1, 0, 2, 1, 3, 3]
    # 0, 1 loaded; 0 a hit; 2 evicts 1; 1 reloaded (evicts 0); 3 evicts 2; -1 is 3: a hit
    assert calls == [0, 1, 2, 1, 3]
    assert items.misses == 5
    with pytest.raises(IndexError):
        items[4]
    big = LazyItems(2, lambda k: np.zeros(100), budget=0)  # the last item is always kept
    assert big[1] is big[1]


def test_chain_and_field_index_across_parts():
    a = LazyItems(2, lambda k: (k, 10 + k))
    c = Field(a, 1) + [7, 8] + (9,)
    assert isinstance(c, Chain)
    assert list(c) == [10, 11, 7, 8, 9]
    assert c[-1] == 9 and c[1:3] == [11, 7] and len(c) == 5
    with pytest.raises(IndexError):
        c[5]


def test_row_file_reads_rows_slices_and_views(tmp_path):
    x = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    with RowFile(tmp_path / "r.raw", [x[:3], x[3:5], x[5:]], (2, 3), np.float32) as rows:
        assert rows.shape == (7, 2, 3) and len(rows) == 7
        np.testing.assert_array_equal(rows[2:6], x[2:6])
        np.testing.assert_array_equal(rows[np.array([6, 0, 3])], x[[6, 0, 3]])
        np.testing.assert_array_equal(rows[::3], x[::3])
        view = rows.take(np.array([1, 4, 5]))
        assert view.shape == (3, 2, 3)
        np.testing.assert_array_equal(view[np.array([2, 0])], x[[5, 1]])
        np.testing.assert_array_equal(view[1:3], x[[4, 5]])
        with pytest.raises(IndexError):
            rows[np.array([7])]
    with pytest.raises(ValueError, match="block of shape"):
        RowFile(tmp_path / "bad.raw", [np.zeros((2, 3, 3))], (2, 3), np.float32)


def _blob_patches(n, seed, s=15):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:s, :s] - s // 2
    blob = np.exp(-(yy**2 + xx**2) / 8.0).astype(np.float32)
    amp = rng.uniform(0, 2, (n, 1, 1)).astype(np.float32)
    return (amp * blob + 0.1 * rng.standard_normal((n, s, s)))[:, None].astype(np.float32)


def test_train_pu_on_row_file_equals_train_pu_on_arrays(tmp_path):
    x = _blob_patches(90, seed=1)
    is_p = np.zeros(90, bool)
    is_p[::4] = True
    kw = dict(prior=0.5, epochs=3, lr=1e-3, weight_decay=0.0, batch=16, feature_dim=8,
              seed=3, device="cpu")
    ref = train_pu(x[is_p], x[~is_p], **kw)
    with RowFile(tmp_path / "p.raw", [x[:50], x[50:]], x.shape[1:], np.float32) as rows:
        got = train_pu(rows.take(np.flatnonzero(is_p)), rows.take(np.flatnonzero(~is_p)), **kw)
        feats = list(iter_pu_features(got.state_dict, rows, feature_dim=8, device="cpu",
                                      batch=32))
    assert got.risks == ref.risks and got.corrections == ref.corrections
    for k, v in ref.state_dict.items():
        assert torch.equal(v, got.state_dict[k]), k
    f_ref, s_ref = pu_features(ref.state_dict, x, feature_dim=8, device="cpu", batch=32)
    assert [len(f) for f, _ in feats] == [32, 32, 26]
    np.testing.assert_array_equal(np.concatenate([f for f, _ in feats]), f_ref)
    np.testing.assert_array_equal(np.concatenate([s for _, s in feats]), s_ref)


def test_ranker_streamed_in_blocks_matches_the_in_memory_fit(tmp_path):
    rng = np.random.default_rng(0)
    fp = (rng.standard_normal((40, 6)) + 1.0).astype(np.float32)
    fu = np.concatenate([rng.standard_normal((60, 6)) + 1.0,
                         rng.standard_normal((100, 6))]).astype(np.float32)
    ref = fit_ranker(fp, fu, p=4.0, lam=0.1)
    # the same rows through a row file, fit in blocks of 17 (streamed: 200 rows > 17)
    with RowFile(tmp_path / "f.raw", [fp, fu], (6,), np.float32) as rows:
        vp, vu = rows.take(np.arange(40)), rows.take(np.arange(40, 200))
        got = fit_ranker(vp, vu, p=4.0, lam=0.1, block=17)
        same = fit_ranker(vp, vu, p=4.0, lam=0.1)  # under the block size: in memory
        scores = got.score(vu, block=17)
        s_pos, s_neg = rank_unlabeled(vp, vu, p=4.0, lam=0.1)
    np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-12)
    np.testing.assert_allclose(got.std, ref.std, rtol=1e-12)
    np.testing.assert_allclose(got.w, ref.w, rtol=1e-5, atol=1e-7)
    assert got.b == pytest.approx(ref.b, rel=1e-5)
    np.testing.assert_allclose(scores, ref.score(fu), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(same.w, ref.w)  # identical bytes in memory
    r_pos, r_neg = rank_unlabeled(fp, fu, p=4.0, lam=0.1)
    np.testing.assert_array_equal(s_pos, r_pos)
    np.testing.assert_array_equal(s_neg, r_neg)


def test_rank_stage_row_files_hold_p_and_u_rows_contiguously_in_order(tmp_path):
    """The rank stage copies P's and U's features into a row file each (a streamed fit
    then reads a block in one call), the rows in their original order, across chunks."""
    from pseudocell.stages.loop import _row_file
    from pseudocell.storage import arrays

    x = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    keep = np.random.default_rng(0).random(50) < 0.3
    uri = str(tmp_path / "f.zarr")
    arrays.write_array(uri, x, chunk_rows=7)
    p, u = RowFile.split((tmp_path / "p.raw", tmp_path / "u.raw"), arrays.iter_rows(uri),
                         keep, (3,), np.float32)
    with p, u, _row_file(uri, tmp_path / "a.raw") as a:
        np.testing.assert_array_equal(p[:], x[keep])
        np.testing.assert_array_equal(u[:], x[~keep])
        np.testing.assert_array_equal(a[:], x)
    with pytest.raises(ValueError, match="keep has 49 rows"):
        RowFile.split((tmp_path / "p2.raw", tmp_path / "u2.raw"), arrays.iter_rows(uri),
                      keep[:-1], (3,), np.float32)
    with pytest.raises(ValueError, match="keep has 51 rows; the blocks have 50"):
        RowFile.split((tmp_path / "p3.raw", tmp_path / "u3.raw"), arrays.iter_rows(uri),
                      np.r_[keep, True], (3,), np.float32)


def test_rank_stage_reads_the_features_once_and_scores_u_as_in_memory(tmp_path, monkeypatch,
                                                                     tiny_cfg):
    from pseudocell.stages import loop
    from pseudocell.stages.base import StageInputs
    from pseudocell.storage import arrays, tables

    rng = np.random.default_rng(1)
    is_p = rng.random(60) < 0.3
    x = (rng.standard_normal((60, 5)) + is_p[:, None]).astype(np.float32)
    arrays.write_array(str(tmp_path / "f.zarr"), x, chunk_rows=8)
    tables.write_table(str(tmp_path / "t.parquet"), {
        "patch_id": np.arange(60, dtype=np.int64), "peak": rng.random(60),
        "set": np.where(is_p, "P", "U").astype(object)})
    reads = []
    real = arrays.iter_rows
    monkeypatch.setattr(arrays, "iter_rows", lambda uri: reads.append(uri) or real(uri))
    (tmp_path / "out").mkdir()
    out = loop.rank(StageInputs(str(tmp_path / "out"), 0, 0, {
        "table": str(tmp_path / "t.parquet"), "features": str(tmp_path / "f.zarr")}), tiny_cfg)
    assert reads == [str(tmp_path / "f.zarr")]  # one pass writes both row files
    got = tables.read_table(out.uris["scores"])
    r_pos, r_neg = rank_unlabeled(x[is_p], x[~is_p], p=tiny_cfg.p, lam=tiny_cfg.lam,
                                  neg_ranker=tiny_cfg.neg_ranker,
                                  provisional_top=tiny_cfg.provisional_top)
    np.testing.assert_array_equal(got["patch_id"], np.flatnonzero(~is_p))
    np.testing.assert_array_equal(got["pos_score"], r_pos)
    np.testing.assert_array_equal(got["neg_score"], r_neg)


def test_detector_training_on_lazy_items_equals_lists_whatever_the_budget(small_crops):
    from pseudocell.core.targets import make_target

    images, gt = small_crops
    ims = [im.astype(np.float32) for im in images.images]
    sup = []
    for i, im in zip(images.ids, ims):
        sel = gt["image_id"] == i
        pts = np.stack([gt["y"][sel], gt["x"][sel]], axis=1)[::3]
        sup.append(make_target(im.shape, pts, None, 3.0, 8.0))
    kw = dict(widths=(4, 8), iters=6, batch=3, crop=48, lr=1e-3, seed=5, device="cpu")
    ref = train_detector(ims, [t for t, _ in sup], [m for _, m in sup], **kw)
    lazy_sup = LazyItems(len(sup), lambda k: sup[k], budget=0)  # a miss at every change
    lazy_im = LazyItems(len(ims), lambda k: ims[k], budget=0)
    got = train_detector(lazy_im, Field(lazy_sup, 0), Field(lazy_sup, 1), **kw)
    assert lazy_im.misses > len(ims)  # images were read again after eviction
    assert got.losses == ref.losses
    for k, v in ref.state_dict.items():
        assert torch.equal(v, got.state_dict[k]), k


def test_train_pu_stage_writes_features_in_whole_chunks_whatever_the_batch(tmp_path, monkeypatch):
    """train_pu computes features FEATURE_BATCH patches at a time but writes whole
    1,024-row chunks: the stored features are the same bytes for any batch."""
    from pseudocell.config import Config
    from pseudocell.stages import loop
    from pseudocell.stages.base import StageInputs
    from pseudocell.storage import arrays, tables

    n = 1100  # a full chunk and a partial one
    x = _blob_patches(n, seed=2)
    uris = {"patches": str(tmp_path / "patches.zarr"), "table": str(tmp_path / "t.parquet")}
    arrays.write_array(uris["patches"], x, chunk_rows=300)
    tables.write_table(uris["table"], {"patch_id": np.arange(n, dtype=np.int64),
                                       "set": np.where(np.arange(n) % 5 == 0, "P", "U").astype(object)})
    cfg = Config(pu_epochs=1, pu_batch=128, pu_feature_dim=8, pu_prior=0.4, device="cpu")
    feats = []
    for batch in (256, 2048, 100):
        monkeypatch.setattr(loop, "FEATURE_BATCH", batch)
        out = tmp_path / f"b{batch}"
        out.mkdir()
        res = loop.train_pu(StageInputs(str(out), 0, 7, dict(uris)), cfg)
        feats.append(arrays.read_array(res.uris["features"]))
        assert arrays.array_info(res.uris["features"])["chunk_rows"] == 1024
    assert feats[0].shape == (n, 8) and np.abs(feats[0]).sum() > 0
    np.testing.assert_array_equal(feats[0], feats[1])
    np.testing.assert_array_equal(feats[0], feats[2])
