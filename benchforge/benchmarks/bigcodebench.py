"""BigCodeBench (tier 2): function-level tasks over 139 libraries, graded by unittest suites.

``benchmark=bigcodebench`` (subset ``full``) or ``bigcodebench_hard`` (``hard``);
``benchmark.variant`` is the split (``complete`` | ``instruct``). Rows are the Hub datasets
``bigcode/bigcodebench`` / ``bigcode/bigcodebench-hard``, split ``benchmark.version``
(``v0.1.4``, bigcodebench 0.2.5's ``BIGCODEBENCH_VERSION``; ``v0.1.4@<commit>`` also pins the
dataset commit), fields ``task_id, complete_prompt, instruct_prompt, canonical_solution,
code_prompt, test, entry_point, doc_struct, libs``; staged by ``benchforge stage``.

Prompts, stop strings and code extraction: :mod:`benchforge.answers.bigcodebench`. Scoring:
:mod:`._bcb_runner` (bigcodebench's ``untrusted_check``) inside benchforge's sandbox, with the
official limits (``max_as_limit``/``max_data_limit`` 30 GiB and ``max_stack_limit`` 10 MiB,
lowered to the sandbox's where those are lower; ``TIMEOUT_LIMIT`` 240 s for the test suite,
``benchmark.timeout_s``; wall limit = suite limit + 1 s, as ``p.join(timeout + 1)``, plus
:data:`SETUP_ALLOWANCE_S` for the imports a sandboxed sample cannot inherit).
Tier 2: scoring waits for the readiness gate (:mod:`benchforge.readiness`), which checks the
pinned libraries (``benchmark.pins``, from bigcodebench's ``Requirements/requirements-eval.txt``)
that the loaded tasks import.
"""

from __future__ import annotations

import ast
import inspect
import sys
from functools import cached_property
from pathlib import Path
from typing import Any

from benchforge.answers import bigcodebench as answers
from benchforge.benchmarks import (
    Benchmark,
    Dataset,
    Download,
    Task,
    pin_table,
    python_requirement,
    read_dataset_rows,
    register,
    staged_commit,
)
from benchforge.benchmarks import _bcb_runner as runner
from benchforge.config import Mode
from benchforge.errors import BenchforgeError
from benchforge.prompts import Prompt
from benchforge.rundir import sha256_file
from benchforge.sandbox.types import CheckProgram

SEMANTICS = "bigcodebench 0.2.5 (generate.py, sanitize.py, evaluate.py, eval/)"
HF_DATASETS = {"full": "bigcode/bigcodebench", "hard": "bigcode/bigcodebench-hard"}
DATA_DIR = "bigcodebench"
SPLITS = ("complete", "instruct")
ROW_FIELDS = ("task_id", "complete_prompt", "instruct_prompt", "canonical_solution",
              "code_prompt", "test", "entry_point", "libs")
# evaluate.py's defaults: max_as_limit, max_data_limit (MiB), max_stack_limit (MiB)
MEMORY_LIMITS = (30 * 1024, 30 * 1024, 10)
TIMEOUT_LIMIT = 240.0  # eval/utils.py (BIGCODEBENCH_TIMEOUT_PER_TASK)
MIN_TIME_LIMIT = 1.0  # evaluate.py --min_time_limit
# untrusted_check kills its child at timeout + 1 s after starting it; its child inherits the
# parent's imports, a sandboxed sample imports matplotlib itself (~1 s): that much more slack.
SETUP_ALLOWANCE_S = 2.0
MAX_NEW_TOKENS = 1280  # generate.py run_codegen's max_new_tokens
# Import name -> distribution, where they differ (the gate checks distributions).
DISTRIBUTIONS = {"bs4": "beautifulsoup4", "cv2": "opencv-python-headless", "PIL": "Pillow",
                 "sklearn": "scikit-learn", "skimage": "scikit-image", "yaml": "PyYAML",
                 "docx": "python-docx", "Crypto": "pycryptodome", "dateutil": "python-dateutil",
                 "dns": "dnspython", "faker": "Faker", "django": "Django",
                 "flask_mail": "Flask-Mail", "mpl_toolkits": "matplotlib", "tensorflow":
                 "tensorflow", "levenshtein": "Levenshtein", "Levenshtein": "Levenshtein"}
# The readiness gate's known-good task, shaped like a dataset row.
SMOKE = {
    "code": "import collections\ndef task_func(words):\n"
            "    return collections.Counter(words).most_common(1)[0][0]\n",
    "test": "import unittest\nclass TestCases(unittest.TestCase):\n"
            "    def test_case_1(self):\n"
            "        self.assertEqual(task_func(['a', 'b', 'a']), 'a')\n",
}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a BigCodeBench split: the Hub's parquet, or JSON lines in the same format."""
    return read_dataset_rows(path, ROW_FIELDS, "BigCodeBench")


def task_libs(row: dict[str, Any]) -> list[str]:
    """The row's ``libs`` (a Python list literal of import names, as the dataset stores it)."""
    libs = row.get("libs")
    if isinstance(libs, list):
        return [str(x) for x in libs]
    try:
        value = ast.literal_eval(str(libs))
    except (ValueError, SyntaxError):
        return []
    return [str(x) for x in value] if isinstance(value, list | tuple) else []


def official_status(passed: bool, detail: str) -> str:
    """bigcodebench's status of a benchforge verdict: ``pass``; ``fail`` (the runner ran to its
    end and reported failing tests or a raising program); ``timeout`` (no report: the wall
    limit, or the process died, where ``untrusted_check`` finds no status)."""
    if passed:
        return "pass"
    return "fail" if "status=fail failed=" in detail else "timeout"


@register("bigcodebench")
class BigCodeBench(Benchmark):
    """BigCodeBench (full or hard, complete or instruct) graded by its unittest suites as
    bigcodebench 0.2.5 does (tier 2: after the readiness gate); see the module docstring."""

    per_test_time_limits = True  # the official fixed limits
    tier = 2
    container = "bigcodebench.def"

    @property
    def subset(self) -> str:
        """``benchmark.subset``: ``full`` (1,140 tasks) or ``hard`` (148).

        Raises:
            BenchforgeError: any other value.
        """
        subset = str(self.cfg.get("subset") or "full")
        if subset not in HF_DATASETS:
            raise BenchforgeError(f"benchmark.subset={subset}: expected full or hard")
        return subset

    @property
    def split(self) -> str:
        """``benchmark.variant``, the BigCodeBench split: ``complete`` (docstring
        prompts) or ``instruct`` (natural-language instructions; chat models only).

        Raises:
            BenchforgeError: any other value.
        """
        split = str(self.cfg.get("variant") or "complete")
        if split not in SPLITS:
            raise BenchforgeError(f"benchmark.variant={split}: expected complete or instruct "
                                  "(the BigCodeBench split)")
        return split

    @property
    def dataset_split(self) -> str:
        """The dataset split named by ``benchmark.version`` (``v0.1.4`` of
        ``v0.1.4@<commit>``).
        """
        return str(self.cfg.version).partition("@")[0]

    @property
    def data_file(self) -> str:
        """The parquet file of :attr:`dataset_split` inside the Hub dataset
        (``data/<split>-00000-of-00001.parquet``).
        """
        return f"data/{self.dataset_split}-00000-of-00001.parquet"

    def downloads(self) -> list[Download]:
        revision = str(self.cfg.version).partition("@")[2] or None
        return [Download("hf_dataset", HF_DATASETS[self.subset], f"{DATA_DIR}/{self.subset}",
                         files=(self.data_file,), revision=revision)]

    def load(self) -> Dataset:
        path = (Path(str(self.cfg.path)).expanduser() if self.cfg.get("path")
                else self.data_root / DATA_DIR / self.subset / self.data_file)
        if not path.is_file():
            raise BenchforgeError(
                f"{path}: BigCodeBench data not found; run `benchforge stage "
                f"benchmark={self.cfg.name}` (HF dataset {HF_DATASETS[self.subset]}, split "
                f"{self.dataset_split}) or set data.root / benchmark.path")
        rows = read_rows(path)
        tasks = [Task(str(r["task_id"]), r) for r in rows]
        self._libs = sorted({lib for r in rows for lib in task_libs(r)})
        digest = sha256_file(path)
        return Dataset(tasks=self.limited(tasks), path=path, sha256=digest,
                       version=str(self.cfg.version),
                       extra={"hf_dataset": HF_DATASETS[self.subset], "subset": self.subset,
                              "hf_commit": staged_commit(path, digest),
                              "split": self.split, "semantics": SEMANTICS})

    def prompt(self, task: Task, mode: str) -> Prompt:
        if mode == Mode.completion:
            if self.split != "complete":
                raise BenchforgeError("BigCodeBench: a base model (model.mode=completion) "
                                      "cannot do the instruct split (bigcodebench refuses it "
                                      "too); use benchmark.variant=complete")
            return Prompt(text=task.data["complete_prompt"])
        text = answers.chat_prompt(task.data[f"{self.split}_prompt"], self.split)
        return Prompt(messages=(("user", text),))

    def stop_sequences(self, mode: str) -> list[str]:
        return answers.completion_stops() if mode == Mode.completion else []

    def max_tokens(self, mode: str) -> int | None:
        return MAX_NEW_TOKENS

    def solution(self, task: Task) -> str:
        """The task's solution as a whole program: a fixture row's ``fixture_solution`` (not an
        official field; tests only), else ``complete_prompt + "\\n" + canonical_solution``
        (how ``evaluate.py`` runs the ground truth)."""
        fixture = task.data.get("fixture_solution")
        if fixture is not None:
            return str(fixture)
        return task.data["complete_prompt"] + "\n" + task.data["canonical_solution"]

    def reference_completion(self, task: Task, mode: str) -> str:
        solution = self.solution(task)
        if mode == Mode.completion:
            prompt = task.data["complete_prompt"]
            if not solution.startswith(prompt):
                raise BenchforgeError(f"{task.task_id}: the oracle's solution does not extend "
                                      "complete_prompt (completion mode)")
            return solution[len(prompt):]
        return f"```python\n{solution}\n```\n"

    def extract_code(self, task: Task, completion: str, mode: str) -> str:
        entry = task.data["entry_point"]
        if mode == Mode.completion:
            return answers.completion_solution(task.data["complete_prompt"], completion, entry)
        return answers.chat_solution(completion, entry)

    def rescoring_code(self, task: Task, row: dict[str, Any]) -> str | None:
        """``evaluate.py``: ``solution`` as is, else ``complete_prompt + completion``."""
        if isinstance(row.get("solution"), str):
            return row["solution"]
        if isinstance(row.get("completion"), str):
            return task.data["complete_prompt"] + row["completion"]
        return None

    def reference_code(self, task: Task) -> str | None:
        return task.data["complete_prompt"] + "\n" + task.data["canonical_solution"]

    @property
    def suite_timeout_s(self) -> float:
        """``untrusted_check``'s ``timeout``: max(TIMEOUT_LIMIT, min_time_limit) + 1 (the
        ground-truth time enters only above TIMEOUT_LIMIT, where the ground truth fails)."""
        limit = self.cfg.get("timeout_s")
        return max(float(limit) if limit is not None else TIMEOUT_LIMIT, MIN_TIME_LIMIT) + 1

    @cached_property
    def _runner(self) -> str:
        return inspect.getsource(runner)

    def runner_program(self, code: str, test: str) -> CheckProgram:
        """``code`` and a unittest ``test`` judged like ``untrusted_check`` in the sandbox."""
        timeout = self.suite_timeout_s
        call = f"\nevaluate(__bcb_code__, __bcb_test__, {timeout!r}, {MEMORY_LIMITS!r})\n"
        return CheckProgram(code=f"__bcb_code__ = {code!r}\n__bcb_test__ = {test!r}\n",
                            test=self._runner + call,
                            time_limit_s=timeout + 1 + SETUP_ALLOWANCE_S)

    def check_program(self, task: Task, code: str) -> CheckProgram:
        return self.runner_program(answers.program(task.data["code_prompt"], code),
                                   task.data["test"])

    def smoke_program(self) -> CheckProgram:
        """The readiness gate's known-good program: a tiny task and its test
        run through :mod:`._bcb_runner`, as a sample would be; it passes iff the toolchain works.
        """
        return self.runner_program(SMOKE["code"], SMOKE["test"])

    def pins(self) -> dict[str, str | None]:
        """``benchmark.pins`` as ``{distribution: version or None}`` (from
        bigcodebench's ``Requirements/requirements-eval.txt``).
        """
        pins = self.cfg.get("pins") or {}
        return {str(k): (None if v is None else str(v)) for k, v in pins.items()}

    def requirements(self) -> list[dict[str, Any]]:
        """What the readiness gate checks in the sandbox: matplotlib (the official guard
        imports it), then every third-party library the loaded tasks import, at its pin."""
        if not hasattr(self, "_libs"):
            self.load()
        pins = pin_table(self.pins())
        needs: list[dict[str, Any]] = []
        seen: set[str] = set()
        for lib in ["matplotlib", *self._libs]:
            if lib in sys.stdlib_module_names or lib in seen:
                continue
            seen.add(lib)
            dist = DISTRIBUTIONS.get(lib, lib)
            if dist.lower() in pins:
                needs.append(python_requirement(*pins[dist.lower()]))
            else:
                needs.append({"kind": "module", "name": lib, "install":
                              f"a distribution providing the module {lib} (not pinned: add "
                              f"it to benchmark.pins)"})
        return needs

    def failure_fields(self, task: Task, code: str, detail: str) -> dict[str, Any]:
        first = detail.split("failed=", 1)[1].split("\n", 1)[0] if "failed=" in detail else None
        return {"fail_input": first, "fail_expected": "status=pass",
                "fail_actual": f"status={official_status(False, detail)}"}
