"""Benchmark registry: ``benchmark.loader`` names a module here that registers one class.

Adding a benchmark is one module (subclass :class:`Benchmark`, decorate it with
:func:`register`) plus one ``conf/benchmark/<name>.yaml``; nothing else is edited.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.errors import BenchforgeError
from benchforge.prompts import Prompt
from benchforge.sandbox.pool import CheckProgram

_REGISTRY: dict[str, type[Benchmark]] = {}


@dataclass(frozen=True)
class Task:
    task_id: str
    data: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Dataset:
    tasks: list[Task]
    path: Path
    sha256: str
    version: str
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. EvalPlus's md5 "hash"

    def task(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.task_id == task_id:
                return task
        raise KeyError(task_id)


@dataclass(frozen=True)
class Download:
    """One data file (or HF dataset) ``benchforge stage`` fetches into ``data.root``.

    ``kind="url"``: ``source`` is a path under ``data.mirror`` (raw GitHub files at a pinned
    commit), checked against ``sha256``. ``kind="hf_dataset"``: ``source`` is a Hub dataset id
    whose ``files`` go into the ``dest`` folder.
    """

    kind: str
    source: str
    dest: str
    sha256: str | None = None
    files: tuple[str, ...] = ()


class Benchmark(ABC):
    """How one benchmark loads its data, prompts a model, extracts code and builds its check."""

    # True where the benchmark sets its own per-test time limits (EvalPlus); otherwise each
    # task's reference solution is timed through the sandbox to derive one limit per sample.
    per_test_time_limits = False
    has_references = True  # reference_code() gives a solution for every task
    # Benchmarks with dependent suites (EvalPlus: plus counts only where base passed) skip a
    # later suite once an earlier one failed, unless ``score.full_suites=true`` sets this.
    full_suites = False

    def __init__(self, cfg: DictConfig, data_root: Path, cache_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.data_root = data_root
        self.cache_dir = cache_dir or Path.home() / ".cache" / "benchforge"

    def downloads(self) -> list[Download]:
        """What ``benchforge stage`` fetches for ``benchmark.version`` (nothing: shipped)."""
        return []

    @abstractmethod
    def load(self) -> Dataset: ...

    @abstractmethod
    def prompt(self, task: Task, mode: str) -> Prompt: ...

    @abstractmethod
    def reference_completion(self, task: Task, mode: str) -> str:
        """What a perfect model would answer; the oracle server serves it."""

    @abstractmethod
    def extract_code(self, task: Task, completion: str, mode: str) -> str: ...

    @abstractmethod
    def check_program(self, task: Task, code: str) -> CheckProgram:
        """The sandbox program that passes iff ``code`` passes the task's tests."""

    @abstractmethod
    def reference_code(self, task: Task) -> str | None:
        """The task's canonical solution as code (timed per host for time limits), if any."""

    def stop_sequences(self, mode: str) -> list[str]:
        return []

    def result_fields(self, task: Task, extra: dict[str, Any]) -> dict[str, Any]:
        """Benchmark-specific columns of a results row, from the sandbox's extra output."""
        return {}

    def failure_fields(self, task: Task, code: str, detail: str) -> dict[str, Any]:
        """What a failed sample was checked on, for ``benchforge inspect``: ``fail_input``,
        ``fail_expected`` and ``fail_actual`` (each a short text, or None when unknown)."""
        return {}

    def prejudge(self, task: Task, code: str) -> dict[str, Any] | None:
        """A verdict without running the sample (e.g. CRUXEval's skip rule), or None."""
        return None

    def prepare_scoring(self, workers: int, progress: bool) -> None:
        """Build what checking needs once per host before samples are scored (EvalPlus: the
        expected outputs, on ``workers`` processes, with a progress bar if ``progress``).
        Nothing by default."""
        return None

    def audit_program(self, task: Task, code: str,
                      row: dict[str, Any]) -> tuple[CheckProgram, dict[str, Any]]:
        """What the timeout audit reruns for a timed-out results ``row`` (with twice its
        limits): the whole check unless the benchmark can narrow it to what timed out; and
        fields naming that part for the audit row."""
        return self.check_program(task, code), {}

    def reference_seconds(self, task: Task) -> float | None:
        """Seconds the task's reference took on this host where the benchmark knows it
        without running anything (orders the scoring queue largest first); else None."""
        return None

    def limited(self, tasks: list[Task]) -> list[Task]:
        limit = self.cfg.get("limit")
        return tasks[:limit] if limit else tasks


def shorten(text: str, limit: int = 2000) -> str:
    """A results-row text (failing input, expected output) cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def register(name: str) -> Callable[[type[Benchmark]], type[Benchmark]]:
    def decorate(cls: type[Benchmark]) -> type[Benchmark]:
        _REGISTRY[name] = cls
        return cls

    return decorate


def get_benchmark(cfg: DictConfig, data_root: Path, cache_dir: Path | None = None) -> Benchmark:
    loader = str(cfg.loader)
    if loader not in _REGISTRY:
        try:
            importlib.import_module(f"{__name__}.{loader}")
        except ModuleNotFoundError as exc:
            raise BenchforgeError(
                f"benchmark.loader={loader}: no module benchforge/benchmarks/{loader}.py"
            ) from exc
    if loader not in _REGISTRY:
        raise BenchforgeError(f"benchmark.loader={loader}: module registers no benchmark")
    return _REGISTRY[loader](cfg, data_root, cache_dir)


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def fenced_blocks(text: str) -> list[str]:
    """Code blocks of a markdown answer, Python-tagged (or untagged) ones first."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python = [body for lang, body in blocks if lang in ("python", "py", "python3", "")]
    return python + [body for lang, body in blocks if lang not in ("python", "py", "python3", "")]
