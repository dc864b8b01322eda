"""Named Ray Tune search spaces over :class:`~pseudocell.config.Config` fields.

A space is a plain ``{config name: distribution}`` dict built by :func:`build`. Spaces
are described as data first (:data:`SPACES`, or a TOML file, see :func:`load_space`)
so that they can be validated, written into the sweep directory and logged to MLflow
without Ray; :func:`to_tune` turns a description into Tune distributions.

>>> sorted(SPACES["default"])
['alpha', 'beta', 'lam', 'p']
>>> describe("default")["alpha"]
{'type': 'loguniform', 'low': 0.01, 'high': 0.3}
"""
from __future__ import annotations

import copy
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from pseudocell.config import MODE_FIELDS, Config
from pseudocell.errors import InvalidConfigError

__all__ = ["SPACES", "FUTURE_PARAMS", "describe", "load_space", "check_space", "to_tune",
           "resolve"]

#: Distribution types and the keys each needs.
_TYPES = {"uniform": ("low", "high"), "loguniform": ("low", "high"),
          "randint": ("low", "high"), "choice": ("values",)}

#: Parameters of parts pseudocell does not have yet (PSM's Voronoi-supervised head); a
#: space naming them is refused rather than silently ignored.
FUTURE_PARAMS = {"voronoi_lam": "the Voronoi-supervised head of label-free PSM"}

_DEFAULT = {
    # selection rates of positive / negative pseudo-labels per round
    "alpha": {"type": "loguniform", "low": 0.01, "high": 0.3},
    "beta": {"type": "loguniform", "low": 0.01, "high": 0.3},
    # P-classification exponent and ranker L2 weight (reference p=4, lam=0.1)
    "p": {"type": "uniform", "low": 1.0, "high": 16.0},
    "lam": {"type": "loguniform", "low": 0.01, "high": 1.0},
}

_WIDE = {
    **_DEFAULT,
    "rounds": {"type": "randint", "low": 1, "high": 6},  # 1..5 (high is exclusive)
    "sigma": {"type": "uniform", "low": 3.0, "high": 9.0},
    "mask_radius": {"type": "uniform", "low": 6.0, "high": 20.0},
    "peak_threshold": {"type": "uniform", "low": 0.1, "high": 0.6},
}

_LABEL_FREE = {
    **_DEFAULT,
    # the raw image's weight in the fused image, the clusters, the confidence cut
    "fusion_beta": {"type": "uniform", "low": 0.5, "high": 6.0},
    "kmeans_k": {"type": "choice", "values": [2, 3, 4]},
    "seed_fraction": {"type": "uniform", "low": 0.2, "high": 0.9},
}

_ADAPT = {
    # the curriculum, the passes per peak, the confidence cut, the number of rounds
    "adapt_schedule": {"type": "choice", "values": [[0.2, 0.4, 0.6], [0.3, 0.6, 0.9],
                                                    [0.1, 0.3, 0.5], [0.4, 0.7, 1.0]]},
    "mc_passes": {"type": "choice", "values": [2, 4, 8]},
    "adapt_min_confidence": {"type": "uniform", "low": 0.0, "high": 0.6},
    "rounds": {"type": "randint", "low": 1, "high": 5},  # 1..4
}
_ADAPT_DANN = {
    # the DANN baseline (a base config with source_training = "dann"): the reversal
    # weight and the level the domain classifier reads
    "grl_lambda": {"type": "loguniform", "low": 0.03, "high": 3.0},
    "grl_level": {"type": "choice", "values": [1, 2, -1]},
}

#: Built-in spaces (``default``: the selection and ranker settings; ``wide``: also the
#: number of rounds and the detector's target, mask and peak settings; ``label-free``:
#: the selection settings and the PSM seed settings, for a config with that mode;
#: ``adapt``: the curriculum, passes, confidence cut and rounds of the adapt modes;
#: ``adapt-dann``: the gradient-reversal weight and level of their DANN training).
SPACES: dict[str, dict[str, dict]] = {"default": _DEFAULT, "wide": _WIDE,
                                      "label-free": _LABEL_FREE, "adapt": _ADAPT,
                                      "adapt-dann": _ADAPT_DANN}


def describe(name: str) -> dict[str, dict]:
    """A copy of built-in space ``name``."""
    if name not in SPACES:
        raise InvalidConfigError(f"search space {name!r}: use one of {', '.join(SPACES)} or a "
                                 "TOML file")
    return copy.deepcopy(SPACES[name])


def load_space(path: str | Path) -> dict[str, dict]:
    """Read a space from TOML: one table per parameter, e.g.::

        [alpha]
        type = "loguniform"
        low = 0.01
        high = 0.3

        [rounds]
        type = "choice"
        values = [1, 2, 3]
    """
    try:
        with open(path, "rb") as f:
            space = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidConfigError(f"search space file {str(path)!r}: {e}") from e
    return check_space(space, source=str(path))


def check_space(space: dict[str, Any], source: str = "search space", *,
                mode: str | None = None) -> dict[str, dict]:
    """Validate a space description; every problem is named in one error. With ``mode``
    (the base config's), a setting only another mode reads is refused too (it would be
    searched and change nothing)."""
    types = {f.name: str(f.type) for f in fields(Config)}
    names = set(types)
    problems = []
    if not space:
        problems.append("it is empty")
    for key, spec in space.items():
        if key in FUTURE_PARAMS:
            problems.append(f"{key!r} belongs to {FUTURE_PARAMS[key]}, which pseudocell does "
                            "not have yet; remove it")
            continue
        if key not in names:
            problems.append(f"{key!r} is not a config field")
            continue
        owners = [m for m, f in MODE_FIELDS.items() if key in f]
        if mode is not None and owners and mode not in owners:
            which = " or ".join(repr(m) for m in owners)
            problems.append(f"{key!r} is a setting of mode {which} and the base config's "
                            f"mode is {mode!r}; set mode = {owners[0]!r} in --config or "
                            "remove it")
            continue
        if key in ("device", "num_threads", "seed", "precision"):
            problems.append(f"{key!r} is not a hyper-parameter to search")
            continue
        if not isinstance(spec, dict) or spec.get("type") not in _TYPES:
            problems.append(f"{key!r} needs type = one of {', '.join(_TYPES)}")
            continue
        missing = [k for k in _TYPES[spec["type"]] if k not in spec]
        if missing:
            problems.append(f"{key!r} ({spec['type']}) needs {', '.join(missing)}")
            continue
        if types[key] == "int" and spec["type"] not in ("randint", "choice"):
            problems.append(f"{key!r} is an integer: use randint or choice")
            continue
        if spec["type"] == "choice":
            if not isinstance(spec["values"], list) or not spec["values"]:
                problems.append(f"{key!r}: values must be a non-empty list")
        elif not spec["low"] < spec["high"]:
            problems.append(f"{key!r}: low must be below high")
        elif spec["type"] == "loguniform" and spec["low"] <= 0:
            problems.append(f"{key!r}: loguniform needs low > 0")
    if problems:
        raise InvalidConfigError(f"{source}: " + "; ".join(problems))
    # every value the space can produce must make a valid config
    base = Config()
    for key, spec in space.items():
        for v in (spec["values"] if spec["type"] == "choice"
                  else [spec["low"], spec["high"] - (1 if spec["type"] == "randint" else 0)]):
            try:
                base.replace(**{key: v})
            except InvalidConfigError as e:
                raise InvalidConfigError(f"{source}: {key}={v!r} is not a valid setting: "
                                         f"{e}") from e
    return space


def resolve(space: str | Path) -> dict[str, dict]:
    """A built-in space by name, or a TOML file by path."""
    if str(space) in SPACES:
        return describe(str(space))
    if Path(space).suffix == ".toml" or Path(space).exists():
        return load_space(space)
    raise InvalidConfigError(f"--space {str(space)!r}: use one of {', '.join(SPACES)} or a "
                             "TOML file")


def to_tune(space: dict[str, dict]) -> dict[str, Any]:
    """Tune distributions (``ray.tune.loguniform`` ...) of a space description."""
    from ray import tune

    out = {}
    for key, spec in space.items():
        t = spec["type"]
        out[key] = (tune.choice(spec["values"]) if t == "choice"
                    else getattr(tune, t)(spec["low"], spec["high"]))
    return out
