"""Process settings: a pseudocell command restarts once with glibc's malloc arenas limited
(measured: a round's peak RSS grew with the data without it), unless the user chose."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from pseudocell.runtime import MALLOC_ARENAS, OPT_OUT

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the arena limit applies to glibc only")

#: prints how often it ran and the variable it ran with (the restart runs it twice)
PROBE = ("import os, sys; from pseudocell.runtime import reexec_with_malloc_arena_limit; "
         "sys.argv = ['pseudocell']; print('start', flush=True); "
         "reexec_with_malloc_arena_limit(); "
         "print(os.environ.get('MALLOC_ARENA_MAX'))")


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", OPT_OUT)}
    return subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True,
                          check=True, timeout=120)


def test_restarts_once_with_the_limit_and_keeps_output_written_before():
    out = _run([sys.executable, "-c", PROBE]).stdout.split()
    assert out == ["start", "start", str(MALLOC_ARENAS)]


def test_a_value_in_the_environment_or_the_opt_out_means_no_restart():
    assert _run([sys.executable, "-c", PROBE], MALLOC_ARENA_MAX="4").stdout.split() == [
        "start", "4"]
    assert _run([sys.executable, "-c", PROBE], **{OPT_OUT: "0"}).stdout.split() == [
        "start", "None"]


def test_a_program_calling_the_entry_point_is_not_restarted():
    probe = PROBE.replace("sys.argv = ['pseudocell']", "sys.argv = ['my_notebook']")
    assert _run([sys.executable, "-c", probe]).stdout.split() == ["start", "None"]


def test_a_bad_opt_out_value_is_named():
    with pytest.raises(subprocess.CalledProcessError) as e:
        _run([sys.executable, "-c", PROBE], **{OPT_OUT: "two"})
    assert OPT_OUT in e.value.stderr and "'two'" in e.value.stderr


def test_the_cli_entry_point_restarts_and_runs_the_command():
    from pseudocell import __version__

    probe = ("import sys; print('start', flush=True); sys.argv = ['pseudocell', '--version']; "
             "from pseudocell.cli import main; main()")
    out = _run([sys.executable, "-c", probe]).stdout.split()
    assert out[:2] == ["start", "start"] and __version__ in out[2:]
    done = _run([sys.executable, "-m", "pseudocell", "--version"])  # python -m pseudocell
    assert __version__ in done.stdout


HEAP_PROBE = """
import contextlib, sys
import numpy as np
from pseudocell.runtime import mapped_from

def in_heap(addr):
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
            return lo <= addr < hi
    return False

big = np.ones(20 << 20, np.uint8); del big  # glibc's threshold climbs to 20 MiB
with mapped_from(4 << 20) if sys.argv[1] == "1" else contextlib.nullcontext():
    blocks = [np.ones(8 << 20, np.uint8) for _ in range(3)]
    print(sum(in_heap(b.ctypes.data) for b in blocks))
"""


def test_mapped_from_maps_large_blocks_outside_the_heap_within_the_block():
    """What keeps train_pu's peak flat: within the block 8 MiB blocks are mappings of
    their own (unmapped when freed); with glibc's dynamic threshold (20 MiB after the
    first free) the heap grows to hold them."""
    assert int(_run([sys.executable, "-c", HEAP_PROBE, "0"]).stdout) >= 1
    assert int(_run([sys.executable, "-c", HEAP_PROBE, "1"]).stdout) == 0
