"""Process settings: a pseudocell command restarts once with glibc's malloc arenas limited
(measured: a round's peak RSS grew with the data without it), unless the user chose."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from pseudocell.runtime import MALLOC_ARENAS, MALLOC_ENV, OPT_OUT

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the arena limit applies to glibc only")

#: prints how often it ran and the variable it ran with (the restart runs it twice)
PROBE = ("import os, sys; from pseudocell.runtime import reexec_with_malloc_arena_limit; "
         "print('start', flush=True); reexec_with_malloc_arena_limit(); "
         "print(os.environ.get('MALLOC_ARENA_MAX'), os.environ.get('MALLOC_MMAP_THRESHOLD_'))")
THRESHOLD = MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in (*MALLOC_ENV, OPT_OUT)}
    return subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True,
                          check=True, timeout=120)


def test_restarts_once_with_the_limit_and_keeps_output_written_before():
    out = _run([sys.executable, "-c", PROBE]).stdout.split()
    assert out == ["start", "start", str(MALLOC_ARENAS), THRESHOLD]


def test_values_in_the_environment_are_kept_and_the_opt_out_means_no_restart():
    assert _run([sys.executable, "-c", PROBE], MALLOC_ARENA_MAX="4").stdout.split() == [
        "start", "start", "4", THRESHOLD]
    assert _run([sys.executable, "-c", PROBE], MALLOC_ARENA_MAX="4",
                MALLOC_MMAP_THRESHOLD_="65536").stdout.split() == ["start", "4", "65536"]
    assert _run([sys.executable, "-c", PROBE], **{OPT_OUT: "0"}).stdout.split() == [
        "start", "None", "None"]


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
