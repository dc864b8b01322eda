"""Property-based tests of the config reader: any TOML bytes either give exactly the
config they denote or raise :class:`~pseudocell.errors.InvalidConfigError`, never anything
else; every valid config survives ``dump_toml`` → ``load_config`` unchanged."""
from __future__ import annotations

import math
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pseudocell.config import MAX_SEED, PRECISIONS, SOURCE_TRAINING, Config, dump_toml, load_config
from pseudocell.errors import InvalidConfigError

SETTINGS = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
FIELDS = {f.name: str(f.type) for f in fields(Config)}


@pytest.fixture(scope="module")
def toml_path(tmp_path_factory):
    return tmp_path_factory.mktemp("config") / "c.toml"


# -- a small TOML writer for the values hypothesis draws -----------------------------------

def _str(s: str) -> str:
    return '"' + "".join(c if c not in '"\\' and 0x20 <= ord(c) != 0x7F
                         else f"\\u{ord(c):04x}" for c in s) + '"'


def _val(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_str(k)} = {_val(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def _toml(d: dict, table: bool) -> str:
    body = "".join(f"{_str(k)} = {_val(v)}\n" for k, v in d.items())
    return ("[pseudocell]\n" + body) if table else body


# -- strategies ------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
toml_ints = st.integers(-(2**63), 2**63 - 1)
scalars = st.one_of(st.booleans(), toml_ints, st.floats(), text)
values = st.one_of(scalars, st.lists(scalars, max_size=4),
                   st.dictionaries(text, scalars, max_size=2))
keys = st.one_of(st.sampled_from(sorted(FIELDS)), text)


def _valid_value(name: str, t: str):
    """A strategy of values of field ``name`` that Config accepts on their own."""
    by_name = {
        "mode": st.just("partial"), "peak_mode": st.sampled_from(["absolute", "reference"]),
        "neg_ranker": st.sampled_from(["flip", "provisional"]), "pu_agree": st.booleans(),
        "pu_prior_estimate": st.sampled_from(["elkan-noto", "reference"]),
        "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:3"]),
        "seed": st.integers(0, MAX_SEED), "rounds": st.integers(0, 50),
        "patch_size": st.integers(1, 40).map(lambda k: 2 * k + 1),
        "unet_widths": st.lists(st.integers(1, 512), min_size=2, max_size=4),
        "extra_radii": st.lists(st.floats(0.5, 100), max_size=3),
        "pu_prior": st.one_of(st.none(), st.floats(0.01, 0.99)),
        "num_threads": st.one_of(st.none(), st.integers(1, 64)),
        "alpha": st.floats(0.01, 0.45), "beta": st.floats(0.01, 0.45),
        "provisional_top": st.floats(0.01, 0.99), "neg_peak_quantile": st.floats(0.01, 1.0),
        "lam": st.floats(0, 10), "pu_weight_decay": st.floats(0, 1),
        "collapse_ratio": st.floats(0, 1),
        "cell_diameter": st.one_of(st.none(), st.floats(2, 500)),
        "peak_threshold": st.one_of(st.none(), st.floats(1e-3, 2)),
        "background_ratio": st.floats(0, 10), "background_level": st.floats(0.01, 1.0),
        "peak_recall": st.floats(0.01, 1.0), "unlabeled_ratio": st.floats(0.01, 1.0),
        "psm_objective": st.sampled_from(["contrastive", "invariance"]),
        "polarity": st.sampled_from(["auto", "bright", "dark"]),
        "kmeans_k": st.integers(2, 8), "seed_fraction": st.floats(0.01, 1.0),
        "fusion_beta": st.floats(0, 100), "psm_crop": st.integers(16, 512),
        "source_training": st.sampled_from(SOURCE_TRAINING),
        "target_diameter": st.one_of(st.none(), st.floats(2, 500)),
        "grl_lambda": st.floats(0, 100), "grl_level": st.integers(-2, 1),
        "adapt_schedule": st.lists(st.floats(0.01, 1.0), min_size=1, max_size=4,
                                   unique=True).map(sorted),
        "uncertainty": st.just("tta"), "mc_passes": st.integers(1, 8),
        "detector_dropout": st.floats(0, 0.9), "adapt_min_confidence": st.floats(0, 10),
        "adapt_negatives": st.floats(0, 10), "precision": st.sampled_from(PRECISIONS),
        "neg_cap": st.one_of(st.none(), st.floats(0.01, 1.0)),
        "peak_rank_weight": st.one_of(st.none(), st.floats(0.0, 1.0)),
        "detector_head_init": st.sampled_from([None, "zero"]),
        "detector_warm_start": st.sampled_from([None, False, True]),
    }
    if name in by_name:
        return by_name[name]
    if t.startswith("float"):
        return st.one_of(st.floats(1e-6, 1e3), st.integers(1, 1000))
    return st.integers(1, 1000)


@st.composite
def valid_dicts(draw):
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=12))
    d = {n: draw(_valid_value(n, FIELDS[n])) for n in names}
    if "detector_crop" in d:  # a multiple of 2**(levels-1)
        levels = len(d.get("unet_widths", Config.unet_widths))
        d["detector_crop"] = 2 ** (levels - 1) * (1 + d["detector_crop"] % 32)
    if d.get("neg_cap") is not None:  # needs a band of candidates below the threshold
        d["unlabeled_ratio"] = min(d.get("unlabeled_ratio", 0.5), 0.99)
        if d.get("peak_mode") == "reference" and d.get("peak_threshold") is None:
            d["peak_threshold"] = 0.3
    return {k: v for k, v in d.items() if v is not None}


# -- properties -----------------------------------------------------------------------------

@SETTINGS
@given(valid_dicts(), st.booleans())
def test_valid_toml_gives_exactly_its_config(toml_path, d, table):
    toml_path.write_text(_toml(d, table))
    cfg = load_config(toml_path)
    assert cfg == Config(**d)
    got = cfg.to_dict()
    for k, v in d.items():
        assert got[k] == v, k  # ints given for float fields compare equal
    again = toml_path.with_name("again.toml")
    again.write_text(dump_toml(cfg))
    assert load_config(again) == cfg


@SETTINGS
@given(st.dictionaries(keys, values, max_size=6), st.booleans())
def test_any_toml_table_gives_its_config_or_a_typed_error(toml_path, d, table):
    toml_path.write_text(_toml(d, table))
    try:
        cfg = load_config(toml_path)
    except InvalidConfigError as e:
        assert "\n" not in str(e) or "TOML" in str(e)
        return
    # accepted: every key is a field, and the config holds exactly the values written
    # (a lone inline table named pseudocell is that table)
    meant = d["pseudocell"] if not table and list(d) == ["pseudocell"] and \
        isinstance(d["pseudocell"], dict) else d
    assert set(meant) <= set(FIELDS)
    assert cfg == Config(**meant)
    assert all(math.isfinite(v) for v in cfg.to_dict().values() if isinstance(v, float))
    again = toml_path.with_name("again.toml")
    again.write_text(dump_toml(cfg))
    assert load_config(again) == cfg


tomlish = st.lists(st.sampled_from(["alpha", "seed", "[pseudocell]", "[other]", "=", " = ",
                                    "0.1", "-1", "1e999", "inf", "nan", "\"cuda\"", "[", "]",
                                    "{", "}", ",", "\n", "\n", "#", "true", "'x'", "\ufeff",
                                    "\x00", "é", "4294967296", "unet_widths", "[4, 8]"]),
                   max_size=30).map("".join)


@SETTINGS
@given(st.one_of(st.binary(max_size=200), tomlish.map(str.encode)))
def test_any_bytes_give_a_config_or_a_typed_error(toml_path, data):
    toml_path.write_bytes(data)
    try:
        cfg = load_config(toml_path)
    except InvalidConfigError:
        return
    assert isinstance(cfg, Config)
    assert Config.from_dict(cfg.to_dict()) == cfg


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), st.integers(0, 3), min_size=1,
                       max_size=3),
       st.dictionaries(st.sampled_from(sorted(FIELDS)), st.integers(0, 3), max_size=3))
def test_keys_outside_the_pseudocell_table_are_refused_by_name(toml_path, top, inside):
    toml_path.write_text(_toml(top, False) + _toml(inside, True))
    with pytest.raises(InvalidConfigError, match="outside its \\[pseudocell\\] table") as e:
        load_config(toml_path)
    for k in top:
        assert repr(k) in str(e.value)


@SETTINGS
@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SEED + 1)))
def test_seed_outside_32_bits_is_a_config_error(seed):
    with pytest.raises(InvalidConfigError, match="'seed' must be an integer in"):
        Config(seed=seed)


def test_precision_enters_the_hash_only_when_not_float32():
    """Runs made before ``precision`` existed keep their hash (and resume): the default
    config's hash is the one it had before the field (pinned), bfloat16 gets another."""
    assert Config().config_hash == \
        "dc1367f1f90ead12de36ae3a4880aaad2a586be342032e19b968b6c156d414b3"
    assert Config(precision="bfloat16").config_hash != Config().config_hash
    # a stage that runs no prediction ignores it: its outputs are shared by both
    ignored = frozenset({"precision", "alpha"})
    assert Config(precision="bfloat16").stage_hash_without(ignored) == \
        Config().stage_hash_without(ignored)
