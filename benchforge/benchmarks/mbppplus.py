"""MBPP+ (EvalPlus): sanitized MBPP tasks with base and extended "plus" inputs."""

from typing import Any, ClassVar

from benchforge.benchmarks import Task, register
from benchforge.benchmarks._evalplus import EvalPlusBenchmark


@register("mbppplus")
class MbppPlus(EvalPlusBenchmark):
    """MBPP+ as EvalPlus 0.3.1 grades it; the shared behaviour is
    :class:`~benchforge.benchmarks._evalplus.EvalPlusBenchmark`."""

    kind = "mbpp"
    files: ClassVar[dict[str, str]] = {"v0.2.0": "mbppplus/MbppPlus.jsonl.gz",
             "v0.1.0": "mbppplus/v0.1.0/MbppPlus.jsonl.gz"}
    sources: ClassVar[dict[str, tuple[str, str]]] = {
        "v0.2.0": ("evalplus/mbppplus_release/dadf43da556a00f7bacd71cb154f2932757d9144/"
                   "MbppPlus.jsonl.gz",
                   "af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63"),
        "v0.1.0": ("evalplus/mbppplus_release/f995b084ce4658b7647d6f4a91cd93626faeee75/"
                   "MbppPlus.jsonl.gz",
                   "57d639e77667d88930052b2b07212011c25c0bab94dfc1f19d15e1f7f558bfa9"),
    }

    def serialize_input(self, task: Task, value: Any) -> str:
        """An MBPP+ input as evalplus writes it (``mbpp_serialize_inputs``: tasks 115, 124
        and 252 get their special encoding, others are unchanged), then as the base class."""
        from evalplus.data.mbpp import mbpp_serialize_inputs

        return super().serialize_input(task, mbpp_serialize_inputs(task.task_id, [value])[0])
