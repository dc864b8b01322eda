"""Process settings: the malloc arena limit is applied on Linux unless the user set one."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = "from pseudocell.runtime import limit_malloc_arenas; print(limit_malloc_arenas())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_malloc_arena_limit_is_set_unless_the_environment_names_one(monkeypatch):
    env = {k: v for k, v in __import__("os").environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "True"
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, "MALLOC_ARENA_MAX": "4"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
