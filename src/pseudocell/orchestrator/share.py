"""Stage outputs shared between runs by content: what lets a sweep's trials compute round 0
once.

A stage's *share key* is the sha256 of what its outputs are a function of: the stage
(name and function), the round, its seed, the config over the fields it reads
(:meth:`~pseudocell.config.Config.stage_hash_without` its declared
:attr:`~pseudocell.stages.base.StageSpec.ignores`) and the *content* of each input (the
checksum its producer recorded, not the producer's manifest hash, which holds the
producer's config hash). Two trials of a sweep over the selection settings (``alpha``,
``beta``, ``p``, ``lam``) get equal keys for everything before round 0's ``rank``.

A :class:`StageCache` is a local directory of entries::

    <dir>/<key>/files/...        the stage's output files (relative to its stage folder)
    <dir>/<key>/entry.json       what the run's own manifest needs (outputs + checksums,
                                 metrics, seed, seconds); written before the rename
    <dir>/<key>.lock             held while one run computes the stage
    <dir>/<key>.tmp-<uuid>/      an entry being published (renamed to <key> when whole)

An entry is published whole by one ``os.rename`` of a finished temporary folder; losing
that race to another publisher only discards the copy. A run that finds an entry
hard-links its files into its own stage folder (copies where links are impossible),
checks every checksum and writes its own manifest, which records ``shared_from``; an
entry whose files do not match is moved aside and the stage computed again.

The lock only saves work; correctness never depends on it (entries are content-addressed,
deterministic and published atomically). It is a file created with ``O_EXCL`` holding the
holder's host, pid and a token; a heartbeat thread refreshes its mtime. A waiter takes it
over when the mtime is older than ``stale_s`` or when its holder was a process on this host
that no longer exists (a killed trial, so that a resumed sweep does not wait).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pseudocell.storage.layout import SCHEMA_VERSION

__all__ = ["StageCache", "share_key", "link_tree"]

logger = logging.getLogger(__name__)

ENTRY = "entry.json"
FILES = "files"


def share_key(*, stage: str, fn: str, rnd: int, seed: int, config: str,
              inputs: dict[str, str]) -> str:
    """sha256 naming one stage computation: ``config`` is the config hash over the fields
    the stage reads, ``inputs`` input name → content checksum.

    >>> a = share_key(stage="s", fn="m.f", rnd=0, seed=1, config="c", inputs={"x": "1"})
    >>> a == share_key(stage="s", fn="m.f", rnd=0, seed=1, config="c", inputs={"x": "1"})
    True
    >>> a == share_key(stage="s", fn="m.f", rnd=0, seed=1, config="c", inputs={"x": "2"})
    False
    """
    payload = {"stage": stage, "fn": fn, "round": int(rnd), "seed": int(seed),
               "config": config, "inputs": dict(sorted(inputs.items())),
               "schema_version": SCHEMA_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def link_tree(src: str | Path, dst: str | Path, *, skip: tuple[str, ...] = ()) -> None:
    """Copy the tree ``src`` to ``dst`` (which must not exist) by hard links, copying the
    files that cannot be linked (another file system); names in ``skip`` are left out."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link,
                    ignore=shutil.ignore_patterns(*skip) if skip else None)


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


class StageCache:
    """Shared stage outputs under the local directory ``root`` (see the module docstring).

    Parameters
    ----------
    root : str or Path
        Local directory (created on first use); a sweep's is ``<sweep>/shared``.
    stale_s : float, default=120
        A lock whose mtime is older than this is taken over (its holder died elsewhere).
    heartbeat_s : float, default=10
        How often a holder refreshes its lock's mtime.
    poll_s : float, default=1
        How often a waiter looks at a held lock again.
    on_wait : callable or None
        Called with the key each time a run waits for another's lock (tests use it to
        know that a run is waiting, without timing).

    Every method runs in the calling process; :meth:`get_or_run` may block while another
    process holds the key's lock.
    """

    def __init__(self, root: str | Path, *, stale_s: float = 120.0, heartbeat_s: float = 10.0,
                 poll_s: float = 1.0, on_wait: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.stale_s, self.heartbeat_s, self.poll_s = stale_s, heartbeat_s, poll_s
        self.on_wait = on_wait

    @classmethod
    def at(cls, uri: str, **kw: Any) -> "StageCache | None":
        """A cache at ``uri``, or None (with a log line) where it is no local path: the
        lock and the atomic publish need a POSIX file system."""
        if "://" in str(uri) and not str(uri).startswith("file://"):
            logger.info("stage sharing is off: %s is not a local directory", uri)
            return None
        return cls(str(uri).removeprefix("file://"), **kw)

    # -- entries ------------------------------------------------------------------------
    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> dict | None:
        """The entry of ``key`` when it is published (its ``entry.json`` readable)."""
        try:
            entry = json.loads((self.entry_dir(key) / ENTRY).read_text())
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and "outputs" in entry else None

    def publish(self, key: str, files: str | Path, entry: dict) -> bool:
        """Publish the stage folder ``files`` and ``entry`` as ``key``; False when
        another run published it first (or the copy failed: sharing is an
        optimisation, never a reason for a run to fail)."""
        tmp = self.root / f"{key}.tmp-{uuid.uuid4().hex}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            link_tree(files, tmp / FILES, skip=("_manifest.json",))  # the run's own
            (tmp / ENTRY).write_text(json.dumps(entry, indent=1, sort_keys=True, default=str))
            try:
                os.rename(tmp, self.entry_dir(key))
            except OSError:
                if self.read(key) is not None or not self.entry_dir(key).exists():
                    raise
                self.discard(key)  # a folder no publisher finished (copied in by hand?)
                os.rename(tmp, self.entry_dir(key))
            return True
        except OSError as e:  # lost the race (the entry exists) or could not copy
            if not self.entry_dir(key).exists():
                logger.warning("could not share stage outputs as %s: %s", key[:12], e)
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def discard(self, key: str) -> None:
        """Move a bad entry aside (one rename: no run ever sees half of it), then delete."""
        bad = self.root / f"{key}.bad-{uuid.uuid4().hex}"
        try:
            os.rename(self.entry_dir(key), bad)
        except OSError:
            return
        logger.warning("shared entry %s is incomplete or does not match its checksums; "
                       "discarded", key[:12])
        shutil.rmtree(bad, ignore_errors=True)

    # -- locks --------------------------------------------------------------------------
    def lock_path(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    def try_lock(self, key: str) -> dict | None:
        """Take the lock of ``key``; its holder record, or None when another holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        me = _me()
        try:
            fd = os.open(self.lock_path(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        return me

    def _holder(self, key: str) -> tuple[dict | None, float] | None:
        """(holder record or None if unreadable, mtime) of the lock; None if no lock."""
        path = self.lock_path(key)
        try:
            mtime = path.stat().st_mtime
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text), mtime
        except ValueError:  # being written, or torn by a crash: judged by its mtime
            return None, mtime

    def is_stale(self, holder: dict | None, mtime: float) -> bool:
        if time.time() - mtime > self.stale_s:
            return True
        return (holder is not None and holder.get("host") == socket.gethostname()
                and holder.get("pid") != os.getpid() and _pid_gone(int(holder.get("pid", 0))))

    def break_if_stale(self, key: str) -> bool:
        """Remove the lock of ``key`` if it is stale; True when it was (or is gone)."""
        seen = self._holder(key)
        if seen is None:
            return True
        holder, mtime = seen
        if not self.is_stale(holder, mtime):
            return False
        aside = self.root / f"{key}.lock.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.lock_path(key), aside)
        except FileNotFoundError:
            return True  # another waiter broke it
        try:
            taken = json.loads(aside.read_text())
        except (OSError, ValueError):
            taken = None
        if holder is not None and taken != holder:
            # a new holder took the lock between our look and the rename: give it back
            # (at worst two runs compute the same stage; the publish keeps one copy)
            try:
                os.rename(aside, self.lock_path(key))
            except OSError:
                aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        logger.warning("took over the stale lock of shared stage %s (holder %s)", key[:12],
                       holder)
        return True

    def release(self, key: str, me: dict) -> None:
        seen = self._holder(key)
        if seen is not None and seen[0] == me:
            self.lock_path(key).unlink(missing_ok=True)

    @contextmanager
    def _heartbeat(self, key: str, me: dict) -> Iterator[None]:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                seen = self._holder(key)
                if seen is None or seen[0] != me:
                    return  # taken over: nothing of ours to keep alive
                try:
                    os.utime(self.lock_path(key))
                except OSError:
                    return

        t = threading.Thread(target=beat, name=f"share-heartbeat-{key[:8]}", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()

    # -- the protocol -------------------------------------------------------------------
    def get_or_run(self, key: str, use: Callable[[Path, dict], bool],
                   compute: Callable[[], tuple[str | Path, dict] | None]) -> str:
        """Use the published entry of ``key``, or compute it once among all runs.

        ``use(entry_dir, entry)`` puts a published entry into the run and returns False
        when its files do not match (the entry is then discarded and computed again).
        ``compute()`` runs the stage (under the lock, with its heartbeat) and returns
        ``(folder, entry)`` to publish, or None to publish nothing. Returns ``"shared"``
        or ``"ran"``. While another run holds the lock this waits for it (``poll_s``,
        ``on_wait``), taking the lock over once it is stale.
        """
        bad = False
        while True:
            entry = None if bad else self.read(key)
            if entry is not None:
                if use(self.entry_dir(key), entry):
                    return "shared"
                self.discard(key)
                bad = True  # compute it now rather than trust another copy
                continue
            me = self.try_lock(key)
            if me is None:
                if not self.break_if_stale(key):
                    if self.on_wait is not None:
                        self.on_wait(key)
                    time.sleep(self.poll_s)
                continue
            try:
                if not bad and self.read(key) is not None:
                    continue  # published while we took the lock (released below)
                with self._heartbeat(key, me):
                    made = compute()
                if made is not None:
                    self.publish(key, *made)
                return "ran"
            finally:
                self.release(key, me)
