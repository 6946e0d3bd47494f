"""``benchforge aggregate``: ``metrics.json`` recomputed from a scored cell's raw rows.

The core :func:`aggregate` takes a cell dir and returns the metrics (it writes
``metrics.json`` and prints nothing); :func:`render` shows them; :func:`run_aggregate` is the
command: resolve the cell, aggregate, render, and fail on a regression when asked.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from benchforge.attempts import cell_stage
from benchforge.cell import cell_dir
from benchforge.compare import check_baseline
from benchforge.console import print_table
from benchforge.errors import BenchforgeError, RegressionDetected
from benchforge.integrity import require_results_intact
from benchforge.metrics import compute_metrics, format_estimate, licence_tag
from benchforge.rundir import CellDir, write_json_atomic
from benchforge.serving import serving_line


def aggregate(cdir: CellDir, cfg: DictConfig) -> dict[str, Any]:
    """The metrics of a scored cell, written to its ``metrics.json``; prints nothing.

    Args:
        cdir: the cell dir (``score.done`` must exist).
        cfg: the composed config (``aggregate`` settings; ``compare.baseline`` if any).

    Returns:
        The ``metrics.json`` record (:func:`benchforge.metrics.compute_metrics`), with a
        ``baseline`` verdict when a baseline is configured.

    Raises:
        BenchforgeError: scoring is not complete, or the rows cannot give a score.
        MarkerMismatch: ``results.jsonl`` no longer matches ``score.done``.
    """
    if not cdir.score_done.exists():
        raise BenchforgeError(
            f"{cdir.score_done} is missing: scoring of this cell is not complete; "
            "run `benchforge score` with the same overrides first")
    require_results_intact(cdir)
    metrics = compute_metrics(cdir, cfg.aggregate)
    baseline = check_baseline(cdir, cfg)
    if baseline:
        metrics["baseline"] = baseline
    write_json_atomic(cdir.metrics, metrics)
    return metrics


def render(metrics: dict[str, Any]) -> None:
    """Print a cell's metrics as a table (pass@k with their intervals, windows, breakdowns,
    failure modes), its serving line and its baseline verdict."""
    pass_keys = [k for k in metrics if k.startswith("pass@")]
    failures = ", ".join(f"{m}={c}" for m, c in metrics["failure_modes"].items()) or "none"
    rows = [[k, format_estimate(metrics[k]), metrics["n_tasks"], metrics["n_samples"], failures]
            for k in pass_keys]
    for window, values in (metrics.get("windows") or {}).items():
        rows += [[f"{k} ({window})", format_estimate(values.get(k)), values["n_tasks"],
                  metrics["n_samples"], ""] for k in pass_keys]
    for field_name, groups in (metrics.get("breakdown") or {}).items():
        rows += [[f"pass@1 ({field_name}={label})", format_estimate(values.get("pass@1")),
                  values["n_tasks"], metrics["n_samples"], ""]
                 for label, values in groups.items()]
    level = float((metrics.get("bootstrap") or {}).get("confidence", 0.95))
    print_table(f"{metrics['model']}{licence_tag(metrics)} on {metrics['benchmark']}",
                ["metric", f"value [{level:.0%} CI]", "tasks", "samples/task", "failures"],
                rows)
    if metrics.get("serving"):
        print(serving_line(metrics["serving"]))
    baseline = metrics.get("baseline")
    if baseline:
        print(f"vs baseline: {baseline['verdict']}"
              + (" — REGRESSION" if baseline["regression"] else ""))


@cell_stage("aggregate")
def run_aggregate(cfg: DictConfig) -> dict[str, Any]:
    """Aggregate the cell of ``cfg`` and print its metrics.

    Returns:
        The metrics (see :func:`aggregate`).

    Raises:
        BenchforgeError: as :func:`aggregate`.
        RegressionDetected: below the baseline and ``aggregate.exit_on_regression`` is set.
    """
    cdir = cell_dir(cfg)
    metrics = aggregate(cdir, cfg)
    render(metrics)
    baseline = metrics.get("baseline")
    if baseline and baseline["regression"] and cfg.aggregate.exit_on_regression:
        raise RegressionDetected(f"{cdir.path}: {baseline['verdict']} (baseline "
                                 f"{', '.join(baseline['baselines'])})")
    return metrics
