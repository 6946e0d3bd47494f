"""CRUXEval-I: given f and an output, predict an input (800 tasks)."""

from benchforge.benchmarks import register
from benchforge.benchmarks._cruxeval import CruxEval


@register("cruxeval_i")
class CruxEvalInput(CruxEval):
    """CRUXEval-I: predict an input of ``f`` for a given output (see
    :mod:`benchforge.benchmarks._cruxeval`)."""

    predict = "input"
