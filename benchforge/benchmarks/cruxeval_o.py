"""CRUXEval-O: given f and an input, predict the output (800 tasks)."""

from benchforge.benchmarks import register
from benchforge.benchmarks._cruxeval import CruxEval


@register("cruxeval_o")
class CruxEvalOutput(CruxEval):
    """CRUXEval-O: predict the output of ``f`` for a given input (see
    :mod:`benchforge.benchmarks._cruxeval`)."""

    predict = "output"
