"""Process-wide settings a pseudocell process needs before it starts: glibc's malloc arenas.

glibc gives each thread that allocates concurrently its own malloc arena (up to 8 per
core), and memory freed in one arena is not reused by the others; torch's worker threads
then grow the high-water mark of a stage with the size of the data until every arena is
full. Measured on the demo's 40 images ×4 (160 images, quick budgets): a round's peak RSS
was 1105 MB with glibc's default and 980 MB with ``MALLOC_ARENA_MAX=2`` in the
environment (×1: 875 and 896 MB). The same limit set from inside the running process
(``mallopt``) changed nothing (1109 MB), so the variable must be in the environment when
the process starts: :func:`reexec_with_malloc_arena_limit` restarts the command line once
with it set (the CLI does this first thing); a local Ray cluster started afterwards
inherits it, and ``--ray-env MALLOC_ARENA_MAX`` forwards it to a remote one.
"""
from __future__ import annotations

import os
import platform
import sys

__all__ = ["MALLOC_ARENAS", "MALLOC_ENV", "malloc_arena_env",
           "reexec_with_malloc_arena_limit"]

#: Arenas a pseudocell process allows itself (``MALLOC_ARENA_MAX`` already set wins).
MALLOC_ARENAS = 2
#: What a pseudocell process starts with. ``MALLOC_MMAP_THRESHOLD_`` fixes the size from
#: which glibc maps a block on its own (and unmaps it when freed) at 4 MiB; by default
#: that threshold follows the largest block freed so far (up to 32 MiB), so torch's
#: per-batch tensors of train_pu were carved from the heap, fragmented it, and the
#: high-water mark grew with the number of steps: a 160-image round's peak (quick
#: settings) 1050 MB by default, 787 / 817 / 896 MB with a threshold of 1 / 4 / 16 MiB.
MALLOC_ENV = {"MALLOC_ARENA_MAX": str(MALLOC_ARENAS), "MALLOC_MMAP_THRESHOLD_": str(4 << 20)}
#: Set to ``0`` to keep glibc's defaults (no restart).
OPT_OUT = "PSEUDOCELL_MALLOC_ARENAS"


def _arenas() -> int | None:
    """Arenas to ask for, or None where the setting does not apply."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    value = os.environ.get(OPT_OUT, str(MALLOC_ARENAS))
    try:
        n = int(value)
    except ValueError:
        raise SystemExit(f"{OPT_OUT}={value!r}: give a number of malloc arenas "
                         f"(0 keeps glibc's default)") from None
    return n if n > 0 else None


def malloc_arena_env() -> dict[str, str]:
    """The variables of :data:`MALLOC_ENV` the environment does not set already (a value
    the user set is kept), or ``{}`` where they do not apply (not glibc, or the opt-out
    ``PSEUDOCELL_MALLOC_ARENAS=0``)."""
    n = _arenas()
    if n is None:
        return {}
    want = {**MALLOC_ENV, "MALLOC_ARENA_MAX": str(n)}
    return {k: v for k, v in want.items() if k not in os.environ}


def reexec_with_malloc_arena_limit() -> None:
    """Restart this process's command line (``sys.orig_argv``) with :data:`MALLOC_ENV`
    set, unless every variable is set already, the opt-out ``PSEUDOCELL_MALLOC_ARENAS=0``
    is given or the C library is not glibc. Call it before anything starts threads or writes output
    that must not appear twice; returns only when no restart is needed."""
    env = malloc_arena_env()
    if not env:
        return
    os.environ.update(env)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
