"""HumanEval+ (EvalPlus): HumanEval's 164 tasks with base and extended "plus" inputs."""

from typing import ClassVar

from benchforge.benchmarks import register
from benchforge.benchmarks._evalplus import EvalPlusBenchmark


@register("humanevalplus")
class HumanEvalPlus(EvalPlusBenchmark):
    """HumanEval+ as EvalPlus 0.3.1 grades it (base and plus inputs against the reference's
    outputs); the shared behaviour is :class:`~benchforge.benchmarks._evalplus.EvalPlusBenchmark`.
    """

    kind = "humaneval"
    files: ClassVar[dict[str, str]] = {"v0.1.10": "humanevalplus/HumanEvalPlus.jsonl.gz",
             "v0.1.9": "humanevalplus/v0.1.9/HumanEvalPlus.jsonl.gz"}
    sources: ClassVar[dict[str, tuple[str, str]]] = {
        "v0.1.10": ("evalplus/humanevalplus_release/200defce9e3429d28ca215b6dd061c0f7f31c18b/"
                    "HumanEvalPlus.jsonl.gz",
                    "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101"),
        "v0.1.9": ("evalplus/humanevalplus_release/1e96903185780a2659be407d0ecdc5650e3957e8/"
                   "HumanEvalPlus.jsonl.gz",
                   "e62f4130146963d969da64553f407a66e52d095adbfed4ee6733b4d59e14a3ed"),
    }
