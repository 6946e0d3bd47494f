"""The cell: one model x benchmark evaluation and its directory.

Identity (one recipe, external-sample cells included), where a cell's dir is, and preparing a
cell (``config.yaml``, ``provenance.json`` and its manifest row) before a stage works on it.
Run-level commands (status, compare, report, publish, ...) use this module, never the stages.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchforge.benchmarks import Benchmark, Dataset, load_benchmark
from benchforge.cellconfig import OPERATIONAL_MODEL_KEYS, check_plan, config_text, sha256_text
from benchforge.cellwindows import fix_windows, reconcile
from benchforge.config import Mode, Provider
from benchforge.errors import BenchforgeError
from benchforge.gguf_model import gguf_provenance, model_gguf
from benchforge.hub import hf_cache, snapshot_chat_template, staged_snapshot, template_sha256
from benchforge.integrity import require_samples_intact
from benchforge.manifest import cell_dir_of, upsert_cell
from benchforge.provenance import update_provenance
from benchforge.rundir import (
    CellDir,
    RowKey,
    first_rows_by_key,
    read_json,
    read_rows,
    sha256_file,
    utc_now,
    write_atomic,
    write_json_atomic,
)
from benchforge.windows import Window

# Model and benchmark keys added after cells existed, each with the default at which it is left
# out of the cell id (so adding one keeps every existing cell's id); any other value makes a
# different cell.
_LATER_MODEL_KEYS: dict[str, Any] = {"gguf": None, "sampling": "request",
                                     "thinking_max_tokens": None}
_LATER_BENCHMARK_KEYS: dict[str, Any] = {"lcb_fixes": False, "max_tokens": None,
                                         "language": None, "subset": None, "timeout_s": None,
                                         "pins": None}


def cell_identity(cfg: DictConfig) -> dict[str, Any]:
    """What a cell computes: the model config minus operational keys, and the benchmark
    config; keys added later are left out at their default, so existing cells keep their ids.

    Returns:
        ``{"model": {...}, "benchmark": {...}}``, keys sorted, values resolved.
    """
    model = OmegaConf.to_container(cfg.model, resolve=True)
    benchmark = OmegaConf.to_container(cfg.benchmark, resolve=True)
    assert isinstance(model, dict) and isinstance(benchmark, dict)
    return {
        "model": {k: v for k, v in sorted(model.items()) if k not in OPERATIONAL_MODEL_KEYS
                  and not (k in _LATER_MODEL_KEYS and v == _LATER_MODEL_KEYS[k])},
        "benchmark": {k: v for k, v in sorted(benchmark.items())
                      if not (k in _LATER_BENCHMARK_KEYS and v == _LATER_BENCHMARK_KEYS[k])},
    }


def cell_id(cfg: DictConfig, external: Path | None = None) -> str:
    """The cell id: 16 hex digits of the sha256 of the cell's identity.

    Args:
        cfg: the composed config.
        external: an external samples file (``score.samples``): the identity is then the
            benchmark and that file's sha256, as no model config describes the samples.

    Both recipes are frozen (the external one hashes JSON with the default separators): every
    cell already on disk keeps its id.
    """
    if external is not None:
        identity = {"benchmark": cell_identity(cfg)["benchmark"],
                    "external_samples_sha256": sha256_file(external)}
        blob = json.dumps(identity, sort_keys=True)
    else:
        blob = json.dumps(cell_identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One model x benchmark cell, ready to work on: its dir, its benchmark and dataset, its
    id and the samples drawn per task."""

    dir: CellDir
    benchmark: Benchmark
    dataset: Dataset
    cell_id: str
    n_samples: int
    windows: tuple[Window, ...] = ()  # sample windows (K > 1; benchforge.cellwindows) or none

    @property
    def expected_keys(self) -> set[RowKey]:
        """Every ``(task_id, sample_idx)`` the cell's rows must hold when it is complete."""
        return {(t.task_id, i) for t in self.dataset.tasks for i in range(self.n_samples)}

    @property
    def task_ids(self) -> list[str]:
        """The cell's task ids in benchmark order (the grid windows are cut from)."""
        return [t.task_id for t in self.dataset.tasks]


def run_root(cfg: DictConfig) -> Path:
    """``<run.root>/<run.name>``, absolute: where the manifest and the run's logs are."""
    return (Path(str(cfg.run.root)).expanduser() / str(cfg.run.name)).resolve()


def cell_dir(cfg: DictConfig) -> CellDir:
    """The cell dir ``run.dir`` names (by default ``<run>/<model>/<benchmark>``), absolute."""
    return CellDir(Path(str(cfg.run.dir)).expanduser().resolve())


def relative_to_run(path: Path, root: Path) -> str:
    """``path`` relative to the run root (what the manifest stores, so a run can move)."""
    return os.path.relpath(path, root)


def manifest_cell(root: Path, row: dict[str, Any]) -> CellDir:
    """The cell dir of a manifest row, under the run root it was read from."""
    return CellDir(cell_dir_of(root, row))


def read_provenance(cdir: CellDir) -> dict[str, Any]:
    """The cell's ``provenance.json``, or {} before the cell was planned.

    Raises:
        BenchforgeError: the file exists but is not valid JSON (names the file).
    """
    return read_json(cdir.provenance) if cdir.provenance.exists() else {}


def provenance_model(cdir: CellDir) -> dict[str, Any]:
    """The ``model`` record of the cell's provenance ({} before the cell was planned)."""
    return read_provenance(cdir).get("model", {})


def _hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig  # lazy: the Python API runs without Hydra

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def chat_template_sha256(cfg: DictConfig) -> str | None:
    """SHA-256 of the one chat template the server uses: the override file
    ``model.chat_template``, else the GGUF's template, else the staged snapshot's tokenizer
    template; None for completion mode or a model benchforge cannot see (an endpoint).

    Raises:
        BenchforgeError: ``model.chat_template`` names a file that does not exist.
    """
    if cfg.model.chat_template:
        path = Path(str(cfg.model.chat_template)).expanduser()
        if not path.is_file():
            raise BenchforgeError(f"model.chat_template={path}: file not found")
        return sha256_file(path)
    if cfg.model.get("gguf") and cfg.model.mode == Mode.chat:
        return model_gguf(cfg.model).chat_template_sha256  # type: ignore[union-attr]
    if cfg.model.provider != Provider.hf or cfg.model.mode != Mode.chat:
        return None
    entry = staged_snapshot(cfg.model, hf_cache(cfg))
    found = snapshot_chat_template(Path(entry["path"])) if entry else None
    return template_sha256(found[0]) if found else None


def check_rows_belong(rows: dict[RowKey, dict[str, Any]], cell: Cell, path: Path) -> None:
    """Refuse rows whose ``(task_id, sample_idx)`` is not one of the cell's.

    Raises:
        BenchforgeError: naming ``path``, the count and the first stray key.
    """
    stray = sorted(set(rows) - cell.expected_keys)
    if stray:
        raise BenchforgeError(
            f"{path}: {len(stray)} row(s) do not belong to this cell (first: {stray[0]}); "
            "use another run.dir or delete the file"
        )


def _model_info(cfg: DictConfig) -> dict[str, Any]:
    model_info = {k: cfg.model[k] for k in ("name", "provider", "served_name", "mode")}
    model_info |= {k: cfg.model[k] for k in ("hf_repo", "revision", "license",
                                             "osi_approved", "thinking")
                   if cfg.model[k] is not None}
    if cfg.model.sampling != "request":
        model_info["sampling"] = cfg.model.sampling  # non-canonical (benchforge.serving)
    if cfg.model.provider == Provider.hf:
        entry = staged_snapshot(cfg.model, hf_cache(cfg))
        if entry:
            model_info |= {"commit": entry["commit"], "snapshot": entry["path"]}
    if cfg.model.get("gguf"):
        model_info["gguf"] = gguf_provenance(cfg.model)
    return model_info


def prepare_cell(cfg: DictConfig, *, external: Path | None = None,
                 n_samples: int | None = None,
                 loaded: tuple[Benchmark, Dataset] | None = None) -> Cell:
    """Create or reopen the cell dir: config.yaml, provenance.json and its manifest row.

    Args:
        cfg: the composed config.
        external: an external samples file: the cell is identified by it (see cell_id).
        n_samples: samples per task (default ``model.n_samples``).
        loaded: the benchmark and dataset, when the caller already loaded them.

    Raises:
        BenchforgeError: the dir holds a cell of another config (a mixed score is wrong), its
            ``config.yaml`` was edited since planning, or the data cannot be loaded.
    """
    if loaded is None:
        benchmark = load_benchmark(cfg)
        loaded = benchmark, benchmark.load()
    benchmark, dataset = loaded
    cdir = cell_dir(cfg)
    if external is not None:
        cid = cell_id(cfg, external)
        model_info: dict[str, Any] = {"name": f"external:{external.name}", "provider": "external",
                                      "samples": str(external.resolve())}
    else:
        cid = cell_id(cfg)
        model_info = _model_info(cfg)
    if cdir.provenance.exists():
        previous = read_json(cdir.provenance).get("cell_id")
        if previous not in (None, cid):
            raise BenchforgeError(
                f"{cdir.path}: holds a cell with another config (cell id {previous}, now "
                f"{cid}); use another run.name or run.dir, or delete that dir"
            )
    samples_per_task = n_samples if n_samples is not None else int(cfg.model.n_samples)
    windows = fix_windows(cdir, cfg.get("compute") if external is None else None,
                          len(dataset.tasks), samples_per_task)
    cdir.create()
    planned: dict[str, Any] = {}
    if cdir.config.exists():  # written once, at plan time: a later command is checked
        check_plan(cdir.config, read_json(cdir.provenance).get("config_sha256")
                   if cdir.provenance.exists() else None, cfg)
    else:
        text = config_text(cfg)
        write_atomic(cdir.config, text)
        planned = {"config_sha256": sha256_text(text), "overrides": _hydra_overrides()}
    update_provenance(
        cdir,
        **planned,
        cell_id=cid,
        model=model_info,
        dataset={"name": cfg.benchmark.name, "version": dataset.version,
                 "path": str(dataset.path), "sha256": dataset.sha256,
                 "n_tasks": len(dataset.tasks), **dataset.extra},
        chat_template_sha256=chat_template_sha256(cfg) if external is None else None,
    )
    root = run_root(cfg)
    upsert_cell(root, {
        "cell_id": cid, "model": model_info["name"], "benchmark": str(cfg.benchmark.name),
        "dir": relative_to_run(cdir.path, root), "n_tasks": len(dataset.tasks),
        "n_samples": samples_per_task,
        "paths": {name: relative_to_run(getattr(cdir, name), root) for name in
                  ("config", "provenance", "samples", "generate_done", "results", "score_done",
                   "metrics", "logs")},
    }, windows=[{**w.as_dict(), "of": len(windows)} for w in windows] if windows else None)
    return Cell(cdir, benchmark, dataset, cid, samples_per_task, tuple(windows or ()))


def mark_generate_done(cell: Cell, **extra: Any) -> bool:
    """Write ``generate.done`` iff every expected (task, sample) row is present; an existing
    marker is checked against the rows, never rewritten over them (MarkerMismatch). A cell
    with sample windows first needs every window done: ``samples.jsonl`` is then written as
    the union of their parts (benchforge.cellwindows.reconcile)."""
    if cell.dir.generate_done.exists():
        require_samples_intact(cell.dir)
        return True
    if cell.windows:
        parts = reconcile(cell.dir, "samples", cell.windows, cell.expected_keys)
        if parts is None:
            return False
        extra = {**extra, **parts}
    rows = first_rows_by_key(read_rows(cell.dir.samples))
    if set(rows) != cell.expected_keys:
        return False
    write_json_atomic(cell.dir.generate_done, {
        "rows": len(rows), "n_tasks": len(cell.dataset.tasks), "n_samples": cell.n_samples,
        "samples_sha256": sha256_file(cell.dir.samples), "finished_utc": utc_now(), **extra,
    })
    return True
