"""``benchforge publish``: a run's raw verdicts as Hive-partitioned Parquet plus a leaderboard
table, uploaded to Hugging Face Hub datasets (or only written locally with a dry run).

    <publish.dir>/results/data/benchmark=<b>/model=<m>/part-0.parquet   one row per sample
    <publish.dir>/leaderboard/leaderboard.parquet                       one row per cell

Every sample row carries the provenance a reader needs to trust it: model revision and
licence, dataset version and hashes, chat-template SHA, image digest, sandbox mode and the
benchforge version. Both tables are recomputed from ``results.jsonl``, never copied from
``metrics.json``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.cell import run_root
from benchforge.config import slug
from benchforge.errors import BenchforgeError
from benchforge.manifest import read_manifest
from benchforge.metrics import compute_metrics
from benchforge.rundir import CellDir, first_rows_by_key, read_json, read_rows
from benchforge.verdicts import columns_from_rows, verdicts_of

SAMPLE_COLUMNS = ("task_id", "sample_idx", "passed", "failure_mode", "duration_s",
                  "sandbox_mode")


def _provenance_columns(cell: CellDir, run_name: str) -> dict[str, Any]:
    prov = read_json(cell.provenance) if cell.provenance.exists() else {}
    model, dataset = prov.get("model", {}), prov.get("dataset", {})
    return {
        "run": run_name, "cell_id": prov.get("cell_id"),
        "model_repo": model.get("hf_repo"),
        "model_revision": model.get("commit") or model.get("revision"),
        "license": model.get("license"), "osi_approved": model.get("osi_approved"),
        "dataset_version": dataset.get("version"), "dataset_sha256": dataset.get("sha256"),
        "dataset_md5": dataset.get("md5") or dataset.get("hash"),
        "chat_template_sha256": prov.get("chat_template_sha256"),
        "image_digest": (prov.get("engine_image") or {}).get("sha256") or prov.get("image_digest"),
        "benchforge_version": package_version("benchforge"),
    }


def sample_rows(cell: CellDir, model: str, benchmark: str, run_name: str) -> list[dict[str, Any]]:
    """One Parquet row per scored sample of the cell (verdict, failure mode, timings, and the
    verdict pass@k counts after CRUXEval's skip rule), with the run's provenance columns.

    Raises:
        BenchforgeError: the cell has no ``results.jsonl``.
    """
    if not cell.results.exists():
        raise BenchforgeError(f"{cell.results}: missing; score this cell first")
    results = read_rows(cell.results, torn_tail="error")
    verdicts = verdicts_of(columns_from_rows(results, cell.results), cell.results)
    has_pass = dict(zip(verdicts.tasks, (verdicts.c > 0).tolist(), strict=True))
    extra = _provenance_columns(cell, run_name)
    rows = []
    for key, row in sorted(first_rows_by_key(results).items()):
        rows.append({**{c: row.get(c) for c in SAMPLE_COLUMNS},
                     "skipped": bool(row.get("skipped", False)),
                     # the verdict pass@k counts (CRUXEval's skip rule applied)
                     "counted_pass": None if row.get("skipped") and has_pass[key[0]]
                     else bool(row["passed"]),
                     "model": model, "benchmark": benchmark, **extra})
    return rows


def leaderboard_row(cell: CellDir, model: str, benchmark: str, run_name: str,
                    agg: DictConfig) -> dict[str, Any]:
    """The cell's leaderboard row: pass@k with intervals recomputed from its rows, licence and
    canonical flags, cost and serving figures."""
    metrics = compute_metrics(cell, agg)
    row: dict[str, Any] = {"model": model, "benchmark": benchmark, "run": run_name,
                           "license": metrics.get("license"),
                           "osi_approved": metrics.get("osi_approved"),
                           "canonical": metrics.get("canonical", True),
                           "n_tasks": metrics["n_tasks"], "n_samples": metrics["n_samples"]}
    for key, value in metrics.items():
        if key.startswith("pass@") and isinstance(value, dict):
            row[key] = value["value"]
            row[f"{key}_ci_lo"], row[f"{key}_ci_hi"] = value["ci95"]
    # the intervals' level (aggregate.confidence): the Space's column header shows it
    row["ci_level"] = (metrics.get("bootstrap") or {}).get("confidence")
    for window, values in (metrics.get("windows") or {}).items():
        if isinstance(values, dict) and isinstance(values.get("pass@1"), dict):
            row[f"pass@1_{window}"] = values["pass@1"]["value"]
    for key, value in (metrics.get("cost") or {}).items():
        if key == "gpu":  # benchforge.gpumon's summary, one column per field (null: no GPU)
            row.update({f"gpu_{k}": v for k, v in (value or {}).items()})
        else:
            row[f"cost_{key}"] = value
    for key in ("latency_p50_s", "latency_p95_s", "decode_tokens_per_s"):
        row[key] = (metrics.get("serving") or {}).get(key)
    row["provenance"] = None  # set by write_tables: the published copy, never a local path
    return row


def provenance_path(model: str, benchmark: str) -> str:
    """Where a cell's provenance.json goes in the results dataset (config.yaml beside it)."""

    return f"provenance/benchmark={slug(benchmark)}/model={slug(model)}/provenance.json"


def provenance_link(cfg: DictConfig, relative: str) -> str:
    """The leaderboard's link to a published provenance.json: its URL on the Hub when the
    results dataset is uploaded, else its path inside the published results folder."""
    if cfg.publish.org and not cfg.publish.dry_run:
        return (f"https://huggingface.co/datasets/{cfg.publish.org}/{cfg.publish.results_repo}"
                f"/blob/main/{relative}")
    return f"results/{relative}"


def copy_provenance(cell: CellDir, results_dir: Path, relative: str) -> None:
    """The cell's provenance.json and config.yaml into the results folder that is uploaded."""
    target = results_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cell.provenance, target)
    if cell.config.exists():
        shutil.copyfile(cell.config, target.with_name("config.yaml"))


def write_tables(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Write the run's Hive-partitioned sample Parquet, leaderboard table and provenance copies
    under ``out``.

    Returns:
        ``{"results": dir, "leaderboard": dir, "samples": rows, "cells": count}``.

    Raises:
        BenchforgeError: no scored cell in the run.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = [c for c in read_manifest(run_root(cfg))
             if CellDir(Path(c["dir"])).score_done.exists()]
    if not cells:
        raise BenchforgeError(f"{run_root(cfg)}: no scored cell to publish; run `benchforge run`")
    run_name = str(cfg.run.name)
    samples: list[dict[str, Any]] = []
    board: list[dict[str, Any]] = []
    for entry in cells:
        cell = CellDir(Path(entry["dir"]))
        samples += sample_rows(cell, str(entry["model"]), str(entry["benchmark"]), run_name)
        board.append(leaderboard_row(cell, str(entry["model"]), str(entry["benchmark"]),
                                     run_name, cfg.aggregate))
    results_dir, board_dir = out / "results", out / "leaderboard"
    for folder in (results_dir, board_dir):
        if folder.exists():
            shutil.rmtree(folder)  # a publish is a snapshot of the run, not an append
    for entry, row in zip(cells, board, strict=True):
        relative = provenance_path(str(entry["model"]), str(entry["benchmark"]))
        copy_provenance(CellDir(Path(entry["dir"])), results_dir, relative)
        row["provenance"] = provenance_link(cfg, relative)
    pq.write_to_dataset(pa.Table.from_pylist(samples), root_path=str(results_dir / "data"),
                        partition_cols=["benchmark", "model"],
                        basename_template="part-{i}.parquet")
    board_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(board), board_dir / "leaderboard.parquet")
    return {"results": results_dir, "leaderboard": board_dir, "samples": len(samples),
            "cells": len(board)}


SPACE_SOURCE = Path(__file__).resolve().parents[1] / "space"  # the Gradio app, in a checkout


def copy_space(out: Path, cfg: DictConfig) -> Path | None:
    """Copy the leaderboard Space app next to the tables, pointed at the leaderboard dataset
    (or, in a dry run, at the local table)."""
    if not (SPACE_SOURCE / "app.py").exists():
        return None  # an installed wheel has no space/: tables only
    space = out / "space"
    if space.exists():
        shutil.rmtree(space)
    shutil.copytree(SPACE_SOURCE, space, ignore=shutil.ignore_patterns("__pycache__"))
    source = (f"hf://datasets/{cfg.publish.org}/{cfg.publish.leaderboard_repo}"
              if cfg.publish.org and not cfg.publish.dry_run else str(out / "leaderboard"))
    (space / "leaderboard_source.txt").write_text(source + "\n")
    return space


def run_publish(cfg: DictConfig, api_factory: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Write the tables; upload them unless ``publish.dry_run`` (the default)."""

    out = Path(str(cfg.publish.dir)).expanduser() if cfg.publish.dir else \
        run_root(cfg) / "publish"
    written = write_tables(cfg, out)
    written["space"] = copy_space(out, cfg)
    uploads = []
    if not cfg.publish.dry_run:
        if not cfg.publish.org:
            raise BenchforgeError("publish.org is required to upload (or publish.dry_run=true)")
        if api_factory is None:
            from huggingface_hub import HfApi

            api_factory = HfApi
        api = api_factory()
        for folder, repo in ((written["results"], cfg.publish.results_repo),
                             (written["leaderboard"], cfg.publish.leaderboard_repo)):
            repo_id = f"{cfg.publish.org}/{repo}"
            api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
            upload = getattr(api, "upload_large_folder", None) or api.upload_folder
            upload(repo_id=repo_id, folder_path=str(folder), repo_type="dataset")
            uploads.append({"repo_id": repo_id, "folder": str(folder), "type": "dataset"})
        if cfg.publish.space_repo and written.get("space"):
            repo_id = f"{cfg.publish.org}/{cfg.publish.space_repo}"
            api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(written["space"]),
                              repo_type="space")
            uploads.append({"repo_id": repo_id, "folder": str(written["space"]),
                            "type": "space"})
    print(f"published {written['samples']} samples of {written['cells']} cells to {out}"
          + ("" if uploads else " (dry run: nothing uploaded)"))
    for upload in uploads:
        print(f"uploaded {upload['folder']} -> hf://{upload['type']}s/{upload['repo_id']}")
    return {**{k: (None if v is None else str(v)) for k, v in written.items()},
            "uploads": uploads}
