"""The tune benchmark's bookkeeping: the default config's validation F1 comes from its own
trial when the sweep ran it, and a tuned config equal to the default is not run twice."""
from __future__ import annotations

from _scripts import load_script

_tune = load_script("tune")
base_trial_f1, table = _tune.base_trial_f1, _tune.table

TRIALS = [{"trial_id": "a", "alpha": 0.05, "p": 4.0, "val_f1": 0.95, "status": "finished"},
          {"trial_id": "b", "alpha": 0.05, "p": 4.5, "val_f1": 0.97, "status": "finished"},
          {"trial_id": "c", "alpha": 0.2, "p": 4.0, "val_f1": 0.99, "status": "stopped early"}]


def test_the_base_trial_is_the_one_with_exactly_its_values_that_finished():
    assert base_trial_f1(TRIALS, {"alpha": 0.05, "p": 4.0}) == 0.95
    assert base_trial_f1(TRIALS, {"alpha": 0.2, "p": 4.0}) is None  # stopped early
    assert base_trial_f1(TRIALS, {"alpha": 0.1, "p": 4.0}) is None
    assert base_trial_f1(TRIALS, None) is None  # the space did not hold the base config


def test_table_marks_a_tuned_config_that_is_the_default():
    run = {"config": {"alpha": 0.05, "p": 4.0}, "test_precision": 0.9,
           "test_recall": 0.95, "test_f1": 0.924, "seconds": 300.0}
    res = {"trials": TRIALS, "tune_seconds": 1860.0, "best_validation_f1": 0.954,
           "default_validation_f1": 0.954, "space": ["alpha", "p"],
           "final": {"default": run, "tuned": {**run, "same_as_default": True}}}
    text = table(res)
    assert "3 trials (1 stopped early by ASHA) in 31.0 min" in text
    assert "| tuned (= default) | 0.05 | 4 | 0.900 | 0.950 | 0.924 | 5.0 |" in text
