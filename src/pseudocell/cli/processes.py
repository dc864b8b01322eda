"""Child processes the CLI starts (the MLflow UI): each runs in its own process group,
and that whole group is stopped when the command ends, on Ctrl-C and on SIGTERM/SIGHUP;
nothing it started outlives the command."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["run_group", "stop_group"]

logger = logging.getLogger(__name__)


class _Signalled(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies waiting to be reaped by
    init do not count; without /proc, any member counts)."""
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover (not Linux)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def stop_group(proc: subprocess.Popen, *, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (its leader started it with
    ``start_new_session``), SIGKILL what is left after ``grace`` seconds, and return
    once no member of the group exists (bounded by another ``grace``)."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)  # members exit right after their leader
        if not _group_alive(pgid):
            break
    if _group_alive(pgid):  # pragma: no cover (unkillable: report, do not hang)
        logger.warning("process group %d still has members after SIGKILL", pgid)


def run_group(cmd: Sequence[str], *, env: dict | None = None) -> int:
    """Run ``cmd`` in a new process group until it exits, Ctrl-C, SIGTERM or SIGHUP;
    then stop its whole group. Returns its exit code (0 after Ctrl-C or a signal)."""
    def raise_signalled(signum, frame):
        raise _Signalled(signum)

    proc = subprocess.Popen(list(cmd), env=env, start_new_session=True)
    old = {s: signal.signal(s, raise_signalled) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return proc.wait()
    except (KeyboardInterrupt, _Signalled) as e:
        logger.info("stopping %s (%s)", cmd[0], type(e).__name__ if isinstance(
            e, KeyboardInterrupt) else e)
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        stop_group(proc)
