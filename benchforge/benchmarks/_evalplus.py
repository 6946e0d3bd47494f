"""EvalPlus semantics shared by HumanEval+ and MBPP+ (evalplus 0.3.1 reused where it fits).

Expected outputs and per-input reference times come from running each task's canonical
solution with evalplus's own ``trusted_exec`` in a separate process, cached per dataset md5
and host. Samples are then checked differentially in benchforge's sandbox, base and plus
suites each in a fresh child, with evalplus's reliability guard, special oracles, per-input
limits ``max(min_time_limit, factor x reference)`` and float tolerance rules.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import socket
import subprocess
import sys
import threading
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from benchforge.answers import evalplus as evalplus_answers
from benchforge.benchmarks import Dataset, Download, Task, shorten
from benchforge.benchmarks._function import FunctionBenchmark
from benchforge.benchmarks._store import store_problem
from benchforge.config import Mode
from benchforge.errors import BenchforgeError
from benchforge.rundir import sha256_file
from benchforge.sandbox.types import CheckProgram, split_part

SUITES = ("base", "plus")
# EvalPlus: a suite's process gets min(EVALPLUS_TIMEOUT_PER_TASK=60, sum of limits) + 1 s,
# joined for one more second.
SUITE_CAP_S = 60.0
SUITE_SLACK_S = 2.0
# The store's layout (benchmarks/_groundtruth.py); part of its folder name, so a store written
# by an older benchforge is rebuilt beside it instead of misread.
STORE_FORMAT = "v2"
GROUND_TRUTH_MB = {"humaneval": 110, "mbpp": 25}  # store size (HE+ v0.1.9, MBPP+ v0.1.0)


def _remove_stale_builds(target: Path) -> None:
    """Build folders of ``target`` (``.<name>.build-<pid>``) left by a killed computation on
    this host (pid no longer running); a live build by another process is left alone. A
    ``target`` without ``index.json`` is removed too."""
    import os
    import shutil

    for stale in target.parent.glob(f".{target.name}.build-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:
            pass
    if target.is_dir() and not (target / "index.json").is_file():
        # a store is renamed into place with its index.json, so one without it was damaged
        # (its index.json deleted): never read, and in the way of the rebuild's rename
        shutil.rmtree(target, ignore_errors=True)


def read_tasks(path: Path, kind: str) -> tuple[list[dict[str, Any]], str]:
    """Rows of an EvalPlus dataset file (.jsonl or .jsonl.gz) and its EvalPlus hash (md5 of
    the uncompressed bytes). MBPP+ inputs are deserialized as evalplus.get_mbpp_plus does."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    if kind == "mbpp":
        from evalplus.data.mbpp import mbpp_deserialize_inputs

        for row in rows:
            row["base_input"] = mbpp_deserialize_inputs(row["task_id"], row["base_input"])
            row["plus_input"] = mbpp_deserialize_inputs(row["task_id"], row["plus_input"])
    return rows, hashlib.md5(raw).hexdigest()


def support_source() -> str:
    """evalplus's reliability guard and special oracles, run in the sandbox child as is."""
    from evalplus.eval import _special_oracle, utils

    return inspect.getsource(utils) + "\n\n" + inspect.getsource(_special_oracle)


class EvalPlusBenchmark(FunctionBenchmark):
    """HumanEval+ / MBPP+ as evalplus 0.3.1 grades them (``evalplus/evaluate.py``,
    ``evalplus/eval/__init__.py:unsafe_execute``): the sample runs on the base inputs and then the
    plus inputs, each output compared with the canonical solution's (exact, or ``np.allclose``
    with the task's ``atol`` for floats), with evalplus's per-input time limits derived from the
    reference's times on this host. Subclasses set ``kind``, ``files`` and ``sources``.
    """
    kind: str  # "humaneval" | "mbpp" (evalplus's dataset names)
    files: ClassVar[dict[str, str]]  # version -> path under data.root
    # version -> (path under data.mirror: the release repo's file at a pinned commit, sha256)
    sources: ClassVar[dict[str, tuple[str, str]]]
    required = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input",
                "plus_input", "atol")
    per_test_time_limits = True  # per-input limits; no whole-program reference timing

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._truth_lock = threading.Lock()  # scoring threads ask for it at once
        self._truth_error: BenchforgeError | None = None
        self._truth_index: dict[str, Any]

    def downloads(self) -> list[Download]:
        version = str(self.cfg.version)
        if version not in self.sources:
            raise BenchforgeError(f"benchmark.version={version}: no download known for "
                                  f"{self.cfg.name}; available: {', '.join(self.sources)}")
        source, sha256 = self.sources[version]
        return [Download("url", source, self.files[version], sha256)]

    def data_file(self) -> Path:
        """The dataset file of ``benchmark.version`` under ``data.root`` (or
        ``benchmark.path`` as given).

        Raises:
            BenchforgeError: a version this benchmark has no file for (names the known ones).
        """
        version = str(self.cfg.version)
        if self.cfg.get("path"):
            return Path(str(self.cfg.path)).expanduser()
        if version not in self.files:
            raise BenchforgeError(
                f"benchmark.version={version}: unknown for {self.cfg.name}; "
                f"available: {', '.join(self.files)}")
        return self.data_root / self.files[version]

    def load(self) -> Dataset:
        path = self.data_file()
        if not path.is_file():
            raise BenchforgeError(
                f"{path}: {self.cfg.name} {self.cfg.version} data not found; run `benchforge "
                f"stage benchmark={self.cfg.name}` or set data.root to a dir laid out as "
                f"<data.root>/{self.files.get(str(self.cfg.version), '...')}")
        try:
            rows, md5 = read_tasks(path, self.kind)
        except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
            raise BenchforgeError(f"{path}: unreadable EvalPlus data ({exc})") from exc
        for lineno, row in enumerate(rows, start=1):
            missing = [f for f in self.required if f not in row]
            if missing:
                raise BenchforgeError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        tasks = self.limited([Task(r["task_id"], r) for r in rows])
        self._n_rows = len(rows)
        self._md5 = md5
        self._path = path
        self._dataset = Dataset(tasks=tasks, path=path, sha256=sha256_file(path),
                                version=str(self.cfg.version), extra={"md5": md5})
        return self._dataset

    def extract_code(self, task: Task, completion: str, mode: str) -> str:
        """EvalPlus codegen's ``sanitize`` (see :mod:`benchforge.answers.evalplus`)."""
        if mode == Mode.completion:
            return evalplus_answers.completion_solution(task.data["prompt"], completion,
                                                        task.data["entry_point"], self.kind)
        return evalplus_answers.chat_solution(completion, task.data["entry_point"])

    def stop_sequences(self, mode: str) -> list[str]:
        """EvalPlus's vLLM stop strings for base models (4 sent, all cut client-side)."""
        return evalplus_answers.completion_stops(self.kind) if mode == Mode.completion else []

    def rescoring_code(self, task: Task, row: dict[str, Any]) -> str | None:
        """evalplus.evaluate: ``solution`` as is, ``completion`` as prompt + completion."""
        return evalplus_answers.rescoring_solution(task.data["prompt"], row)

    # ------------------------------------------------------------------------ ground truth
    def truth_dir(self) -> Path:
        """This dataset's expected outputs on this host: one file per task (each expected output
        pickled on its own, then a header with the inputs, times and offsets) and ``index.json``
        (per task: file, per-input reference times); see ``benchmarks/_groundtruth.py``."""
        if not hasattr(self, "_md5"):
            self.load()
        return self.cache_dir / (f"evalplus-{self.kind}-{self._md5}-{socket.gethostname()}"
                                 f"-{STORE_FORMAT}-truth")

    def prepare_scoring(self, workers: int, progress: bool) -> None:
        """Compute the expected outputs once per host (``workers`` processes, a progress bar)
        unless cached; a failure is one BenchforgeError, raised again without rebuilding."""
        with self._truth_lock:
            if self._truth_error is not None:
                raise self._truth_error
            if "_truth_index" in self.__dict__:
                return
            target = self.truth_dir()
            if not (target / "index.json").is_file():
                try:
                    self._build_truth(target, workers, progress)
                except BenchforgeError as exc:
                    self._truth_error = exc
                    raise
            self._truth_index = self._checked_index(target)

    def _checked_index(self, target: Path) -> dict[str, Any]:
        """The store's parsed ``index.json``, once its files are checked
        (:func:`benchforge.benchmarks._store.store_problem`).

        Raises:
            BenchforgeError: a damaged store (names the folder and the way to rebuild it).
        """
        try:
            index = json.loads((target / "index.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problem: str | None = f"index.json cannot be read ({exc})"
        else:
            tasks = (self.__dict__.get("_dataset") or self.load()).tasks
            problem = store_problem(target, index, [t.task_id for t in tasks])
        if problem is not None:
            self._truth_error = BenchforgeError(
                f"{target}: the expected-output store is damaged: {problem}; delete that "
                "folder and rerun to rebuild it")
            raise self._truth_error
        return index

    def _build_truth(self, target: Path, workers: int, progress: bool) -> None:
        from benchforge.console import progress_bar

        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchforgeError(f"data.cache={self.cache_dir}: cannot create it "
                                  f"({exc.strerror})") from None
        _remove_stale_builds(target)
        label = {"humaneval": "HumanEval+", "mbpp": "MBPP+"}[self.kind]
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchforge.benchmarks._groundtruth", self.kind,
             str(self._path), str(target), str(max(1, workers))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        with progress_bar(f"computing {label} expected outputs, once per host", self._n_rows,
                          progress) as advance:
            for line in proc.stdout:
                if line.startswith("done "):
                    advance()
        error = proc.stderr.read().strip().splitlines()
        if proc.wait() != 0 or not (target / "index.json").is_file():
            cause = error[-1] if error else f"exit status {proc.returncode}"
            hint = ("fix the dataset file or delete it and run `benchforge stage "
                    f"benchmark={self.cfg.name}`" if "canonical solution" in cause else
                    "free space there or set data.cache to another disk, then rerun")
            raise BenchforgeError(
                f"data.cache={self.cache_dir}: computing the {self.cfg.name} expected outputs "
                f"into {target.name} (~{GROUND_TRUTH_MB.get(self.kind, 100)} MB) from "
                f"{self._path} failed: {cause}; {hint}")

    @cached_property
    def _support(self) -> str:
        return support_source()

    def check_program(self, task: Task, code: str) -> CheckProgram:
        self.prepare_scoring(1, False)
        entry = self._truth_index[task.task_id]
        suites = [{"name": name, "wall_s": self.suite_wall_s(entry["times"][name])}
                  for name in SUITES]
        return CheckProgram(code=code, entry_point=task.data["entry_point"], differential={
            "dataset": self.kind, "atol": task.data["atol"], "support_source": self._support,
            "fixture": str(self.truth_dir() / entry["file"]), "suites": suites,
            "min_time_limit_s": self._floor, "time_factor": self._factor,
            # EvalPlus reports base and base AND plus: plus cannot change either once base failed
            "dependent": not self.full_suites})

    def audit_program(self, task: Task, code: str,
                      row: dict[str, Any]) -> tuple[CheckProgram, dict[str, Any]]:
        """Only the suite that timed out (named by the row's ``detail``), and within it only
        the input that timed out (``<suite>_fail_index``) where the timeout hit one."""
        program = self.check_program(task, code)
        name, _ = split_part(str(row.get("detail") or ""))
        if name not in SUITES:
            return program, {}
        index = row.get(f"{name}_fail_index")
        spec = dict(program.differential or {})
        spec["suites"] = [s for s in spec["suites"] if s["name"] == name]
        if isinstance(index, int) and index >= 0:
            spec["only_index"] = index
        return (CheckProgram(code=code, entry_point=program.entry_point, differential=spec),
                {"audit_suite": name, "audit_input_index": spec.get("only_index")})

    @cached_property
    def _floor(self) -> float:  # read once: an OmegaConf lookup per input cost seconds
        return float(self.cfg.get("min_time_limit_s") or 1.0)

    @cached_property
    def _factor(self) -> float:
        return float(self.cfg.get("time_factor") or 4.0)

    def suite_wall_s(self, times: list[float]) -> float:
        """EvalPlus's wall limit of one suite's process: min(60, sum of per-input limits
        max(min_time_limit, factor x reference)) plus slack."""
        floor, factor = self._floor, self._factor
        limits = sum(max(floor, factor * t) for t in times)
        return min(SUITE_CAP_S, limits) + SUITE_SLACK_S

    def reference_seconds(self, task: Task) -> float | None:
        self.prepare_scoring(1, False)
        times = self._truth_index[task.task_id]["times"]
        return sum(sum(times[name]) for name in SUITES)

    def result_fields(self, task: Task, extra: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name in SUITES:
            status = extra.get(f"{name}_status")
            fields[f"{name}_status"] = status
            index = extra.get(f"{name}_fail_index")
            failing = None
            if status == "fail" and index is not None and index >= 0:
                failing = self.serialize_input(task, task.data[f"{name}_input"][index])
            fields[f"{name}_fail_input"] = failing
            fields[f"{name}_fail_index"] = index if status == "fail" else None
            if failing is not None:  # what the reference returned, and what the sample did
                fields[f"{name}_fail_expected"] = extra.get(f"{name}_fail_expected")
                fields[f"{name}_fail_actual"] = extra.get(f"{name}_fail_actual")
        return fields

    def serialize_input(self, task: Task, value: Any) -> str:
        """``value`` (one input of a suite) as short text for
        ``benchforge inspect``: its repr, cut by :func:`shorten`.
        """
        return shorten(repr(value))
