"""Process-wide settings of glibc's malloc that keep a round's peak memory flat.

Two glibc defaults made a round's peak memory grow with the number of images:

* each thread that allocates concurrently gets its own malloc arena (up to 8 per core),
  and memory freed in one arena is not reused by the others;
* the size from which a block is mapped on its own (and unmapped when freed) follows the
  largest block freed so far, up to 32 MiB, so train_pu's per-batch tensors of a few MiB
  are carved from the heap, fragment it, and the high-water mark rises with every step.

Measured on the demo's 40 images ×4 (160 images, quick budgets): a round's peak 1105 MB
with glibc's defaults, 980 MB with ``MALLOC_ARENA_MAX=2``; train_pu's high-water mark
1050 MB with two arenas, 791 MB with blocks from 4 MiB mapped during train_pu
(:func:`mapped_from`). The arena limit set from inside the running process (``mallopt``)
changed nothing, so it must be in the environment when the process starts:
:func:`reexec_with_malloc_arena_limit` restarts the command line once with
:data:`MALLOC_ENV` (the CLI does this first thing); a local Ray cluster started
afterwards inherits it, and ``--ray-env MALLOC_ARENA_MAX`` forwards it to a remote one.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Iterator

__all__ = ["MALLOC_ARENAS", "MALLOC_ENV", "malloc_arena_env", "mapped_from",
           "reexec_with_malloc_arena_limit"]

#: Arenas a pseudocell process allows itself (``MALLOC_ARENA_MAX`` already set wins).
MALLOC_ARENAS = 2
#: What a pseudocell process starts with (see the module docstring).
MALLOC_ENV = {"MALLOC_ARENA_MAX": str(MALLOC_ARENAS)}
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
        raise ValueError(f"{OPT_OUT}={value!r}: give a number of malloc arenas "
                         f"(0 keeps glibc's defaults)") from None
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


def _is_pseudocell_command() -> bool:
    """Whether this process is the ``pseudocell`` command (its console script or
    ``python -m pseudocell``), not a program that called the CLI's entry point."""
    prog = os.path.basename(sys.argv[0]) if sys.argv else ""
    return prog == "pseudocell" or (prog == "__main__.py"
                                    and os.path.basename(os.path.dirname(sys.argv[0]))
                                    == "pseudocell")


def reexec_with_malloc_arena_limit() -> None:
    """Restart this process's command line (``sys.orig_argv``) with :data:`MALLOC_ENV`
    set, unless every variable is set already, the opt-out ``PSEUDOCELL_MALLOC_ARENAS=0``
    is given, the C library is not glibc, or this process is not the ``pseudocell``
    command (a notebook or test calling the entry point is not restarted). Call it
    before anything starts threads or writes output that must not appear twice; returns
    only when no restart is needed. A bad opt-out value exits with a message naming it.
    """
    try:
        env = malloc_arena_env()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if not env or not _is_pseudocell_command():
        return
    os.environ.update(env)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
#: glibc's dynamic mmap threshold climbs to this and its trim threshold to twice it; a
#: process left there runs torch as fast as glibc's defaults (a fixed 32 MiB without
#: the trim threshold made tiled prediction 1.3x slower).
_CEILING = 32 << 20


@contextlib.contextmanager
def mapped_from(nbytes: int) -> Iterator[None]:
    """Within the block, glibc maps every allocation of ``nbytes`` or more that the heap
    cannot serve from its free space on its own, and unmaps it when freed, so per-batch
    tensors cannot fragment the heap. Afterwards both thresholds are fixed at the values
    glibc's dynamic ones climb to (mmap 32 MiB, trim 64 MiB): once set, glibc no longer
    adjusts them. Does nothing where the C library is not glibc, with
    ``PSEUDOCELL_MALLOC_ARENAS=0``, or when ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` are set (the user's choice). Not reentrant.

    Scoped, not process-wide: with a fixed 4 MiB threshold for the whole process tiled
    prediction and U-Net training ran ~2x slower (every conv output mapped and zeroed
    anew), while PU training (small patches) did not slow down.
    """
    if _arenas() is None or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        yield
        return
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(_M_MMAP_THRESHOLD, int(nbytes))
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _CEILING)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _CEILING)
