"""Ray Tune: named search spaces over config fields (:mod:`.spaces`) and the sweep runner
(:mod:`.sweep`), where every trial is a pseudocell run."""
from pseudocell.tune_spaces.spaces import (FUTURE_PARAMS, SPACES, check_space, describe,
                                           load_space, resolve, to_tune)

__all__ = ["SPACES", "FUTURE_PARAMS", "describe", "load_space", "check_space", "to_tune",
           "resolve"]
