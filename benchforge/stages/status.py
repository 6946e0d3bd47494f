"""``benchforge status`` and ``benchforge verify``: read-only views of a run's cells."""

from __future__ import annotations

import json
import logging
from typing import Any

from omegaconf import DictConfig

from benchforge.cell import run_root
from benchforge.cellcheck import cell_status, verify_cell
from benchforge.console import print_table
from benchforge.errors import BenchforgeError
from benchforge.manifest import read_manifest
from benchforge.metrics import format_estimate, licence_tag
from benchforge.serving import serving_cell
from benchforge.shard import ended_without_marker, shard_summaries

log = logging.getLogger("benchforge")


def _progress(done: int | None, expected: int, marker: bool) -> str:
    shown = "?" if done is None else str(done)
    return f"{shown}/{expected}" + (" ✓" if marker else "")


def run_status(cfg: DictConfig) -> list[dict[str, Any]]:
    """Progress table of the run's cells; read-only. A problem of one cell (corrupt file,
    duplicates, stale metrics, hash mismatch) is shown in words in its row.

    Returns:
        One status dict per manifest cell (what the table shows); prints the table.
    """
    root = run_root(cfg)
    table = []
    statuses = []
    cells = read_manifest(root)
    try:
        shards = shard_summaries(cells)
    except BenchforgeError as exc:
        log.warning("status: SLURM state not shown (%s)", exc)
        shards = {}
    for cell in cells:
        status = cell_status(cell, cfg.aggregate)
        expected = status["expected"]
        shard = shards.get(cell["dir"])
        if shard:
            status["slurm"] = shard
        statuses.append(status)
        pass_at_1 = format_estimate(status["pass@1"])
        if status["metrics"] == "stale" and status["pass@1"]:
            pass_at_1 += " (recomputed)"
        row = [
            status["model"] + licence_tag(status.pop("model_info")), status["benchmark"],
            status["cell_id"],
            _progress(status["generated"], expected, status["generate_done"]),
            _progress(status["scored"], expected, status["score_done"]),
            pass_at_1, serving_cell(status.get("serving")), "; ".join(status["notes"]) or "",
        ]
        if shards:
            row += [f"{shard['job_id']} {shard['job_state']}".strip() if shard else "",
                    str(shard["attempts"]) if shard else "",
                    f"{shard['gpu_hours']:.3f}" if shard else "",
                    shard["shard_state"] if shard else ""]
        table.append(row)
    level = float(cfg.aggregate.confidence)
    columns = ["model", "benchmark", "cell", "generated", "scored", f"pass@1 [{level:.0%} CI]",
               "latency p50/p95 s, tok/s", "problems"]
    if not any(s.get("serving") for s in statuses):  # no cell measured serving: no column
        columns.pop(6)
        for row in table:
            row.pop(6)
    if shards:
        columns += ["slurm job", "attempts", "GPU-h", "shard"]
    if any((s.get("gpu") or {}).get("energy_wh") is not None for s in statuses):
        columns.append("GPU Wh, peak GB")  # measured on the GPU (benchforge.gpumon)
        for status, row in zip(statuses, table, strict=True):
            gpu = status.get("gpu") or {}
            row.append("" if gpu.get("energy_wh") is None else
                       f"{gpu['energy_wh']:.1f}, {gpu['peak_memory_gb'] or 0:.1f}")
    print_table(f"run {root}", columns, _with_windows(table, statuses, cells, len(columns),
                                                      bool(shards)))
    pending = root / "logs" / "pending.json"  # what the sweep driver last saw (PendingWatch)
    if pending.exists():
        try:
            seen = json.loads(pending.read_text(encoding="utf-8"))
            for job in seen.get("jobs", [])[:20]:
                print(f"slurm job {job['job']}: {job['state']}"
                      + (f" ({job['reason']})" if job["state"] == "PENDING" else "")
                      + f"  [as of {seen.get('utc')}]")
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return statuses


def _with_windows(table: list[list[str]], statuses: list[dict[str, Any]],
                  cells: list[dict[str, Any]], width: int, slurm: bool) -> list[list[str]]:
    """The table with one row per sample window under each cell that has them: its keys,
    generated and scored rows (✓: its marker), and its SLURM shard's job and state."""
    out = []
    for row, status, cell in zip(table, statuses, cells, strict=True):
        out.append(row)
        shards = {int(s["window"]["index"]): s for s in cell.get("shards", [])}
        windows = status.get("windows") or []
        for w in windows:
            size = w["stop"] - w["start"]
            sub = [f"  └ window {w['index']}/{len(windows)}", f"keys {w['start']}..{w['stop']}",
                   "", _progress(w["generated"], size, w["generate_done"]),
                   _progress(w["scored"], size, w["score_done"])]
            shard = shards.get(w["index"], {})
            job = str(shard.get("score_job") or shard.get("generate_job") or "")
            tail = [job, "", "", str(shard.get("shard_state", ""))] if slurm else []
            sub += [""] * (width - len(sub) - len(tail)) + tail
            out.append(sub)
    return out


def run_verify(cfg: DictConfig) -> list[str]:
    """Every inconsistency of every cell of the run (markers, row counts, duplicates, hashes,
    metrics; SLURM shards that ended without their marker); read-only.

    Returns:
        One line per problem ([] when the run is consistent); the CLI exits 1 on any.
    """
    problems: list[str] = []
    cells = read_manifest(run_root(cfg))
    try:
        shards = shard_summaries(cells)
    except BenchforgeError as exc:
        problems.append(f"SLURM state not checked: {exc}")
        shards = {}
    for cell in cells:
        problems.extend(verify_cell(cell, cfg.aggregate))
        if cell["dir"] in shards:
            problems.extend(ended_without_marker(cell, shards[cell["dir"]]))
    log.info("verify: %d cell(s), %d problem(s)", len(cells), len(problems))
    return problems
