"""Search spaces: built-ins, TOML files, and the checks that name every bad entry."""
from __future__ import annotations

import pytest

from pseudocell.config import Config
from pseudocell.errors import InvalidConfigError
from pseudocell.tune_spaces import SPACES, check_space, describe, load_space, resolve


def test_builtin_spaces_use_config_names_and_make_valid_configs():
    assert set(SPACES["default"]) == {"alpha", "beta", "p", "lam"}
    assert set(SPACES["wide"]) == {"alpha", "beta", "p", "lam", "rounds", "sigma",
                                   "mask_radius", "peak_threshold"}
    for name in SPACES:
        assert check_space(describe(name)) == SPACES[name]
    assert describe("wide")["rounds"] == {"type": "randint", "low": 1, "high": 6}  # 1..5
    describe("default")["alpha"]["low"] = 99  # a copy: the built-in is unchanged
    assert SPACES["default"]["alpha"]["low"] == 0.01


def test_toml_space_round_trip(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[alpha]\ntype = "loguniform"\nlow = 0.02\nhigh = 0.2\n'
                 '[rounds]\ntype = "choice"\nvalues = [1, 2]\n')
    assert load_space(p) == {"alpha": {"type": "loguniform", "low": 0.02, "high": 0.2},
                             "rounds": {"type": "choice", "values": [1, 2]}}
    assert resolve(str(p)) == load_space(p)
    assert resolve("wide") == SPACES["wide"]


def test_every_problem_is_named_in_one_error():
    bad = {"alhpa": {"type": "uniform", "low": 0, "high": 1},
           "voronoi_lam": {"type": "uniform", "low": 0.1, "high": 1},
           "rounds": {"type": "uniform", "low": 1, "high": 3},
           "lam": {"type": "loguniform", "low": 0.0, "high": 1.0},
           "p": {"type": "normal"},
           "beta": {"type": "uniform", "low": 0.3, "high": 0.1},
           "device": {"type": "choice", "values": ["cpu"]},
           "precision": {"type": "choice", "values": ["float32", "bfloat16"]}}
    with pytest.raises(InvalidConfigError) as e:
        check_space(bad)
    msg = str(e.value)
    for part in ("'alhpa' is not a config field", "'voronoi_lam' belongs to the Voronoi",
                 "'rounds' is an integer", "loguniform needs low > 0", "'p' needs type",
                 "'beta': low must be below high", "'device' is not a hyper-parameter",
                 "'precision' is not a hyper-parameter"):
        assert part in msg, part


def test_values_outside_the_config_range_are_refused():
    with pytest.raises(InvalidConfigError, match="alpha=1.5"):
        check_space({"alpha": {"type": "uniform", "low": 0.1, "high": 1.5}})
    with pytest.raises(InvalidConfigError, match="--space 'nope'"):
        resolve("nope")


def test_to_tune_builds_tune_domains():
    from ray import tune
    from pseudocell.tune_spaces import to_tune

    space = to_tune({**describe("default"), "rounds": {"type": "choice", "values": [1, 2]}})
    assert isinstance(space["alpha"], tune.search.sample.Float)
    assert space["rounds"].categories == [1, 2]
    cfg = Config().replace(alpha=space["alpha"].sample(), rounds=space["rounds"].sample())
    assert 0.01 <= cfg.alpha <= 0.3 and cfg.rounds in (1, 2)
