"""What HumanEval-style benchmarks share: a function prompt completed by the model.

Chat models get EvalPlus's instruction around the prompt; base models complete the prompt.
The reference answer is the prompt plus the canonical solution.
"""

from __future__ import annotations

from benchforge.benchmarks import Benchmark, Task
from benchforge.config import Mode
from benchforge.prompts import Prompt

# The instruction EvalPlus's codegen gives chat models, so scores compare with its leaderboard.
INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem "
    "in a markdown code block:"
)


class FunctionBenchmark(Benchmark):
    """Tasks with ``prompt`` (signature + docstring) and ``canonical_solution`` (the body)."""

    def prompt(self, task: Task, mode: str) -> Prompt:
        if mode == Mode.completion:
            return Prompt(text=task.data["prompt"])
        body = task.data["prompt"].strip()
        return Prompt(messages=(("user", f"{INSTRUCTION}\n```\n{body}\n```\n"),))

    def reference_completion(self, task: Task, mode: str) -> str:
        if mode == Mode.completion:
            return task.data["canonical_solution"]
        return f"```python\n{self.reference_code(task)}```\n"

    def reference_code(self, task: Task) -> str:
        return task.data["prompt"] + task.data["canonical_solution"]
