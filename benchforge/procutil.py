"""Process utilities, standard library only: start a child that dies with benchforge, signal
and terminate a whole process group, find a free port, read a log's tail, turn termination
signals into ``SystemExit``.

A leaf: imports nothing from benchforge, so the model server (:mod:`benchforge.engine`), the
sandbox pool and the SLURM helpers can all use it without importing each other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

LOG_TAIL_LINES = 30


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick).

    Returns:
        The port number; another process may take it before the caller binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """Runs in the child before exec (``preexec_fn``): ask the kernel to SIGTERM it when
    benchforge dies (Linux ``prctl(PR_SET_PDEATHSIG)``); elsewhere a no-op (best effort)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: best effort only
        pass


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the text file ``path`` ('' when it does not exist); bytes
    that are not UTF-8 are replaced, never raised."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group ``pgid``, read from ``/proc``.

    Returns:
        Their pids; [] where ``/proc`` has none (or does not exist).
    """
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def terminate_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the whole process group led by ``proc``, SIGKILL what is left after
    ``grace_s`` seconds, and reap the leader.

    The group is signalled even when its leader has already exited: a server that crashed
    can leave its workers (vLLM's engine core, apptainer's children) behind.
    """
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader
        if proc.returncode is not None and not group_members(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """SIGTERM and SLURM's USR1 would kill benchforge on the spot (their default action) and
    orphan a child group: inside this block they raise ``SystemExit(128 + signum)`` instead, so
    ``finally`` clauses run. Handlers already installed (submitit's, a shard's) stay."""
    replaced = {}

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGUSR1):
        if signal.getsignal(signum) is signal.SIG_DFL:
            replaced[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, previous in replaced.items():
            signal.signal(signum, previous)
