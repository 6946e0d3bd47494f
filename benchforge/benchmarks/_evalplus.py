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
import pickle
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
from benchforge.errors import BenchforgeError
from benchforge.rundir import sha256_file, write_atomic
from benchforge.sandbox.types import CheckProgram

SUITES = ("base", "plus")
# EvalPlus: a suite's process gets min(EVALPLUS_TIMEOUT_PER_TASK=60, sum of limits) + 1 s,
# joined for one more second.
SUITE_CAP_S = 60.0
SUITE_SLACK_S = 2.0
GROUND_TRUTH_MB = {"humaneval": 250, "mbpp": 100}  # size of the expected-output pickle
_FIXTURES_LOCK = threading.Lock()


def _remove_stale_temp(cache: Path) -> None:
    """Temp files of ``cache`` left by a killed computation on this host (pid not running)."""
    import os

    for tmp in cache.parent.glob(f".{cache.name}.*.tmp"):
        pid = tmp.name[len(cache.name) + 2:].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass


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
    kind: str  # "humaneval" | "mbpp" (evalplus's dataset names)
    files: ClassVar[dict[str, str]]  # version -> path under data.root
    # version -> (path under data.mirror: the release repo's file at a pinned commit, sha256)
    sources: ClassVar[dict[str, tuple[str, str]]]
    required = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input",
                "plus_input", "atol")
    per_test_time_limits = True  # per-input limits; no whole-program reference timing

    def downloads(self) -> list[Download]:
        version = str(self.cfg.version)
        if version not in self.sources:
            raise BenchforgeError(f"benchmark.version={version}: no download known for "
                                  f"{self.cfg.name}; available: {', '.join(self.sources)}")
        source, sha256 = self.sources[version]
        return [Download("url", source, self.files[version], sha256)]

    def data_file(self) -> Path:
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
        self._md5 = md5
        self._path = path
        self._dataset = Dataset(tasks=tasks, path=path, sha256=sha256_file(path),
                                version=str(self.cfg.version), extra={"md5": md5})
        return self._dataset

    def extract_code(self, task: Task, completion: str, mode: str) -> str:
        """EvalPlus codegen's ``sanitize`` (see :mod:`benchforge.answers.evalplus`)."""
        if mode == "completion":
            return evalplus_answers.completion_solution(task.data["prompt"], completion,
                                                        task.data["entry_point"], self.kind)
        return evalplus_answers.chat_solution(completion, task.data["entry_point"])

    def stop_sequences(self, mode: str) -> list[str]:
        """EvalPlus's vLLM stop strings for base models (4 sent, all cut client-side)."""
        return evalplus_answers.completion_stops(self.kind) if mode == "completion" else []

    def rescoring_code(self, task: Task, row: dict[str, Any]) -> str | None:
        """evalplus.evaluate: ``solution`` as is, ``completion`` as prompt + completion."""
        return evalplus_answers.rescoring_solution(task.data["prompt"], row)

    # ------------------------------------------------------------------------ ground truth
    def ground_truth(self) -> dict[str, dict[str, list[Any]]]:
        """Expected outputs and reference times of every task (big: read only to make
        fixtures)."""
        if not hasattr(self, "_md5"):
            self.load()
        failed = getattr(self, "_truth_failed", None)
        if failed is not None:  # computed once: every scoring thread gets the same error
            raise failed
        cache = self.cache_dir / f"evalplus-{self.kind}-{self._md5}-{socket.gethostname()}.pkl"
        if not cache.is_file():
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BenchforgeError(f"data.cache={self.cache_dir}: cannot create it "
                                      f"({exc.strerror})") from None
            _remove_stale_temp(cache)
            proc = subprocess.run(
                [sys.executable, "-m", "benchforge.benchmarks._groundtruth", self.kind,
                 str(self._path), str(cache)], capture_output=True, text=True)
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
                self._truth_failed = BenchforgeError(
                    f"data.cache={self.cache_dir}: computing the {self.cfg.name} expected "
                    f"outputs into {cache.name} (~{GROUND_TRUTH_MB.get(self.kind, 100)} MB) "
                    f"failed: {lines[-1]}; free space there or set data.cache to another "
                    "disk, then rerun")
                raise self._truth_failed
        with open(cache, "rb") as fh:
            return pickle.load(fh)  # written by benchforge itself, never downloaded

    @cached_property
    def _support(self) -> str:
        return support_source()

    @cached_property
    def fixtures(self) -> dict[str, tuple[str, list[dict[str, Any]]]]:
        with _FIXTURES_LOCK:  # scoring threads ask at once: one computes, the others wait
            if "_fixtures" not in self.__dict__:
                self.__dict__["_fixtures"] = self._make_fixtures()
            return self.__dict__["_fixtures"]

    def _make_fixtures(self) -> dict[str, tuple[str, list[dict[str, Any]]]]:
        """Per task: a file with its inputs, expected outputs and per-input limits (read by the
        sandbox child before the sample runs, so nothing big crosses the worker pipe and each
        child holds only its own task), and the suites' wall limits."""
        floor = float(self.cfg.get("min_time_limit_s") or 1.0)
        factor = float(self.cfg.get("time_factor") or 4.0)
        tasks = (self._dataset if hasattr(self, "_dataset") else self.load()).tasks
        folder = (self.cache_dir / f"evalplus-{self.kind}-{self._md5}-{socket.gethostname()}"
                  f"-fixtures-{floor:g}-{factor:g}")
        index_path = folder / "index.json"
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        if all(t.task_id in index and Path(index[t.task_id][0]).exists() for t in tasks):
            return {t.task_id: tuple(index[t.task_id]) for t in tasks}  # type: ignore[misc]
        truth = self.ground_truth()
        out: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        for task in tasks:
            entry = truth[task.task_id]
            suites, data = [], {}
            for name in SUITES:
                limits = [max(floor, factor * t) for t in entry[f"{name}_time"]]
                data[name] = {"inputs": task.data[f"{name}_input"], "expected": entry[name],
                              "time_limits": limits}
                suites.append({"name": name,
                               "wall_s": min(SUITE_CAP_S, sum(limits)) + SUITE_SLACK_S})
            path = folder / f"{task.task_id.replace('/', '_')}.pkl"
            if not path.exists():
                write_atomic(path, pickle.dumps(data))
            out[task.task_id] = (str(path), suites)
        write_atomic(index_path, json.dumps({**index, **out}))
        return out

    def check_program(self, task: Task, code: str) -> CheckProgram:
        fixture, suites = self.fixtures[task.task_id]
        return CheckProgram(code=code, entry_point=task.data["entry_point"], differential={
            "dataset": self.kind, "atol": task.data["atol"], "support_source": self._support,
            "fixture": fixture, "suites": suites})

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
            if failing is not None:  # what the reference returned, and what the sample did
                fields[f"{name}_fail_expected"] = extra.get(f"{name}_fail_expected")
                fields[f"{name}_fail_actual"] = extra.get(f"{name}_fail_actual")
        return fields

    def serialize_input(self, task: Task, value: Any) -> str:
        return shorten(repr(value))
