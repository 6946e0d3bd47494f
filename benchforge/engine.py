"""Model servers: launch an OpenAI-compatible server for a cell, or use one already running.

A launched server runs in its own process group, logs to ``logs/server.log``, is ready when
``/health`` answers, and is torn down with its whole group on exit, error or signal. It also
dies with benchforge (PR_SET_PDEATHSIG), so a SIGKILLed ``generate`` leaves no orphan server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from omegaconf import DictConfig

from benchforge.benchmarks import Benchmark, Task
from benchforge.errors import BenchforgeError

LOG_TAIL_LINES = 30


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGTERM it when benchforge dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: best effort only
        pass


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def terminate_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def launch_server(cmd: Sequence[str], port: int, log_path: Path,
                  startup_timeout_s: float) -> Iterator[str]:
    """Start ``cmd`` (which must listen on ``port``), wait for /health, yield its /v1 URL."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%dT%H:%M:%S')} $ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _healthy(f"{base}/health"):
            if proc.poll() is not None:
                raise BenchforgeError(
                    f"model server exited with code {proc.returncode} before becoming ready; "
                    f"last lines of {log_path}:\n{log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise BenchforgeError(
                    f"model server not ready after {startup_timeout_s:.0f}s "
                    f"(model.startup_timeout_s); last lines of {log_path}:\n{log_tail(log_path)}"
                )
            time.sleep(0.1)
        yield f"{base}/v1"
    finally:
        terminate_group(proc)


def oracle_answers(benchmark: Benchmark, tasks: list[Task], mode: str) -> list[dict[str, str]]:
    """Answers-file rows that make the mock server reply with each task's reference solution."""
    return [
        {"prompt_sha256": benchmark.prompt(task, mode).sha256,
         "completion": benchmark.reference_completion(task, mode)}
        for task in tasks
    ]


def write_answers(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@contextlib.contextmanager
def model_endpoint(model: DictConfig, benchmark: Benchmark, tasks: list[Task],
                   logs: Path) -> Iterator[str]:
    """Yield the base URL of a server for ``model``, launching one if the provider needs it."""
    if model.provider == "endpoint":
        yield str(model.base_url)
        return
    if model.provider != "oracle":
        raise BenchforgeError(f"model.provider={model.provider}: expected oracle or endpoint")
    with tempfile.TemporaryDirectory(prefix="benchforge-oracle-") as tmp:
        answers = Path(tmp) / "answers.jsonl"
        write_answers(answers, oracle_answers(benchmark, tasks, str(model.mode)))
        port = free_port()
        cmd = [sys.executable, "-m", "benchforge.mock_server", "--port", str(port),
               "--answers", str(answers), "--served-model-name", str(model.served_name),
               "--delay-s", str(float(model.oracle_latency_s))]
        with launch_server(cmd, port, logs / "server.log", model.startup_timeout_s) as url:
            yield url
