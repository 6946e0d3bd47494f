"""LiveCodeBench code generation (code_generation_lite), graded as lcb_runner does.

Data: the official HF dataset files under ``<data.root>/livecodebench/code_generation_lite/``
(``test.jsonl``, ``test2.jsonl``, ... ``test6.jsonl``); ``benchmark.version`` picks them:
``release_vN`` = files 1..N, ``vN`` = file N only, ``vA_vB`` = files A..B. Private tests are
base64(zlib(pickle(json))) and are decoded with a restricted unpickler that admits only plain
builtin data. Problems whose ``contest_date`` is before the model's ``release_date``
(``benchmark.cutoff``) are flagged ``contaminated``; the headline score excludes them by
default and both numbers are reported.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import pickle
import re
import zlib
from functools import cached_property
from pathlib import Path
from typing import Any

from benchforge.benchmarks import Benchmark, Dataset, Download, Task, register, shorten
from benchforge.benchmarks import _lcb_grader as grader
from benchforge.benchmarks import _lcb_guard as guard
from benchforge.config import Mode
from benchforge.errors import BenchforgeError
from benchforge.prompts import Prompt
from benchforge.rundir import sha256_file
from benchforge.sandbox.types import CheckProgram

DATA_DIR = "livecodebench/code_generation_lite"
HF_DATASET = "livecodebench/code_generation_lite"
TEST_TIMEOUT_S = 6  # lcb_runner's per-test timeout
SYSTEM = ("You are an expert Python programmer. You will be given a question (problem "
          "specification) and will generate a correct Python program that matches the "
          "specification and passes all tests. You will NOT return anything except for the "
          "program.")
WITH_STARTER = ("You will use the following starter code to write the solution to the problem "
                "and enclose your code within delimiters.")
WITHOUT_STARTER = ("Read the inputs from stdin solve the problem and write the answer to stdout "
                   "(do not directly test on the sample inputs). Enclose your code within "
                   "delimiters as follows.")


class RestrictedUnpickler(pickle.Unpickler):
    """Plain data only: str, bytes, numbers, lists, tuples, dicts, sets. Anything that needs a
    global (a class, a function, a reduce) is refused instead of executed."""

    def find_class(self, module: str, name: str) -> Any:
        """Refuse every global: the test data may only hold plain values.

        Raises:
            pickle.UnpicklingError: always, naming ``module.name``.
        """
        raise pickle.UnpicklingError(f"refused to load {module}.{name} from test data")


def decode_private_tests(blob: str) -> list[dict[str, Any]]:
    """The private test cases of a row: plain JSON, or (the released files) JSON
    inside a pickle, zlib-compressed and base64-encoded, as lcb_runner's
    ``benchmarks/code_generation.py`` decodes ``private_test_cases`` (with
    :class:`RestrictedUnpickler`, so the pickle cannot run code).

    Returns:
        a list of ``{"input", "output", "testtype"}`` dicts.

    Raises:
        pickle.UnpicklingError: the pickle names a global (refused); zlib/binascii errors for a
            corrupt blob (the caller turns both into one-line errors).
    """
    try:
        return json.loads(blob)
    except json.JSONDecodeError:
        pass
    raw = zlib.decompress(base64.b64decode(blob.encode("utf-8")))
    value = RestrictedUnpickler(io.BytesIO(raw)).load()
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def version_files(version: str) -> list[str]:
    """The data files of ``benchmark.version``, as the Hub dataset's loading script
    (``livecodebench/code_generation_lite``, ``code_generation_lite.py``) maps versions:
    ``release_vN`` = ``test.jsonl`` ... ``testN.jsonl`` (cumulative), ``vN`` = that release's file
    alone, ``vA_vB`` = releases A to B.

    Raises:
        BenchforgeError: any other version string.
    """
    def name(i: int) -> str:
        return "test.jsonl" if i == 1 else f"test{i}.jsonl"

    if m := re.fullmatch(r"release_v(\d+)", version):
        return [name(i) for i in range(1, int(m.group(1)) + 1)]
    if m := re.fullmatch(r"v(\d+)", version):
        return [name(int(m.group(1)))]
    if m := re.fullmatch(r"v(\d+)_v(\d+)", version):
        return [name(i) for i in range(int(m.group(1)), int(m.group(2)) + 1)]
    raise BenchforgeError(
        f"benchmark.version={version}: expected release_vN, vN or vA_vB (e.g. release_v6)")


def extract_last_block(text: str) -> str:
    """lcb_runner's extract_code: the text between the last two lines holding ```."""
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return ""
    return "\n".join(lines[fences[-2] + 1: fences[-1]])


@register("livecodebench")
class LiveCodeBench(Benchmark):
    """LiveCodeBench code generation graded as lcb_runner does, with the contamination window of
    ``benchmark.cutoff`` (see the module docstring)."""

    per_test_time_limits = True
    has_references = False

    def downloads(self) -> list[Download]:
        return [Download("hf_dataset", HF_DATASET, DATA_DIR,
                         files=tuple(version_files(str(self.cfg.version))))]

    def load(self) -> Dataset:
        folder = (Path(str(self.cfg.path)).expanduser() if self.cfg.get("path")
                  else self.data_root / DATA_DIR)
        files = [folder / f for f in version_files(str(self.cfg.version))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise BenchforgeError(
                f"{missing[0]}: LiveCodeBench {self.cfg.version} data not found; run "
                f"`benchforge stage benchmark=livecodebench` (HF dataset {HF_DATASET}) or set "
                "data.root")
        tasks = []
        for path in files:
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if line.strip():
                        tasks.append(self._task(json.loads(line), path, lineno))
        digest = "".join(sha256_file(f) for f in files)
        return Dataset(tasks=self.limited(tasks), path=folder, sha256=digest[:64],
                       version=str(self.cfg.version),
                       extra={"files": {f.name: sha256_file(f) for f in files},
                              "cutoff": self.cutoff})

    def _task(self, row: dict[str, Any], path: Path, lineno: int) -> Task:
        try:
            public = json.loads(row["public_test_cases"])
            private = decode_private_tests(row["private_test_cases"])
            metadata = json.loads(row.get("metadata") or "{}")
        except (KeyError, ValueError, zlib.error, pickle.UnpicklingError) as exc:
            raise BenchforgeError(f"{path}:{lineno}: bad LiveCodeBench row ({exc})") from exc
        tests = public + private
        data = dict(row, tests={"inputs": [t["input"] for t in tests],
                                "outputs": [t["output"] for t in tests],
                                "fn_name": metadata.get("func_name")})
        return Task(str(row["question_id"]), data)

    @property
    def cutoff(self) -> str | None:
        """``benchmark.cutoff`` (``YYYY-MM-DD``; defaults to ``model.release_date``),
        or None when unset: no problem counts as contaminated.
        """
        return str(self.cfg.cutoff) if self.cfg.get("cutoff") else None

    def contaminated(self, task: Task) -> bool:
        """Whether ``task``'s contest date is before the cutoff (the model may
        have seen it); compared on the ``YYYY-MM-DD`` prefix. Flagged per results row; the headline
        score leaves these out when ``aggregate.exclude_contaminated`` is true.
        """
        return bool(self.cutoff) and str(task.data["contest_date"])[:10] < str(self.cutoff)[:10]

    def prompt(self, task: Task, mode: str) -> Prompt:
        data = task.data
        text = f"### Question:\n{data['question_content']}\n\n"
        if data.get("starter_code"):
            text += f"### Format: {WITH_STARTER}\n```python\n{data['starter_code']}\n```\n\n"
        else:
            text += f"### Format: {WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
        text += "### Answer: (use the provided format with backticks)\n\n"
        if mode == Mode.completion:
            return Prompt(text=f"{SYSTEM}\n\n{text}")
        return Prompt(messages=(("system", SYSTEM), ("user", text)))

    def reference_completion(self, task: Task, mode: str) -> str:
        raise BenchforgeError("LiveCodeBench has no reference solutions (model=oracle cannot "
                              "run on it)")

    def extract_code(self, task: Task, completion: str, mode: str) -> str:
        return extract_last_block(completion)

    def reference_code(self, task: Task) -> str | None:
        return None

    @cached_property
    def _grader(self) -> str:
        return inspect.getsource(grader)

    @property
    def fixed_harness(self) -> bool:
        """``benchmark.lcb_fixes``: grade with lcb_runner's harness bugs corrected (README)."""
        return bool(self.cfg.get("lcb_fixes"))

    @cached_property
    def _guard(self) -> str:
        return inspect.getsource(guard) + f"\nFIXED = {self.fixed_harness!r}\n"

    def check_program(self, task: Task, code: str) -> CheckProgram:
        tests = task.data["tests"]
        call = (f"\ngrade(__solution__, {tests['inputs']!r}, {tests['outputs']!r}, "
                f"{tests['fn_name']!r}, {TEST_TIMEOUT_S}, {self.fixed_harness!r})\n")
        # lcb_runner: the whole check gets (timeout + 1) s per test, plus 5 s.
        wall = (TEST_TIMEOUT_S + 1) * len(tests["inputs"]) + 5
        return CheckProgram(code=f"__solution__ = {code!r}\n", test=self._grader + call,
                            guard_source=self._guard, time_limit_s=float(wall))

    def result_fields(self, task: Task, extra: dict[str, Any]) -> dict[str, Any]:
        return {"contaminated": self.contaminated(task),
                "difficulty": task.data.get("difficulty"),
                "contest_date": task.data.get("contest_date")}

    def prejudge(self, task: Task, code: str) -> dict[str, Any] | None:
        return None

    def failure_fields(self, task: Task, code: str, detail: str) -> dict[str, Any]:
        """The failing test (the grader names it ``test <i>``) and, for stdin/stdout, the
        first differing line the grader quotes."""
        found = re.search(r"\btest (\d+)\b", detail)
        tests = task.data["tests"]
        if not found or int(found.group(1)) >= len(tests["inputs"]):
            return {}
        index = int(found.group(1))
        lines = re.search(r"test \d+: (.*) != (.*)$", detail)
        return {"fail_input": shorten(tests["inputs"][index]),
                "fail_expected": shorten(tests["outputs"][index]),
                "fail_actual": lines.group(1) if lines else None}
