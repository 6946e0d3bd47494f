"""``benchforge report``: pass@1 with CI bars per model x benchmark (PNG) and a Markdown
summary, written into the run's directory and recomputed from each cell's raw rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.cell import run_root
from benchforge.errors import BenchforgeError
from benchforge.manifest import read_manifest
from benchforge.metrics import compute_metrics, licence_tag
from benchforge.rundir import CellDir, write_atomic


def _plot(rows: list[dict[str, Any]], path: Path, level: float = 0.95) -> None:
    try:
        import matplotlib
    except ImportError as exc:
        raise BenchforgeError("report needs matplotlib: pip install 'benchforge[report]'") \
            from exc
    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt
    import numpy as np

    models = sorted({r["model"] for r in rows})
    benchmarks = sorted({r["benchmark"] for r in rows})
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(benchmarks) * max(len(models), 1)), 4))
    for i, model in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for j, bench in enumerate(benchmarks):
            match = [r for r in rows if r["model"] == model and r["benchmark"] == bench]
            if match:
                value, (low, high) = match[0]["pass@1"], match[0]["ci"]
                xs.append(j + i * width)
                ys.append(100 * value)
                lo.append(100 * (value - low))
                hi.append(100 * (high - value))
        ax.bar(xs, ys, width, yerr=np.array([lo, hi]), capsize=3, label=model)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(benchmarks))])
    ax.set_xticklabels(benchmarks)
    ax.set_ylabel(f"pass@1 (%), {level:.0%} bootstrap CI")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _energy(gpu: dict[str, Any]) -> str:
    """GPU energy of a cell and per solved task (benchforge.gpumon); blank where unmeasured."""
    if gpu.get("energy_wh") is None:
        return ""
    per = gpu.get("energy_wh_per_solved_task")
    return f"{gpu['energy_wh']:.2f}" + ("" if per is None else f" ({per:.3f})")


def _latency(serving: dict[str, Any] | None) -> str:
    """``p50 / p95 | tokens/s`` cells of the Markdown table (blank for an unserved cell)."""
    if not serving:
        return " | "
    return (f"{serving['latency_p50_s']:.2f} / {serving['latency_p95_s']:.2f} | "
            f"{serving['decode_tokens_per_s']}")


def run_report(cfg: DictConfig) -> dict[str, Any]:
    """``benchforge report``: ``report.png`` (pass@1 with interval bars per model x benchmark) and
    ``report.md`` in the run dir, recomputed from the rows.

    Returns:
        ``{"png": path, "markdown": path, "cells": count}``.

    Raises:
        BenchforgeError: no scored cell in the run.
    """
    root = run_root(cfg)
    rows = []
    for entry in read_manifest(root):
        cell = CellDir(Path(entry["dir"]))
        if not cell.score_done.exists():
            continue
        metrics = compute_metrics(cell, cfg.aggregate)
        rows.append({"model": str(entry["model"]), "benchmark": str(entry["benchmark"]),
                     "pass@1": metrics["pass@1"]["value"],
                     "ci": tuple(metrics["pass@1"]["ci95"]), "n_tasks": metrics["n_tasks"],
                     "n_samples": metrics["n_samples"], "tag": licence_tag(metrics),
                     "tokens": metrics["cost"]["completion_tokens"],
                     "gpu_hours": metrics["cost"]["gpu_hours"],
                     "gpu": metrics["cost"].get("gpu") or {},
                     "serving": metrics.get("serving")})
    if not rows:
        raise BenchforgeError(f"{root}: no scored cell to report; run `benchforge run` first")
    png, md = root / "report.png", root / "report.md"
    level = float(cfg.aggregate.confidence)
    _plot(rows, png, level)
    lines = [f"# benchforge report: {cfg.run.name}", "",
             f"pass@1 with {int(100 * float(cfg.aggregate.confidence))}% bootstrap CIs over "
             f"problems ({cfg.aggregate.bootstrap} resamples, seed {cfg.aggregate.seed}), "
             "recomputed from results.jsonl.", "", "![pass@1](report.png)", "",
             f"| model | benchmark | pass@1 | {level:.0%} CI | tasks | samples/task | "
             "completion tokens "
             "| GPU-h | GPU Wh (per solved task) | latency p50 / p95 (s) | decode tokens/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["benchmark"], -r["pass@1"])):
        gpu = "" if r["gpu_hours"] is None else f"{r['gpu_hours']:.3f}"
        lines.append(f"| {r['model']}{r['tag']} | {r['benchmark']} | {100 * r['pass@1']:.1f} | "
                     f"[{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}] | {r['n_tasks']} | "
                     f"{r['n_samples']} | {r['tokens']} | {gpu} | {_energy(r['gpu'])} | "
                     f"{_latency(r['serving'])} |")
    write_atomic(md, "\n".join(lines) + "\n")
    print(f"wrote {png} and {md}")
    return {"png": str(png), "markdown": str(md), "cells": len(rows)}
