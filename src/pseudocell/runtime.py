"""Process-wide settings a pseudocell process applies to itself at start.

:func:`limit_malloc_arenas`: glibc gives each thread that allocates concurrently its own
malloc arena (up to 8 per core), and the memory freed in one is not reused by the
others; torch's worker threads then grow the high-water mark of a stage with the data's
size until every arena is full. Measured on the demo's 40 images ×4 (160 images, quick
budgets): the round's peak RSS was 1105 MB with glibc's default and 980 MB with two
arenas (×1: 875 and 896 MB).
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["limit_malloc_arenas", "MALLOC_ARENAS"]

logger = logging.getLogger(__name__)

#: Arenas a pseudocell process allows itself (``MALLOC_ARENA_MAX`` in the environment wins).
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Allow at most ``n`` malloc arenas in this process (glibc on Linux); call it before
    threads start allocating (later calls may not bound arenas already made). Does
    nothing when ``MALLOC_ARENA_MAX`` is set (the user's choice) or elsewhere. Returns
    whether the limit was set."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_ARENA_MAX, int(n)))
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    logger.debug("malloc arenas limited to %d: %s", n, ok)
    return ok
