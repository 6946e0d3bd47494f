"""MBPP+ (EvalPlus): sanitized MBPP tasks with base and extended "plus" inputs."""

from typing import Any, ClassVar

from benchforge.benchmarks import Task, register
from benchforge.benchmarks._evalplus import EvalPlusBenchmark


@register("mbppplus")
class MbppPlus(EvalPlusBenchmark):
    kind = "mbpp"
    files: ClassVar[dict[str, str]] = {"v0.2.0": "mbppplus/MbppPlus.jsonl.gz",
             "v0.1.0": "mbppplus/v0.1.0/MbppPlus.jsonl.gz"}

    def serialize_input(self, task: Task, value: Any) -> str:
        from evalplus.data.mbpp import mbpp_serialize_inputs

        return super().serialize_input(task, mbpp_serialize_inputs(task.task_id, [value])[0])
