"""Host side of the sandbox: a pool of long-lived workers, each inside one outer layer.

A worker forks one child per sample, so the outer layer (a bwrap or apptainer start) is paid
once per worker, not per sample. A worker that dies (a sample killed its parent) or hangs is
replaced, its leftovers are killed, and the sample gets a failing verdict; the run goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import select
import signal
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from benchforge.errors import BenchforgeError
from benchforge.sandbox.outer import FILESYSTEM_ISOLATING, OuterLayer, is_root, make_outer
from benchforge.sandbox.types import CheckProgram, ExecResult, FailureMode, Limits

# Extra seconds the host waits beyond a sample's limit before declaring its worker hung.
HOST_GRACE_S = 10.0
WORKER_START_TIMEOUT_S = 60.0


# Every open pool, so that a signal handler can kill all workers at once (abort_all).
_OPEN: weakref.WeakSet[SandboxPool] = weakref.WeakSet()


def abort_all() -> None:
    """Kill every worker of every open pool now (SIGTERM/SIGINT): whole process trees
    (pid namespaces) go within milliseconds; later ``run`` calls raise instead of respawning."""
    for pool in list(_OPEN):
        pool.abort()


def _kill_with_parent() -> None:
    """In the launcher before exec: SIGKILL when benchforge dies (unshare ignores SIGTERM;
    its --kill-child then takes the worker's whole pid namespace)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class WorkerProcess:
    """One worker: its outer layer's launcher, then the stdlib-only worker script."""

    def __init__(self, outer: OuterLayer) -> None:
        self.outer = outer
        self._sent: set[str] = set()  # keys of trusted sources this worker already holds
        argv = [*outer.argv_prefix, outer.python, "-I", "-B", outer.worker_path,
                json.dumps(outer.worker_config)]
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            start_new_session=True, preexec_fn=_kill_with_parent, env=outer.env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        hello = self._read(WORKER_START_TIMEOUT_S)
        if not hello or not hello.get("ready"):
            self.close()
            raise BenchforgeError(
                f"sandbox={outer.mode}: the worker did not start ({self._stderr_text}); "
                f"command: {' '.join(argv[:6])} ...")
        self.info: dict[str, Any] = hello

    def _stderr_tail(self, size: int = 2000) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        return " | ".join(text[-size:].strip().splitlines()) or "no output"

    def _read(self, timeout_s: float) -> dict[str, Any] | None:
        self.timed_out = False
        deadline = time.monotonic() + timeout_s
        header = self._read_exact(4, deadline)
        if header is None:
            return None
        body = self._read_exact(struct.unpack(">I", header)[0], deadline)
        return None if body is None else json.loads(body)

    def _read_exact(self, size: int, deadline: float) -> bytes | None:
        chunks = []
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._out], [], [], remaining)[0]:
                self.timed_out = True  # hung, as opposed to dead (EOF)
                return None
            chunk = os.read(self._out, size)
            if not chunk:
                return None
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def run(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """The worker's verdict, or None if it died or hung (then it must be replaced)."""
        request = self._dedupe_sources(request)
        body = json.dumps(request).encode()
        try:
            os.write(self._in, struct.pack(">I", len(body)) + body)
        except (BrokenPipeError, OSError):
            return None
        return self._read(timeout_s + HOST_GRACE_S)

    def _dedupe_sources(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send each big trusted source (guard, oracles) once; later requests name its key."""
        program = dict(request["program"])
        differential = dict(program["differential"]) if program.get("differential") else None
        for holder, field_name in ((program, "guard_source"), (differential, "support_source")):
            source = holder.get(field_name) if holder else None
            if source:
                key = hashlib.sha256(source.encode()).hexdigest()
                holder[field_name] = {"key": key, "source": None if key in self._sent
                                      else source}
                self._sent.add(key)
        if differential is not None:
            program["differential"] = differential
        return dict(request, program=program)

    def close(self) -> None:
        """Stop the worker: close its stdin, give it 5 s to exit, SIGKILL its process group."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.proc.stdout.close()  # type: ignore[union-attr]
        self._stderr_text = self._stderr_tail()  # kept for error messages after close
        self._stderr.close()


class SandboxPool:
    """The ``Sandbox`` of benchforge: ``run(program, timeout_s)`` from any number of threads.

    Args:
        mode: the sandbox mode (outer layer: ``bwrap``, ``apptainer``, ``apptainer-setuid``,
            ``userns``, ``rlimit-only``; see :mod:`benchforge.sandbox.outer`).
        limits: per-sample resource limits.
        workers: long-lived worker processes, each running one sample at a time.
        image: the scorer SIF for the apptainer modes.
        read_only: host dirs bound read-only into the sandbox's filesystem view.
    """

    def __init__(self, mode: str, limits: Limits, workers: int = 1,
                 image: str | None = None, read_only: tuple[str, ...] = ()) -> None:
        self.mode = mode
        self.read_only = read_only
        self.limits = limits
        self.image = image
        self._size = max(1, workers)
        self._idle: queue.LifoQueue[tuple[int, WorkerProcess]] = queue.LifoQueue()
        self._free_slots: queue.Queue[int] = queue.Queue()
        for slot in range(self._size):
            self._free_slots.put(slot)
        self._outers: dict[int, OuterLayer] = {}
        self._lock = threading.Lock()
        self._all: dict[int, WorkerProcess] = {}
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self.aborted = False
        # Workers die with the *thread* that started them (PR_SET_PDEATHSIG, also bwrap's
        # --die-with-parent), so one long-lived thread starts them all, not the scoring threads.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawn")
        _OPEN.add(self)
        # Start one worker now: a broken outer layer fails here, before any sample is scored.
        slot, worker = self._acquire()
        self._release(slot, worker)

    def abort(self) -> None:
        """Kill every worker now, without waiting (safe in a signal handler: no lock)."""
        self.aborted = True
        for worker in list(self._all.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.proc.pid, signal.SIGKILL)

    @property
    def guarantees(self) -> frozenset[str]:
        """What this pool's samples are protected from, as verified at worker start-up."""
        info = self.info
        got = {"timeout", "memory", "environment"}
        if self.mode in FILESYSTEM_ISOLATING and info.get("filesystem", True):
            got.add("filesystem")  # userns: only once its worker verified the private view
        if info.get("network_isolated"):
            got.add("network")
        # A sample uid (NPROC binds, kill(-1) as that uid sweeps), a pids cgroup, or a private
        # pid namespace. A sample uid still reads world-readable files: no "filesystem".
        if info.get("uid") is not None or info.get("cgroup") or info.get("pidns"):
            got.add("escapees")
        if info.get("uid") is not None or info.get("cgroup") or not is_root():
            got.add("nproc")  # RLIMIT_NPROC binds every non-root uid
        return frozenset(got)

    def _outer(self, slot: int) -> OuterLayer:
        if slot not in self._outers:
            self._outers[slot] = make_outer(self.mode, slot, self.image, self.limits.nproc,
                                            self.read_only)
        return self._outers[slot]

    def _acquire(self) -> tuple[int, WorkerProcess]:
        while True:
            if self.aborted:
                raise BenchforgeError(f"sandbox={self.mode}: aborted (interrupted)")
            with contextlib.suppress(queue.Empty):
                return self._idle.get_nowait()
            try:
                slot = self._free_slots.get_nowait()
            except queue.Empty:  # all workers busy: wait for one (or a freed slot, or abort)
                with contextlib.suppress(queue.Empty):
                    return self._idle.get(timeout=0.2)
                continue
            try:
                worker = self._spawner.submit(WorkerProcess, self._outer(slot)).result()
            except BaseException:
                self._free_slots.put(slot)
                raise
            with self._lock:
                self._all[slot] = worker
                self.info = self.info or worker.info
            return slot, worker

    def _release(self, slot: int, worker: WorkerProcess) -> None:
        self._idle.put((slot, worker))

    def _discard(self, slot: int, worker: WorkerProcess) -> None:
        worker.close()
        self._sweep_slot(slot)
        with self._lock:
            self._all.pop(slot, None)
            self.restarts += 1
        self._free_slots.put(slot)

    def _sweep_slot(self, slot: int) -> None:
        """Kill what a dead worker's samples left on the host (outside any pid namespace)."""
        config = self._outer(slot).worker_config
        uid = config.get("uid")
        if uid is not None and not config.get("pidns"):  # no namespace of its own to kill
            for _ in range(3):
                subprocess.run(["kill", "-9", "-1"], user=uid, group=config["gid"],  # type: ignore[arg-type]
                               capture_output=True, check=False)
        cgroup = config.get("cgroup")
        if cgroup:
            for _ in range(3):
                with contextlib.suppress(OSError):
                    for pid in Path(str(cgroup), "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.05)

    def run(self, program: CheckProgram, timeout_s: float | None = None,
            time_scale: float = 1.0) -> ExecResult:
        """Run one program; ``time_scale`` stretches a differential program's own limits."""
        own = program.wall_limit_s()
        limit = float(timeout_s if timeout_s is not None
                      else own * time_scale if own is not None else self.limits.timeout_s)
        request = {"program": asdict(program), "timeout_s": limit, "time_scale": time_scale,
                   "limits": asdict(self.limits)}
        slot, worker = self._acquire()
        started = time.monotonic()
        try:
            response = worker.run(request, limit)
        except BaseException:
            self._discard(slot, worker)
            raise
        if response is None:
            hung = worker.timed_out
            self._discard(slot, worker)
            duration = round(time.monotonic() - started, 4)
            if hung:
                return ExecResult(False, FailureMode.TIMEOUT.value,
                                  "sandbox worker stopped answering", duration)
            return ExecResult(False, FailureMode.KILLED.value,
                              "the sample killed its sandbox worker", duration)
        self._release(slot, worker)
        return ExecResult(bool(response["passed"]), response["failure_mode"],
                          str(response.get("detail", "")), float(response["duration_s"]),
                          dict(response.get("extra") or {}))

    def close(self) -> None:
        """Stop every worker (and sweep its leftovers), remove the workers' cgroups and stop
        the spawner."""
        _OPEN.discard(self)
        with self._lock:
            workers = list(self._all.items())
            self._all.clear()
        for slot, worker in workers:
            worker.close()
            self._sweep_slot(slot)
        for outer in self._outers.values():
            cgroup = outer.worker_config.get("cgroup")
            if cgroup:
                with contextlib.suppress(OSError):
                    Path(str(cgroup)).rmdir()  # cgroup dirs go with rmdir once empty
        self._spawner.shutdown()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
