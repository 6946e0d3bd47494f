"""benchforge: reproducible, preemption-safe evaluation of code LLMs on code benchmarks.

The public API is small: compose a config, then call a stage function on it::

    from benchforge import compose, run_run
    metrics = run_run(compose(["model=oracle", "benchmark=humaneval", "run.root=/tmp/runs"]))

The ``run_*`` functions are what the CLI runs: they also print the command's table. For no
output at all, call a stage's core, which returns data and prints nothing:
``benchforge.stages.aggregate.aggregate(cell_dir, cfg)``,
``benchforge.stages.score.score_pending`` and ``benchforge.stages.generate.generate_samples``
(a progress bar only with ``progress=True``).

Heavy modules load on first use, so importing benchforge (and ``benchforge --help``) is instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BenchforgeError",
    "compose",
    "run_aggregate",
    "run_generate",
    "run_plan",
    "run_run",
    "run_score",
    "run_status",
    "run_verify",
]

_LAZY = {
    "BenchforgeError": "benchforge.errors",
    "compose": "benchforge.config",
    "run_plan": "benchforge.stages.plan",
    "run_generate": "benchforge.stages.generate",
    "run_score": "benchforge.stages.score",
    "run_aggregate": "benchforge.stages.aggregate",
    "run_run": "benchforge.stages.run",
    "run_status": "benchforge.stages.status",
    "run_verify": "benchforge.stages.status",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'benchforge' has no attribute {name!r}")
