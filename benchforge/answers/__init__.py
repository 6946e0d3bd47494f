"""Answer extraction, one module per official protocol (each shared by every benchmark using it).

- :mod:`~benchforge.answers.thinking`: reasoning (``<think>…</think>``) is split off first and
  never graded.
- :mod:`~benchforge.answers.stops`: stop strings, cut client-side (at most 4 are sent).
- :mod:`~benchforge.answers.humaneval`: human-eval / bigcode completion post-processing.
- :mod:`~benchforge.answers.evalplus`: EvalPlus ``sanitize`` for chat answers, and EvalPlus
  rescoring of ``solution`` / ``completion`` rows.
- :mod:`~benchforge.answers.cruxeval`: CRUXEval's input/output extraction (its inference
  harness for completion models, its OpenAI chat harness for chat models).

Leaf modules: they import nothing from benchforge above them.
"""
