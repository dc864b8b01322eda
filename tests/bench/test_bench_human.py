"""The human-in-the-loop benchmark's bookkeeping and its simulated annotator."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.bench.annotator import annotate_review
from pseudocell.bench.human import _clicks_to_reach, markdown_report, summarize
from pseudocell.human.ingest import read_review

from conftest import make_review


def test_annotator_confirms_matches_rejects_the_rest_and_adds_misses(tmp_path, small_crops):
    folder = tmp_path / "review"
    make_review(folder, small_crops[0].images[0])   # proposals at +(10,10), (30,20), (50,40)
    gt = {"image_id": np.array(["img"] * 3, object),
          "y": np.array([11.0, 50.0, 100.0]), "x": np.array([10.0, 41.0, 100.0])}
    got = annotate_review(folder, gt, radius=3.0)
    # tile 1: (11,10) and (50,41) found, (30,20) wrong; tile 2 (64..127): (100,100) missed,
    # its three proposals wrong
    assert got == {"added": 1, "rejected": 4, "confirmed": 2, "tiles": 2, "clicks": 7}
    _, _, labels, ttab = read_review(folder)
    assert ttab["reviewed"].all()
    assert (ttab["tp"].tolist(), ttab["fp"].tolist(), ttab["fn"].tolist()) == \
        ([2, 0], [1, 3], [0, 1])
    added = labels["kind"].astype(str) == "human_added"
    assert labels["y"][added].tolist() == [100.0] and labels["x"][added].tolist() == [100.0]


def _result():
    def curve(f1s, clicks):
        return [{"clicks": c, "f1": f} for c, f in zip(clicks, f1s)]

    seeds = {
        "0": {"reference": {"f1": 0.80, "clicks": 100},
              "suggest": curve([0.70, 0.81, 0.85], [25, 40, 60]),
              "random_tiles": curve([0.70, 0.72, 0.75], [25, 35, 50]),
              "partial_random": curve([0.74, 0.78], [40, 60])},
        "1": {"reference": {"f1": 0.82, "clicks": 100},
              "suggest": curve([0.72, 0.78, 0.81], [25, 45, 70]),
              "random_tiles": curve([0.72, 0.74, 0.76], [25, 38, 52]),
              "partial_random": curve([0.75, 0.79], [45, 70])}}
    return {"seeds": [0, 1], "params": {"steps": 2}, "datasets": {"d": {"seeds": seeds}}}


def test_summary_finds_the_clicks_that_reach_the_reference():
    assert _clicks_to_reach([{"clicks": 10, "f1": 0.5}, {"clicks": 20, "f1": 0.9}], 0.8) == 20
    assert _clicks_to_reach([{"clicks": 10, "f1": 0.5}], 0.8) is None
    r = _result()
    s = summarize(r)["d"]
    assert s["suggest_clicks_ratio"] == [0.40, None]   # seed 1 never reaches 0.82
    assert s["target_met"] is False
    assert s["suggest"][1]["clicks"] == pytest.approx(42.5)
    assert s["suggest"][1]["f1"] == pytest.approx(0.795)
    # within 50 clicks (half the reference's): seed 0 at best 0.81 (+0.01), seed 1 0.78
    assert [g["points"] for g in s["half_clicks_gap"]] == [2, 2]
    assert [g["gap"] for g in s["half_clicks_gap"]] == pytest.approx([0.01, -0.04])
    r["summary"] = summarize(r)
    md = markdown_report(r)
    assert "| suggest | 25 → 0.710, 42 → 0.795, 65 → 0.830 |" in md
    assert "0.40, never" in md and "NOT met" in md
    assert "reference F1 (per seed): +0.010 (2 points), -0.040 (2 points)" in md
    r["datasets"]["d"]["seeds"]["1"]["reference"]["clicks"] = 40  # no point within 20
    assert summarize(r)["d"]["half_clicks_gap"][1] == {"gap": None, "points": 0}
