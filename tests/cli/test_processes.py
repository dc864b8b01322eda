"""The CLI's child processes run in their own group, and the whole group is stopped."""
from __future__ import annotations

import subprocess
import sys

from pseudocell.cli.processes import _group_alive, run_group, stop_group

# a leader that ignores SIGTERM and has started a child of its own, then waits forever
STUBBORN = ("import signal, subprocess, sys\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "kid = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'])\n"
            "print(kid.pid, flush=True)\n"
            "signal.pause()\n")


def test_run_group_returns_the_exit_code():
    assert run_group([sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    assert run_group([sys.executable, "-c", "pass"]) == 0


def test_stop_group_ends_every_member_even_one_that_ignores_sigterm():
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    kid = int(proc.stdout.readline())  # the grandchild exists once this line is printed
    assert _group_alive(proc.pid)
    stop_group(proc, grace=1.0)
    assert proc.returncode is not None
    assert not _group_alive(proc.pid)
    try:
        stat = open(f"/proc/{kid}/stat").read()
        assert stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # at most a zombie
    except FileNotFoundError:
        pass
