"""One writer per cell and stage: a POSIX (``fcntl``) lock file in the cell holding pid and host.

``<cell>/.<stage>.lock`` is locked with ``fcntl.lockf`` for as long as a stage writes the cell,
and holds ``{"pid", "host", "stage", "since_utc"}`` of its holder. A second writer of the same
cell and stage is refused with one line naming the holder, or waits (``run.wait_for_lock``).

The kernel drops the lock when its holder dies, so a killed run never blocks the next one.
A lock that is still held although its recorded holder is gone (same host, pid not running:
e.g. an NFS server that has not yet noticed a crashed client) is taken over by unlinking the
lock file and locking a fresh one.

Shared disks: ``lockf`` locks are POSIX byte-range locks, which NFSv3 (through lockd/statd) and
NFSv4 (in-protocol) hold on the server, so two nodes of a SLURM cluster exclude each other.
This assumes the cluster's NFS mounts have locking enabled (not ``nolock``/``local_lock``);
Lustre and GPFS/Spectrum Scale need ``flock``-consistent mounts (Lustre: ``-o flock``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchforge.errors import BenchforgeError
from benchforge.rundir import utc_now

POLL_S = 0.5  # how often a waiting writer retries


class CellLocked(BenchforgeError):
    """Another live process holds the cell's lock for this stage."""


def lock_path(cell: Path, stage: str) -> Path:
    """The lock file of ``stage`` on the cell dir ``cell`` (``.<stage>.lock``)."""
    return cell / f".{stage}.lock"


def read_holder(path: Path) -> dict[str, Any] | None:
    """The ``{"pid", "host", "stage", "since_utc"}`` written by the lock's holder, if any."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_gone(holder: dict[str, Any] | None) -> bool:
    """True when the recorded holder is a process of this host that no longer runs."""
    if not holder or holder.get("host") != socket.gethostname():
        return False
    try:
        return not _pid_alive(int(holder["pid"]))
    except (KeyError, TypeError, ValueError):
        return False


def describe(holder: dict[str, Any] | None) -> str:
    """Who holds a lock, in words (pid, host, since when), for the one-line refusal."""
    if not holder:
        return "another process (no holder recorded yet)"
    return (f"pid {holder.get('pid')} on host {holder.get('host')} "
            f"(since {holder.get('since_utc')})")


def _try_lock(path: Path) -> int | None:
    """An fd holding the lock on the file now at ``path``, or None if someone else holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the file was replaced (released or taken over) meanwhile: retry


def _take_over(path: Path, holder: dict[str, Any] | None) -> None:
    """Unlink a lock file whose holder is dead, if it still is the one we looked at."""
    try:
        if read_holder(path) == holder:
            path.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def cell_lock(cell: Path, stage: str, *, wait: bool = False,
              timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
    """Hold the lock of ``stage`` on ``cell`` for the ``with`` block.

    Args:
        cell: the cell directory (created if missing).
        stage: the writing stage (generate, score, aggregate, repair).
        wait: block until the holder releases it instead of refusing.
        timeout_s: give up waiting after this many seconds (None: wait forever).
    Yields:
        this holder's record ``{"pid", "host", "stage", "since_utc"}``.
    Raises:
        CellLocked: another live process holds the lock (and ``wait`` is false or timed out).
    """
    cell.mkdir(parents=True, exist_ok=True)
    path = lock_path(cell, stage)
    started = time.monotonic()
    announced = False
    while True:
        fd = _try_lock(path)
        if fd is not None:
            break
        holder = read_holder(path)
        if holder_gone(holder):
            _take_over(path, holder)
            continue
        waited = time.monotonic() - started
        if not wait or (timeout_s is not None and waited >= timeout_s):
            raise CellLocked(
                f"{cell}: {stage} is in use by {describe(holder)}; wait for it to finish, stop "
                "it, or pass run.wait_for_lock=true to wait")
        if not announced:
            import logging

            logging.getLogger("benchforge").warning(
                "%s: %s is in use by %s; waiting (run.wait_for_lock=true)", cell, stage,
                describe(holder))
            announced = True
        time.sleep(POLL_S)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
          "since_utc": utc_now()}
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, only its holder is not named
        yield me
    finally:
        try:
            if read_holder(path) == me:
                path.unlink()  # waiters holding the old inode notice and retry
        except OSError:
            pass
        os.close(fd)  # releases the lock


def held_locks(cell: Path) -> list[dict[str, Any]]:
    """Holders of the cell's stage locks now (for ``status``), read-only: a lock file exists
    only while its stage runs (it is unlinked on release), unless its holder was killed."""
    found = []
    for path in sorted(cell.glob(".*.lock")):
        holder = read_holder(path)
        if holder and not holder_gone(holder):
            found.append(holder)
    return found
