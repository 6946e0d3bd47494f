"""``benchforge run``: plan, generate, score and aggregate one cell, resuming wherever it
stopped. The one stage that composes the others."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from benchforge.benchmarks import load_benchmark
from benchforge.config import Provider
from benchforge.readiness import run_gate
from benchforge.stages.aggregate import run_aggregate
from benchforge.stages.generate import run_generate
from benchforge.stages.plan import run_plan
from benchforge.stages.score import has_reference, reference_samples, report_reference, run_score

log = logging.getLogger("benchforge")


def run_run(cfg: DictConfig) -> dict[str, Any]:
    """plan + generate + score + aggregate for one cell; resumes wherever it stopped.

    With ``score.samples`` the samples come from that file instead of a model; with
    ``score.reference`` they are the benchmark's reference solutions (a self-check).

    Returns:
        The cell's metrics ({} for a reference self-check of a benchmark without references).

    Raises:
        BenchforgeError, MarkerMismatch, RegressionDetected: as the stages it runs.
    """
    if cfg.score.reference:
        if not has_reference(cfg):
            log.warning("benchmark=%s has no reference solutions: self-check skipped",
                        cfg.benchmark.name)
            return {}
        cfg = reference_samples(cfg)
        report_reference(run_score(cfg))
        return run_aggregate(cfg)
    if not cfg.score.samples:
        benchmark = load_benchmark(cfg)
        # tier 2: no model time on a cell that could not be scored here (the oracle costs none)
        if benchmark.tier >= 2 and cfg.model.provider != Provider.oracle:
            run_gate(cfg, benchmark)
        run_plan(cfg)
        run_generate(cfg)
    run_score(cfg)
    return run_aggregate(cfg)
