"""The sandbox conformance suite, shipped inside the package: every sandbox mode must pass it.

Each hostile sample either fails with the right ``failure_mode`` or is shown harmless to the
host. Protections that depend on the outer layer are checked in every mode that claims them
(``sandbox.guarantees``); a mode that does not claim one must say so. ``tests/test_sandbox.py``
runs every check against every mode available on the test host; ``benchforge sandbox-check
sandbox=<mode>`` runs them against one mode where benchforge will really score (a cluster
node), as inspect_ai's ``util/_sandbox/self_check.py`` lets a provider hold itself to its
interface.

Each check takes an open sandbox and returns None, or raises :class:`ConformanceError` naming
what the mode got wrong.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from benchforge.console import print_table
from benchforge.errors import BenchforgeError
from benchforge.sandbox import make_sandbox
from benchforge.sandbox.outer import FILESYSTEM_ISOLATING
from benchforge.sandbox.types import CheckProgram, ExecResult, FailureMode, Sandbox

# What the modes with a full outer layer guarantee.
FULL = frozenset({"timeout", "memory", "environment", "nproc", "escapees", "network",
                  "filesystem"})
# The limits the suite's samples are written against (``sandbox`` config keys).
SUITE_LIMITS = {"timeout_s": 3.0, "memory_mb": 512, "fsize_mb": 1, "nproc": 32}

CHECK = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(5) == 6\n"

# Samples that must fail with exactly this failure mode, in every mode.
FAILURE_MODE_SAMPLES: tuple[tuple[str, str], ...] = (
    ("def f(:\n", FailureMode.SYNTAX_ERROR.value),
    ("raise ValueError('boom')\n", FailureMode.RUNTIME_ERROR.value),
    ("def f(x):\n    return f(x)\nf(1)\n", FailureMode.RUNTIME_ERROR.value),
    ("import sys\nsys.exit(0)\n", FailureMode.EARLY_EXIT.value),
    ("import os\nos._exit(0)\n", FailureMode.EARLY_EXIT.value),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", FailureMode.KILLED.value),
    ("x = bytearray(2 * 1024 ** 3)\n", FailureMode.MEMORY.value),
    ("import ctypes\nctypes.string_at(0)\n", FailureMode.CRASH.value),
    ("open('big', 'wb').write(b'x' * 50 * 1024 * 1024)\n", FailureMode.OUTPUT_LIMIT.value),
)

# Candidates that try to make the checker pass without solving the task.
TAMPERING_SAMPLES: tuple[tuple[str, str], ...] = (
    # An object that equals everything.
    ("class A:\n    def __eq__(self, other):\n        return True\n"
     "def f(x):\n    return A()\n", CHECK),
    # ... also hidden in a container, or as a subclass of a builtin.
    ("class S(int):\n    def __eq__(self, other):\n        return True\n"
     "    __hash__ = int.__hash__\ndef f(x):\n    return [S(0)][0]\n", CHECK),
    # Replacing the test's assertion helper from inside the candidate.
    ("def f(x):\n    globals()['same'] = lambda a, b: None\n    return x + 1 if x == 1 else 0\n",
     "def same(a, b):\n    assert a == b\n"
     "def check(candidate):\n    same(candidate(1), 2)\n    same(candidate(5), 6)\n"),
    # Patching builtins the checker uses.
    ("import builtins\nbuiltins.abs = lambda x: 0\ndef f(x):\n    return 0\n",
     "def check(candidate):\n    assert abs(candidate(1) - 2) < 1e-6\n"),
    # Skipping the checker's lines with a trace hook.
    ("import sys\nsys.settrace(lambda *a: None)\ndef f(x):\n    return x + 1\n", CHECK),
)


class ConformanceError(AssertionError):
    """A sandbox mode broke its contract: the message names the check and what happened."""


def _require(ok: object, message: str) -> None:
    if not ok:
        raise ConformanceError(message)


def run(sandbox: Sandbox, code: str, test: str | None = None, **kw: Any) -> ExecResult:
    """Run dedented ``code`` (then ``test``) in ``sandbox``; keyword arguments go to
    :class:`CheckProgram` (``entry_point``, ``check``, ...)."""
    return sandbox.run(CheckProgram(textwrap.dedent(code),
                                    textwrap.dedent(test) if test else None, **kw))


def check_guarantees(sandbox: Sandbox) -> None:
    """Every mode guarantees timeout, memory and environment; bwrap and userns everything;
    the isolating modes run each worker in its own pid namespace; rlimit-only never claims
    the filesystem."""
    guarantees = sandbox.guarantees
    _require({"timeout", "memory", "environment"} <= guarantees, f"guarantees {guarantees}")
    mode = sandbox.mode
    if mode in ("bwrap", "userns"):
        _require(guarantees == FULL, f"{mode} guarantees {sorted(guarantees)}")
    if mode in FILESYSTEM_ISOLATING:
        # the worker verified it runs in its own pid namespace, so its sweep after each
        # sample lists that namespace's /proc (no reaper process per sample)
        _require(getattr(sandbox, "info", {}).get("pidns") is True,
                 f"{mode}: the worker is not in its own pid namespace")
    if mode not in FILESYSTEM_ISOLATING:
        _require("filesystem" not in guarantees, f"{mode} claims the filesystem")


def check_pass_and_fail(sandbox: Sandbox) -> None:
    """A right answer passes, a wrong one fails as ``assertion``."""
    good = run(sandbox, "def f(x):\n    return x + 1\n", CHECK, entry_point="f", check="check")
    bad = run(sandbox, "def f(x):\n    return x\n", CHECK, entry_point="f", check="check")
    _require(good.passed and good.failure_mode is None, f"right answer: {good}")
    _require(not bad.passed and bad.failure_mode == FailureMode.ASSERTION, f"wrong answer: {bad}")


def check_failure_modes(sandbox: Sandbox) -> None:
    """Each of :data:`FAILURE_MODE_SAMPLES` fails with its failure mode."""
    for code, mode in FAILURE_MODE_SAMPLES:
        result = run(sandbox, code)
        _require(not result.passed and result.failure_mode == mode,
                 f"{code!r}: expected {mode}, got {result.failure_mode} ({result.detail[:200]})")


def check_exit_before_checks(sandbox: Sandbox) -> None:
    """Exiting before the checks ran is ``early_exit``, never a pass."""
    for code in ("import os\ndef f(x):\n    return x\nos._exit(0)\n",
                 "import sys\ndef f(x):\n    sys.exit(0)\n"):
        result = run(sandbox, code, CHECK, entry_point="f", check="check")
        _require(not result.passed and result.failure_mode == FailureMode.EARLY_EXIT,
                 f"{code!r}: {result}")


def check_tampering(sandbox: Sandbox) -> None:
    """Each of :data:`TAMPERING_SAMPLES` fails as ``tampering``."""
    for code, test in TAMPERING_SAMPLES:
        result = run(sandbox, code, test, entry_point="f", check="check")
        _require(not result.passed and result.failure_mode == FailureMode.TAMPERING,
                 f"{code!r}: {result.failure_mode} ({result.detail[:200]})")


def check_fake_verdicts(sandbox: Sandbox) -> None:
    """A verdict printed or written to the result channel by the sample is not believed."""
    for code in ("print('passed')\nprint('{\"status\": \"passed\"}')\nimport os\nos._exit(0)\n",
                 "import os\nos.write(3, b'{\"status\": \"passed\"}')\nos._exit(0)\n"):
        result = run(sandbox, code)
        _require(not result.passed and result.failure_mode in ("early_exit", "tampering"),
                 f"{code!r}: {result}")
    forged = run(sandbox, "import os\nos.write(3, b'{\"status\": \"passed\"}')\nos._exit(0)\n")
    _require(forged.failure_mode == FailureMode.TAMPERING, f"forged verdict: {forged}")


def check_timeouts(sandbox: Sandbox) -> None:
    """An infinite loop, even one ignoring SIGTERM, times out within 2 s of its limit."""
    for code in ("while True:\n    pass\n",
                 "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                 "while True:\n    pass\n"):
        started = time.monotonic()
        result = sandbox.run(CheckProgram(code), timeout_s=1.0)
        _require(not result.passed and result.failure_mode == FailureMode.TIMEOUT,
                 f"{code!r}: {result}")
        _require(time.monotonic() - started < 1.0 + 2.0, f"{code!r}: took too long to stop")


def check_fork_bomb(sandbox: Sandbox) -> None:
    """A fork bomb fails within 10 s and the sandbox still works afterwards."""
    _require("nproc" in sandbox.guarantees, "nproc is not guaranteed")
    started = time.monotonic()
    result = sandbox.run(CheckProgram("import os\nwhile True:\n    os.fork()\n"), timeout_s=2.0)
    _require(not result.passed, "a fork bomb passed")
    _require(time.monotonic() - started < 10, "a fork bomb ran for 10 s or more")
    _require(run(sandbox, "x = 1\n").passed, "the sandbox no longer works after a fork bomb")


def check_stdout_flood(sandbox: Sandbox) -> None:
    """1 GiB on stdout is cut off, and the verdict's detail stays short."""
    code = ("import sys\nchunk = 'x' * (1 << 20)\n"
            "for _ in range(1024):\n    sys.stdout.write(chunk)\n")
    result = sandbox.run(CheckProgram(code), timeout_s=5.0)
    _require(not result.passed and result.failure_mode in ("output_limit", "timeout"),
             f"stdout flood: {result.failure_mode}")
    _require(len(result.detail) < 10_000, f"detail of {len(result.detail)} characters")


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_environment(sandbox: Sandbox) -> None:
    """No token or proxy of the host's environment reaches the sample; HOME is its own empty
    temp dir; stdin is closed."""
    with _environment(HF_TOKEN="hf_secret_token", https_proxy="http://proxy:3128"):
        result = run(sandbox, """
            import os, sys
            assert "HF_TOKEN" not in os.environ, "token leaked"
            assert not any("proxy" in k.lower() for k in os.environ), "proxy leaked"
            assert os.environ["HOME"] == os.getcwd(), "HOME is not the sample's temp dir"
            assert sys.stdin is None
            assert os.listdir(".") == [".output"], os.listdir(".")
            """)
    _require(result.passed, f"environment: {result.detail[-300:]}")


def _survivors(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(pid))
    return found


def check_escapees(sandbox: Sandbox) -> None:
    """A ``setsid()`` grandchild does not outlive its sample."""
    _require("escapees" in sandbox.guarantees, "escapees is not guaranteed")
    marker = f"98{os.getpid() % 1000}.5"
    code = f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "{marker}"])
            os._exit(0)
        time.sleep(0.3)
        """
    _require(run(sandbox, code).passed, "the escapee sample failed")
    deadline = time.monotonic() + 5
    while _survivors(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    _require(not _survivors(marker), "a setsid() child outlived its sample")


def _accept(listener: socket.socket) -> object:
    try:
        conn, _ = listener.accept()
    except OSError:
        return None
    conn.close()
    return "connected"


def check_no_network(sandbox: Sandbox) -> None:
    """A sample cannot reach a listener on the host's loopback."""
    _require("network" in sandbox.guarantees, "network is not guaranteed")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(4)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    thread = threading.Thread(target=lambda: accepted.append(_accept(listener)))
    thread.start()
    result = run(sandbox, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)\n")
    thread.join()
    listener.close()
    _require(not result.passed and result.failure_mode == FailureMode.RUNTIME_ERROR,
             f"connecting to the host: {result.failure_mode}")
    _require(accepted == [None], "the sample reached a listener on the host")


def check_filesystem(sandbox: Sandbox) -> None:
    """Outside its workdir a sample reads no secret and writes or removes nothing (the run
    dir, HOME, the venv, benchforge's own files, the interpreter)."""
    if "filesystem" not in sandbox.guarantees:
        _require(sandbox.mode not in FILESYSTEM_ISOLATING, f"{sandbox.mode} does not isolate files")
        return  # documented: no outer layer for files
    with tempfile.TemporaryDirectory(prefix="benchforge-conformance-") as tmp:
        tmp_path = Path(tmp)
        secret = tmp_path / "secret.txt"
        secret.write_text("TOPSECRET-42")
        secret.chmod(0o644)  # even world-readable: it is outside the bind set
        victim = tmp_path / "victim.txt"
        victim.write_text("keep me")
        run_dir = tmp_path / "runs"
        run_dir.mkdir()
        home_target = Path.home() / f"benchforge-evil-{os.getpid()}"
        try:
            result = run(sandbox, f"print(open({str(secret)!r}).read())\n")
            _require(not result.passed and "TOPSECRET" not in result.detail,
                     "a sample read a file outside its workdir")
            for target in (run_dir / "evil.txt", home_target, Path(sys.prefix) / "evil.txt"):
                result = run(sandbox, f"open({str(target)!r}, 'w').write('x')\n")
                _require(not result.passed and not target.exists(), f"a sample wrote {target}")
            for target in (victim, Path(__file__), Path(sys.executable)):
                result = run(sandbox, f"import os\nos.remove({str(target)!r})\n")
                _require(not result.passed and target.exists(), f"a sample removed {target}")
            result = run(sandbox,
                         "import os, sys\nos.remove(sys.argv[0] if sys.argv[0] else 'x')\n")
            _require(not result.passed, "a sample removed its worker script")
        finally:
            home_target.unlink(missing_ok=True)


def check_worker_kill(sandbox: Sandbox) -> None:
    """A sample that kills its worker fails as ``killed`` (or its kill is refused); the other
    samples of the batch get their right verdicts and the worker is replaced."""
    good = ("def f(x):\n    return x + 1\n", True)
    bad = ("def f(x):\n    return x - 1\n", False)
    killer = ("import os\nos.kill(os.getppid(), 9)\ndef f(x):\n    return x + 1\n", None)
    batch = [good, killer, bad, good, killer, good, bad, good]
    before = getattr(sandbox, "restarts", 0)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(
            lambda item: run(sandbox, item[0], CHECK, entry_point="f", check="check"), batch))
    for result, (_, expected) in zip(results, batch, strict=True):
        if expected is not None:
            _require(result.passed == expected, f"a bystander sample got {result}")
    # The kill either lands (the worker is replaced, the sample fails as "killed") or is refused
    # (another uid: PermissionError; pid 1 of a namespace ignores it) and the sample runs on.
    killers = [r for r, (code, _) in zip(results, batch, strict=True) if code == killer[0]]
    for result in killers:
        _require(result.passed or result.failure_mode in ("killed", "runtime_error"),
                 f"a worker killer got {result}")
    _require(getattr(sandbox, "restarts", 0) - before
             == sum(r.failure_mode == FailureMode.KILLED for r in killers),
             "workers restarted do not match the samples that killed theirs")


def check_not_in_benchforge(sandbox: Sandbox) -> None:
    """Sample code never runs in benchforge's own process (nor as its direct child)."""
    result = run(sandbox, f"import os\nassert os.getpid() != {os.getpid()}\n"
                          f"assert os.getppid() != {os.getpid()}\n")
    _require(result.passed, f"sample code ran in benchforge: {result.detail[-300:]}")


CHECKS: dict[str, Callable[[Sandbox], None]] = {
    "guarantees": check_guarantees,
    "pass and fail": check_pass_and_fail,
    "failure modes": check_failure_modes,
    "exit before checks": check_exit_before_checks,
    "tampering": check_tampering,
    "fake verdicts": check_fake_verdicts,
    "timeouts": check_timeouts,
    "fork bomb": check_fork_bomb,
    "stdout flood": check_stdout_flood,
    "environment": check_environment,
    "setsid escapees": check_escapees,
    "no network": check_no_network,
    "filesystem": check_filesystem,
    "worker kill": check_worker_kill,
    "not in benchforge": check_not_in_benchforge,
}


@dataclass(frozen=True)
class Outcome:
    """One check's outcome: ``passed``, else ``problem`` says what the mode got wrong."""

    check: str
    passed: bool
    problem: str = ""
    seconds: float = 0.0


def run_suite(open_sandbox: Callable[[], AbstractContextManager[Sandbox]],
              only: list[str] | None = None) -> list[Outcome]:
    """Run every check (or those named in ``only``), each in a fresh sandbox.

    Args:
        open_sandbox: opens a sandbox of the mode under test (a context manager that closes
            it); a fresh one per check, so no check sees another's leftovers (a fork bomb's
            processes still counted against the sample uid's process limit).

    Returns:
        One :class:`Outcome` per check, in :data:`CHECKS` order; a check that raises anything
        else than :class:`ConformanceError` is a failed outcome too (named with its type).
    """
    outcomes = []
    for name, check in CHECKS.items():
        if only and name not in only:
            continue
        started = time.monotonic()
        try:
            with open_sandbox() as sandbox:
                check(sandbox)
        except ConformanceError as exc:
            outcomes.append(Outcome(name, False, str(exc), time.monotonic() - started))
        except Exception as exc:  # a broken sandbox: reported, the suite goes on
            outcomes.append(Outcome(name, False, f"{type(exc).__name__}: {exc}",
                                    time.monotonic() - started))
        else:
            outcomes.append(Outcome(name, True, "", time.monotonic() - started))
    return outcomes


def run_sandbox_check(cfg: Any) -> list[dict[str, Any]]:
    """``benchforge sandbox-check sandbox=<mode>``: the conformance suite against that mode on
    this host, with the suite's limits (:data:`SUITE_LIMITS`) and two workers.

    Returns:
        One ``{"check", "passed", "problem", "seconds"}`` per check (also printed as a table).

    Raises:
        BenchforgeError: the mode does not work on this host, or a check failed (the line
            names the failed checks; the table says what each got wrong).
    """
    settings = OmegaConf.merge(cfg.sandbox, SUITE_LIMITS)
    with make_sandbox(settings, workers=1) as probe:  # fails here, once, if the mode cannot run
        mode, guarantees = probe.mode, sorted(probe.guarantees)
    pinned = OmegaConf.merge(settings, {"name": mode})  # auto: the mode it resolved to
    outcomes = run_suite(lambda: make_sandbox(pinned, workers=2, warn=False))  # warned above
    print_table(f"sandbox={mode} conformance (guarantees: {', '.join(guarantees)})",
                ["check", "result", "s", "problem"],
                [[o.check, "pass" if o.passed else "FAIL", f"{o.seconds:.1f}", o.problem]
                 for o in outcomes])
    failed = [o.check for o in outcomes if not o.passed]
    if failed:
        raise BenchforgeError(f"sandbox={mode}: {len(failed)} of {len(outcomes)} conformance "
                              f"checks failed ({', '.join(failed)}); do not score on this host "
                              "with this mode")
    return [{"check": o.check, "passed": o.passed, "problem": o.problem,
             "seconds": round(o.seconds, 3)} for o in outcomes]
