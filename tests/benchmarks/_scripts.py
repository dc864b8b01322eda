"""The developer benchmark scripts of ``benchmarks/`` (not part of the installed package)
are imported from there."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


def load_script(name: str):
    """The module of ``benchmarks/<name>.py`` (under the name ``benchmarks_<name>``)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
