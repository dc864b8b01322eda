"""The domain-adaptation benchmark's bookkeeping (issue 17): pairs, the harder shift and
the summary's targets on a hand-made result."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.bench.adapt import (METHODS, Pair, half_magnification, markdown_report,
                                    parse_pair, summarize)
from pseudocell.errors import InvalidInputError


def test_pairs_are_parsed_and_bad_ones_refused():
    assert parse_pair("u2os:nih3t3", ["u2os", "nih3t3"]) == Pair("u2os", "nih3t3")
    assert parse_pair("a:a@half-magnification", ["a"]).name == "a->a@half-magnification"
    for text, match in (("u2os", "SOURCE:TARGET"), ("u2os:x", "not among"),
                        ("a:a", "same set"), ("a:b@quarter", "unknown shift")):
        with pytest.raises(InvalidInputError, match=match):
            parse_pair(text, ["u2os", "nih3t3", "a", "b"])


def test_half_magnification_bins_pixels_and_maps_points():
    from pseudocell.bench.datasets import Dataset, DatasetSpec
    from pseudocell.validation import ImageSet

    im = np.zeros((6, 8), np.float32)
    im[2:4, 4:6] = 1.0  # one 2x2 block: one pixel of the binned image
    s = ImageSet(["a"], [im], ["a.png"])
    gt = {"image_id": np.array(["a"], object), "y": np.array([2.5]), "x": np.array([4.5])}
    h = half_magnification(Dataset(DatasetSpec(name="t", images=".", gt="g.csv", radius=8.0),
                                   s, gt, s, gt))
    small = h.test.images[0]
    assert small.shape == (3, 4)
    assert np.unravel_index(np.argmax(small), small.shape) == (1, 2)
    assert (h.test_gt["y"][0], h.test_gt["x"][0]) == (1.0, 2.0)  # the binned pixel's centre
    assert h.spec.radius == 4.0 and h.spec.name == "t@half"
    assert small.mean() == pytest.approx(0.0, abs=1e-6) and small.std() == pytest.approx(1.0)


def _f(f1: float) -> dict:
    return {"precision": f1, "recall": f1, "f1": f1}


def test_summary_reports_the_gap_closed():
    scores = [{"source_only": 0.70, "augment": 0.72, "dann": 0.69, "pseudo_heatmap": 0.80,
               "pseudo_heatmap_ranker": 0.70, "target_full": 0.90},
              {"source_only": 0.72, "augment": 0.70, "dann": 0.71, "pseudo_heatmap": 0.82,
               "pseudo_heatmap_ranker": 0.70, "target_full": 0.92}]
    result = {"seeds": [0, 1], "pairs": {"a->b": {"seeds": {
        str(k): {"scores": {m: _f(v) for m, v in s.items()}} for k, s in enumerate(scores)}}}}
    summ = summarize(result)["a->b"]
    assert summ["source_only"]["f1"]["mean"] == pytest.approx(0.71)
    assert summ["source_only"]["f1"]["sd"] == pytest.approx(np.std([0.70, 0.72], ddof=1))
    t = summ["targets"]
    assert t["gap"] == pytest.approx(0.20)
    assert t["pseudo_heatmap"]["gap_closed"] == pytest.approx(0.10 / 0.20)
    assert t["pseudo_heatmap"]["beats"] == {"source_only": True, "augment": True, "dann": True}
    assert t["pseudo_heatmap_ranker"]["beats"]["augment"] is False   # 0.70 vs 0.71
    result["summary"] = {"a->b": summ}
    report = markdown_report(result)
    assert "| a->b | 0.200 | pseudo_heatmap | yes / yes / yes | 0.50 |" in report
    assert all(f"| {m} |" in report for m in METHODS)
