"""The pure maths of the human-in-the-loop review (core/review.py)."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.core.review import (choose_tiles, decision_disagreement, in_box, merge_human,
                                    overlap_fraction, review_counts, tile_grid, tile_scores)


@pytest.mark.parametrize("shape,tile", [((128, 160), 64), ((100, 37), 32), ((20, 20), 64),
                                        ((257, 256), 128)])
def test_tile_grid_covers_every_pixel_inside_the_image(shape, tile):
    g = tile_grid(shape, tile)
    cover = np.zeros(shape, int)
    for y0, x0, h, w in g:
        assert 0 <= y0 and 0 <= x0 and y0 + h <= shape[0] and x0 + w <= shape[1]
        assert h == min(tile, shape[0]) and w == min(tile, shape[1])
        cover[y0:y0 + h, x0:x0 + w] += 1
    assert cover.min() >= 1
    assert len({tuple(t) for t in g.tolist()}) == len(g)


def test_decision_disagreement_is_the_scaled_bernoulli_variance():
    p = np.zeros((8, 9, 9), np.float32)
    p[:2, 4, 4] = 0.8      # 2 of 8 passes see a cell at (4, 4): q = 1/4
    p[:, 1, 1] = 0.9       # every pass: q = 1
    d = decision_disagreement(p, np.array([[4.0, 4.0], [1.0, 1.0], [7.0, 7.0]]),
                              threshold=0.5, radius=0)
    assert d.tolist() == pytest.approx([4 * 0.25 * 0.75, 0.0, 0.0])


def test_tile_scores_add_disagreement_and_weighted_ranker_leftovers():
    tiles = np.array([[0, 0, 10, 10], [0, 10, 10, 10], [10, 0, 10, 10]])
    pts = np.array([[1.0, 1.0], [2.0, 2.0], [5.0, 15.0]])
    s, d = tile_scores(tiles, pts, np.array([0.25, 0.5, 1.0]),
                       np.array([[15.0, 5.0], [16.0, 6.0], [3.0, 3.0]]), ranker_weight=0.5)
    assert d.tolist() == [0.75, 1.0, 0.0]
    assert s.tolist() == [1.25, 1.0, 1.0]


def test_choose_tiles_respects_budget_eligibility_per_image_and_audit():
    rng = np.random.default_rng(3)
    scores = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 0.0, 0.0])
    image = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    eligible = np.array([True, False, True, True, True, True, True, True])
    c, a = choose_tiles(scores, image, eligible, budget=4, per_image=1, audit_fraction=0.0,
                        rng=rng)
    assert c.tolist() == [0, 3, 5]  # three images, one tile each: the budget cannot be spent
    c, a = choose_tiles(scores, image, eligible, budget=4, per_image=2, audit_fraction=0.25,
                        rng=rng)
    assert c[:3].tolist() == [0, 2, 3] and a.tolist() == [False, False, False, True]
    assert c[3] in (4, 5, 6, 7)  # the audit tile: any eligible one, at random
    c, a = choose_tiles(scores, image, eligible, budget=5, per_image=5, audit_fraction=0.0,
                        rng=rng)
    assert c.tolist() == [0, 2, 3, 4, 5] and not a.any()


def test_overlap_and_in_box():
    assert overlap_fraction((0, 0, 10, 10), np.array([[5, 5, 10, 10]])).tolist() == [0.25]
    assert in_box(np.array([[9.9, 0.0], [10.0, 0.0]]), (0, 0, 10, 10)).tolist() == [True, False]


def _labels(rows):
    return {"image_id": np.array([r[0] for r in rows], object),
            "y": np.array([r[1] for r in rows], float), "x": np.array([r[2] for r in rows], float),
            "kind": np.array([r[3] for r in rows], object),
            "round": np.zeros(len(rows), np.int64), "score": np.full(len(rows), np.nan)}


def test_merge_human_replaces_machine_labels_in_reviewed_tiles_and_is_idempotent():
    lab = _labels([("a", 5, 5, "pseudo_pos"),      # inside the reviewed tile: dropped
                   ("a", 6, 6, "annotated"),       # a click: kept
                   ("a", 50, 50, "pseudo_neg"),    # next to a person's point: dropped
                   ("a", 80, 80, "pseudo_pos"),    # elsewhere: kept
                   ("b", 5, 5, "pseudo_pos")])     # another image: kept
    hum = _labels([("a", 3, 3, "human_added"), ("a", 51, 50, "human_confirmed"),
                   ("a", 8, 2, "human_rejected")])
    tiles, tile_img = np.array([[0, 0, 20, 20]]), np.array(["a"], object)
    m = merge_human(lab, hum, tiles, tile_img, radius=3.0)
    got = sorted(zip(m["image_id"], m["y"], m["kind"]))
    assert got == sorted([("a", 6.0, "annotated"), ("a", 80.0, "pseudo_pos"),
                          ("b", 5.0, "pseudo_pos"), ("a", 3.0, "human_added"),
                          ("a", 51.0, "human_confirmed"), ("a", 8.0, "human_rejected")])
    again = merge_human(m, hum, tiles, tile_img, radius=3.0)
    for k in m:
        np.testing.assert_array_equal(again[k], m[k])


def test_review_counts():
    assert review_counts(np.array(["proposed", "confirmed", "rejected", "rejected", "added"])) \
        == {"tp": 2, "fp": 2, "fn": 1}
