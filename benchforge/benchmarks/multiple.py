"""MultiPL-E: HumanEval translated to other languages, scored by running each toolchain.

One benchmark per language (``multiple_cpp``, ``multiple_java``, ``multiple_js``,
``multiple_go``, ``multiple_rs``, ``multiple_py``; ``benchmark.language`` is the dataset's
language field). Rows are the Hub dataset ``nuprl/MultiPL-E`` config ``humaneval-<lang>``
(fields ``name, language, prompt, doctests, original, prompt_terminology, tests,
stop_tokens``), staged at a pinned revision (``benchmark.version``) by ``benchforge stage``.

Generation follows MultiPL-E: completion mode sends ``prompt`` and stops at the row's
``stop_tokens``; the completion is cut at the first stop token (MultiPL-E's
``stop_at_stop_token``) and the program is ``prompt + completion + "\\n" + tests``
(``evaluation/src/main.py``). Chat mode (no official protocol) asks for the completed function
in a code block, drops the echoed prompt and applies the same stop-token cut. Execution and
verdict rules are MultiPL-E's per-language evaluation scripts (:mod:`._multiple_runner`), run
inside benchforge's sandbox. Tier 2: scoring waits for the readiness gate
(:mod:`benchforge.readiness`).
"""

from __future__ import annotations

import glob
import inspect
import os
import re
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any

from benchforge.benchmarks import (
    Benchmark,
    Dataset,
    Download,
    Task,
    read_dataset_rows,
    register,
    staged_commit,
)
from benchforge.benchmarks import _multiple_runner as runner
from benchforge.config import Mode
from benchforge.errors import BenchforgeError
from benchforge.prompts import Prompt
from benchforge.rundir import sha256_file
from benchforge.sandbox.types import CheckProgram

# A fenced block of a chat answer: its language tag and its body (an unclosed last fence runs to
# the end). MultiPL-E defines no chat protocol; this one is benchforge's own (README).
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)

HF_DATASET = "nuprl/MultiPL-E"
DATA_DIR = "multiple"
ROW_FIELDS = ("name", "language", "prompt", "doctests", "original", "prompt_terminology",
              "tests", "stop_tokens")
# benchforge short name -> (dataset language field, config suffix, display name, fence tag)
LANGUAGES = {
    "cpp": ("cpp", "cpp", "C++", "cpp"),
    "java": ("java", "java", "Java", "java"),
    "js": ("js", "js", "JavaScript", "javascript"),
    "go": ("go_test.go", "go", "Go", "go"),
    "rs": ("rs", "rs", "Rust", "rust"),
    "py": ("py", "py", "Python", "python"),
}
# The executables each language's evaluation script calls (rustc links through cc).
TOOLS = {"cpp": ("g++",), "java": ("javac", "java"), "js": ("node",), "go": ("go",),
         "rs": ("rustc", "cc"), "py": ("python3",)}
# Wall limit of one sample: the official per-step limits, plus start-up slack.
WALL_S = {"cpp": 35.0, "java": 35.0, "js": 10.0, "go": 35.0, "rs": 25.0, "py": 20.0}
# Debian packages holding each toolchain (what the readiness gate tells a user to install).
APT = {"cpp": "g++", "java": "default-jdk-headless libjavatuples-java", "js": "nodejs",
       "go": "golang-go", "rs": "rustc", "py": "python3"}
# Host config directories a toolchain reads at run time (Debian's JDK links its conf/ here).
HOST_CONFIG = {"java": ("/etc/java-*",)}
# A known-good program per language, shaped like a MultiPL-E row (prompt + completion + tests):
# the readiness gate compiles and runs it in the scoring sandbox.
SMOKE = {
    "cpp": "#include<assert.h>\n#include<bits/stdc++.h>\nlong add(long x, long y) {\n"
           "    return x + y;\n}\nint main() {\n    auto candidate = add;\n"
           "    assert(candidate((2), (3)) == (5));\n}\n",
    "java": "import java.util.*;\nimport org.javatuples.*;\nclass Problem {\n"
            "    public static long add(long x, long y) {\n        return x + y;\n    }\n"
            "    public static void main(String[] args) {\n"
            "    assert(add((2l), (3l)) == (5l));\n"
            "    assert(Pair.with(1l, 2l).getValue1() == 2l);\n    }\n\n}\n",
    "js": "function add(x, y){\n  return x + y;\n}\n\nconst assert = require('node:assert');\n"
          "function test() {\n  let candidate = add;\n  assert.deepEqual(candidate(2, 3),5);\n}\n"
          "\ntest();\n",
    "go": "package add_test\n\nimport (\n    \"testing\"\n    \"fmt\"\n)\n\nfunc add(x int, y int) "
          "int {\n    return x + y\n}\n\nfunc TestAdd(t *testing.T) {\n  candidate := add\n"
          "  if fmt.Sprintf(\"%v\", candidate(2, 3)) != \"5\" {\n    t.Errorf(\"add\")\n  }\n}\n",
    "rs": "fn add(x: isize, y: isize) -> isize {\n    x + y\n}\n\nfn main() {\n"
          "    let candidate = add;\n    assert_eq!(candidate(2, 3), 5);\n}\n",
    "py": "def add(x: int, y: int) -> int:\n    return x + y\n\ndef check(candidate):\n"
          "    assert candidate(2, 3) == 5\n\ncheck(add)\n",
}


def stop_at_stop_token(text: str, stop_tokens: list[str]) -> str:
    """MultiPL-E's cut: ``text`` up to the earliest occurrence of any stop token."""
    cut = min((i for i in (text.find(s) for s in stop_tokens) if i != -1), default=len(text))
    return text[:cut]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of one MultiPL-E config file: the Hub's parquet, or JSON lines in the same format."""
    return read_dataset_rows(path, ROW_FIELDS, "MultiPL-E")


@register("multiple")
class MultiPLE(Benchmark):
    """One MultiPL-E language (``benchmark.language``), scored with MultiPL-E's own execution rules
    for it in the sandbox (tier 2: after the readiness gate)."""

    per_test_time_limits = True  # the evaluation scripts' own fixed limits
    has_references = False  # MultiPL-E ships prompts and tests, no solutions
    tier = 2
    container = "multiple.def"  # the scorer container holding every language's toolchain

    @property
    def short(self) -> str:
        """``benchmark.language``: the short name (``cpp``, ``java``, ``js``, ``go``, ``rs``,
        ``py``) that keys :data:`LANGUAGES`.

        Raises:
            BenchforgeError: a language MultiPL-E support here does not cover.
        """
        language = str(self.cfg.get("language") or "")
        if language not in LANGUAGES:
            raise BenchforgeError(f"benchmark.language={language or None}: expected one of "
                                  f"{', '.join(LANGUAGES)}")
        return language

    @property
    def language(self) -> str:
        """The dataset's ``language`` field (``go_test.go`` for Go)."""
        return LANGUAGES[self.short][0]

    @property
    def data_file(self) -> str:
        """The parquet file of this language's ``humaneval-<lang>`` config inside the Hub
        dataset.
        """
        return f"humaneval-{LANGUAGES[self.short][1]}/test/0000.parquet"

    def downloads(self) -> list[Download]:
        return [Download("hf_dataset", HF_DATASET, DATA_DIR, files=(self.data_file,),
                         revision=str(self.cfg.version))]

    def load(self) -> Dataset:
        path = (Path(str(self.cfg.path)).expanduser() if self.cfg.get("path")
                else self.data_root / DATA_DIR / self.data_file)
        if not path.is_file():
            raise BenchforgeError(
                f"{path}: MultiPL-E data not found; run `benchforge stage "
                f"benchmark={self.cfg.name}` (HF dataset {HF_DATASET}@{self.cfg.version}) or set "
                "data.root / benchmark.path")
        rows = read_rows(path)
        wrong = sorted({str(r["language"]) for r in rows} - {self.language})
        if wrong:
            raise BenchforgeError(f"{path}: rows of language {wrong[0]!r}, but "
                                  f"benchmark={self.cfg.name} expects {self.language!r}")
        tasks = [Task(str(r["name"]), r) for r in rows]
        self._stops = sorted({s for r in rows for s in r["stop_tokens"]})
        digest = sha256_file(path)
        return Dataset(tasks=self.limited(tasks), path=path, sha256=digest,
                       version=str(self.cfg.version),
                       extra={"hf_dataset": HF_DATASET, "config": f"humaneval-{self.short}",
                              "hf_commit": staged_commit(path, digest),
                              "language": self.language})

    def stop_sequences(self, mode: str) -> list[str]:
        if mode != Mode.completion:
            return []
        if not hasattr(self, "_stops"):
            self.load()
        return list(self._stops)

    def prompt(self, task: Task, mode: str) -> Prompt:
        if mode == Mode.completion:
            return Prompt(text=task.data["prompt"])
        name, fence = LANGUAGES[self.short][2], LANGUAGES[self.short][3]
        text = (f"Complete the following {name} function. Reply with the whole function, "
                f"starting with the code below, in one ```{fence} code block.\n\n"
                f"```{fence}\n{task.data['prompt']}\n```\n")
        return Prompt(messages=(("user", text),))

    def reference_completion(self, task: Task, mode: str) -> str:
        """Test fixtures only: rows may carry a ``fixture_completion`` (not an official field)
        for the oracle to serve; the official dataset has no solutions."""
        completion = task.data.get("fixture_completion")
        if completion is None:
            raise BenchforgeError("MultiPL-E has no reference solutions (model=oracle cannot "
                                  "run on it)")
        if mode == Mode.completion:
            return str(completion)
        fence = LANGUAGES[self.short][3]
        return f"```{fence}\n{task.data['prompt']}{completion}\n```\n"

    def extract_code(self, task: Task, completion: str, mode: str) -> str:
        """The completion MultiPL-E would evaluate (the part after the prompt, cut at the first
        stop token); the sandbox program is ``prompt + this + "\\n" + tests``."""
        prompt, stops = task.data["prompt"], list(task.data["stop_tokens"])
        if mode == Mode.completion:
            return stop_at_stop_token(completion, stops)
        blocks = [body for _, body in _FENCE.findall(completion)] or [completion]
        body = next((b for b in blocks if prompt.strip() in b), blocks[0])
        at = body.find(prompt.strip())
        if at != -1:
            body = body[at + len(prompt.strip()):]
            body = body[1:] if body.startswith("\n") and prompt.endswith("\n") else body
        return stop_at_stop_token(body, stops)

    def reference_code(self, task: Task) -> str | None:
        return None

    @cached_property
    def _runner(self) -> str:
        return inspect.getsource(runner)

    @cached_property
    def tools(self) -> dict[str, str | None]:
        """Each executable the language needs, resolved on this host (None: not found)."""
        found = {}
        for name in TOOLS[self.short]:
            path = shutil.which(name, path=os.defpath + ":/usr/local/bin")
            found[name] = os.path.realpath(path) if path else None
        return found

    def sandbox_paths(self) -> list[str]:
        """Host directories the toolchain reads, bound read-only into the sandbox view."""
        return sorted(p for pattern in HOST_CONFIG.get(self.short, ())
                      for p in glob.glob(pattern) if os.path.isdir(p))

    def program(self, task: Task, code: str) -> str:
        """The whole program MultiPL-E runs: ``prompt + code + "\n" + tests``
        (``evaluation/src/main.py``).
        """
        return task.data["prompt"] + code + "\n" + task.data["tests"]

    def runner_program(self, program: str) -> CheckProgram:
        """Any whole program of this language, judged by MultiPL-E's rules in the sandbox."""
        call = f"\nevaluate(__program__, {self.language!r}, {self.tools!r})\n"
        return CheckProgram(code=f"__program__ = {program!r}\n", test=self._runner + call,
                            time_limit_s=WALL_S[self.short])

    def check_program(self, task: Task, code: str) -> CheckProgram:
        return self.runner_program(self.program(task, code))

    def smoke_program(self) -> CheckProgram:
        """The readiness gate's known-good program for this language (a small
        passing program with tests), judged by the same runner as a sample.
        """
        return self.runner_program(SMOKE[self.short])

    def requirements(self) -> list[dict[str, Any]]:
        """What the readiness gate checks in the sandbox (see :mod:`benchforge.readiness`)."""
        needs: list[dict[str, Any]] = [
            {"kind": "executable", "name": name, "path": path,
             "install": f"apt-get install -y {APT[self.short]}"}
            for name, path in self.tools.items()]
        if self.short == "java":
            needs.append({"kind": "file", "name": "javatuples-1.2.jar",
                          "paths": list(runner.JAVATUPLES),
                          "install": "apt-get install -y libjavatuples-java"})
        return needs

    def failure_fields(self, task: Task, code: str, detail: str) -> dict[str, Any]:
        status = detail.split("status=", 1)[1].split()[0] if "status=" in detail else None
        return {"fail_input": None, "fail_expected": "status=OK exit_code=0",
                "fail_actual": f"status={status}" if status else None}
