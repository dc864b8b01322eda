"""The sharing benchmark's check: trials matched by their sampled values, per-round P/R/F1
and stage output checksums compared where both sweeps have them."""
from __future__ import annotations

from _scripts import load_script

compare = load_script("tune_share").compare

ROW = {"precision": 0.9, "recall": 0.8, "f1": 0.847}


def _trial(f1=0.847, digest="a", rounds=(0, 1)):
    return {"rounds": {r: {**ROW, "f1": f1} for r in rounds},
            "digests": {"0/train_detector/model": digest}}


def test_equal_trials_are_identical_even_when_one_sweep_stopped_a_trial_earlier():
    off = {(0.1,): _trial(), (0.2,): _trial(rounds=(0,))}
    on = {(0.1,): _trial(), (0.2,): _trial()}
    res = compare(off, on)
    assert res["identical"]
    assert [t["rounds_compared"] for t in res["trials"]] == [[0, 1], [0]]


def test_a_different_f1_output_or_missing_trial_is_reported():
    assert not compare({(0.1,): _trial()}, {(0.1,): _trial(f1=0.5)})["identical"]
    res = compare({(0.1,): _trial()}, {(0.1,): _trial(digest="b")})
    assert not res["identical"]
    assert res["trials"][0]["outputs_differing"] == ["0/train_detector/model"]
    assert not compare({(0.1,): _trial()}, {(0.3,): _trial()})["identical"]
