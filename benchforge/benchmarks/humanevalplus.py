"""HumanEval+ (EvalPlus): HumanEval's 164 tasks with base and extended "plus" inputs."""

from typing import ClassVar

from benchforge.benchmarks import register
from benchforge.benchmarks._evalplus import EvalPlusBenchmark


@register("humanevalplus")
class HumanEvalPlus(EvalPlusBenchmark):
    kind = "humaneval"
    files: ClassVar[dict[str, str]] = {"v0.1.10": "humanevalplus/HumanEvalPlus.jsonl.gz",
             "v0.1.9": "humanevalplus/v0.1.9/HumanEvalPlus.jsonl.gz"}
