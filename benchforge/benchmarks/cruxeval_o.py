"""CRUXEval-O: given f and an input, predict the output (800 tasks)."""

from benchforge.benchmarks import register
from benchforge.benchmarks._cruxeval import CruxEval


@register("cruxeval_o")
class CruxEvalOutput(CruxEval):
    mode = "output"
