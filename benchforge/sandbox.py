"""Run untrusted sample programs: one child process per sample, never in benchforge itself.

The ``rlimit`` sandbox is the inner layer of the product's design: a fresh temp dir as cwd and
HOME, a scrubbed environment, stdin closed, output captured to a capped file, rlimits applied
by a trusted harness before the program runs, its own process group, and a wall-clock timeout
enforced by the parent that kills the whole group. It is not an isolation boundary on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from omegaconf import DictConfig

from benchforge.errors import BenchforgeError

HARNESS = Path(__file__).with_name("_harness.py")

# How a child that left no verdict ended, by the signal that ended it.
_SIGNAL_MODES = {
    signal.SIGXCPU: "timeout",
    signal.SIGKILL: "killed",
    signal.SIGXFSZ: "output_limit",
    signal.SIGSEGV: "crash",
    signal.SIGABRT: "crash",
}


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    failure_mode: str | None  # None when passed
    detail: str
    duration_s: float


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    cpu_s: int
    nofile: int
    fsize_mb: int
    max_output_bytes: int

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Limits:
        return cls(timeout_s=float(cfg.timeout_s), memory_mb=int(cfg.memory_mb),
                   cpu_s=int(cfg.cpu_s), nofile=int(cfg.nofile), fsize_mb=int(cfg.fsize_mb),
                   max_output_bytes=int(cfg.max_output_bytes))


class Sandbox(Protocol):
    mode: str

    def run(self, program: str) -> ExecResult: ...


def scrubbed_env(home: str) -> dict[str, str]:
    """No tokens, proxies or user paths reach a sample: only what Python needs to start."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home,
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class RlimitSandbox:
    mode = "rlimit"

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def run(self, program: str) -> ExecResult:
        limits = self.limits
        with tempfile.TemporaryDirectory(prefix="benchforge-sample-") as workdir:
            program_path = Path(workdir) / "program.py"
            program_path.write_text(program, encoding="utf-8")
            output_path = Path(workdir) / ".output"
            read_fd, write_fd = os.pipe()
            limits_json = json.dumps({"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s,
                                      "nofile": limits.nofile, "fsize_mb": limits.fsize_mb})
            started = time.monotonic()
            with open(output_path, "wb") as output:
                try:
                    proc = subprocess.Popen(
                        [sys.executable, "-I", "-B", str(HARNESS), str(write_fd), limits_json,
                         str(program_path)],
                        cwd=workdir, env=scrubbed_env(workdir), stdin=subprocess.DEVNULL,
                        stdout=output, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                        start_new_session=True,
                    )
                finally:
                    os.close(write_fd)
                timed_out = False
                try:
                    proc.wait(timeout=limits.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                # Kill the whole group, also after a normal exit: no background child survives.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            duration = round(time.monotonic() - started, 4)
            verdict = _read_verdict(read_fd)
            output_text = _read_capped(output_path, limits.max_output_bytes)
        return _classify(verdict, proc.returncode, timed_out, output_text, duration,
                         limits.timeout_s)


def _read_verdict(fd: int) -> dict[str, str] | None:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    try:
        verdict = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return verdict if isinstance(verdict, dict) and "status" in verdict else None


def _read_capped(path: Path, cap: int) -> str:
    with open(path, "rb") as fh:
        return fh.read(cap).decode("utf-8", errors="replace")


def _classify(verdict: dict[str, str] | None, returncode: int, timed_out: bool, output: str,
              duration: float, timeout_s: float) -> ExecResult:
    if timed_out:
        return ExecResult(False, "timeout", f"killed after {timeout_s}s wall clock", duration)
    if verdict is not None:
        status = verdict["status"]
        detail = verdict.get("detail", "")
        if status == "passed":
            return ExecResult(True, None, "", duration)
        return ExecResult(False, status, detail, duration)
    if returncode < 0:
        sig = signal.Signals(-returncode)
        mode = _SIGNAL_MODES.get(sig, "killed")
        return ExecResult(False, mode, f"terminated by {sig.name}; output: {output[-500:]}",
                          duration)
    return ExecResult(False, "early_exit",
                      f"exited with code {returncode} before the checks finished; "
                      f"output: {output[-500:]}", duration)


def make_sandbox(cfg: DictConfig) -> Sandbox:
    """The sandbox the ``sandbox`` config group selects."""
    if cfg.name != RlimitSandbox.mode:
        raise BenchforgeError(f"sandbox={cfg.name}: unknown sandbox; available: rlimit")
    return RlimitSandbox(Limits.from_config(cfg))
