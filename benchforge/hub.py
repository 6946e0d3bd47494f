"""Staging on the (online) login node: model snapshots and benchmark data, used offline on
compute nodes.

``benchforge stage`` downloads each selected model at its requested revision with
``huggingface_hub.snapshot_download`` into ``paths.hf_cache`` and records the resolved commit
in ``<hf_cache>/benchforge-staged.json``. Generation then serves that local snapshot; on a
compute node (``paths.offline=auto`` inside a SLURM job) it sets ``HF_HUB_OFFLINE=1`` and
fails fast, naming the missing path, if the model was not staged. Benchmark data files are
fetched into ``data.root`` from pinned sources and checked against their pinned sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.benchmarks import Benchmark, Download, load_benchmark, source_record
from benchforge.config import Provider
from benchforge.console import print_table
from benchforge.errors import BenchforgeError
from benchforge.rundir import (
    read_record_map,
    sha256_file,
    update_record_map,
    utc_now,
    write_json_atomic,
)

log = logging.getLogger("benchforge")

STAGED_NAME = "benchforge-staged.json"


def hf_cache(cfg: DictConfig) -> Path:
    """``paths.hf_cache``, expanded: where staged model snapshots are."""
    return Path(str(cfg.paths.hf_cache)).expanduser()


def offline(paths: DictConfig) -> bool:
    """Whether the hub must not be contacted: ``paths.offline``, where ``auto`` means inside a
    SLURM job (compute nodes have no internet)."""
    setting = str(paths.offline).lower()
    if setting == "auto":
        return "SLURM_JOB_ID" in os.environ
    return setting in ("true", "1", "yes")


def _staged_key(model: DictConfig) -> str:
    return f"{model.hf_repo}@{model.revision or 'main'}"


def read_staged(cache: Path) -> dict[str, dict[str, Any]]:
    """The staged-model records of ``cache`` (``benchforge-staged.json``); {} before any.

    Raises:
        BenchforgeError: the record file is corrupt (rerun ``benchforge stage``).
    """
    return read_record_map(cache / STAGED_NAME, "rerun `benchforge stage`")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def stage_model(model: DictConfig, cache: Path) -> dict[str, Any]:
    """Download ``model`` at its revision (on the login node) and record the commit."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if not model.hf_repo:
        raise BenchforgeError(f"model={model.name}: only provider=hf models are staged")
    cache.mkdir(parents=True, exist_ok=True)
    try:
        path = Path(snapshot_download(str(model.hf_repo), revision=str(model.revision or "main"),
                                      cache_dir=str(cache)))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise BenchforgeError(f"stage model={model.name} ({model.hf_repo}@"
                              f"{model.revision or 'main'}): {_first_line(exc)}") from exc
    entry = {"repo": str(model.hf_repo), "requested_revision": str(model.revision or "main"),
             "commit": path.name, "path": str(path), "staged_utc": utc_now()}
    update_record_map(cache / STAGED_NAME, _staged_key(model), entry, "rerun `benchforge stage`")
    return entry


def staged_snapshot(model: DictConfig, cache: Path) -> dict[str, Any] | None:
    """The staged record (``repo``, ``commit``, ``path``, ...) of ``model`` at its revision, or None
    when it was not staged (or its snapshot dir is gone)."""
    entry = read_staged(cache).get(_staged_key(model))
    if entry and Path(entry["path"]).is_dir():
        return entry
    return None


def require_staged(model: DictConfig, cache: Path) -> dict[str, Any]:
    """The staged record of ``model``; offline (a compute node) there must be one.

    Raises:
        BenchforgeError: not staged (names ``benchforge stage`` and the expected dir).
    """
    entry = staged_snapshot(model, cache)
    if entry is None:
        expected = cache / f"models--{str(model.hf_repo).replace('/', '--')}" / "snapshots"
        raise BenchforgeError(
            f"model={model.name} ({model.hf_repo}@{model.revision or 'main'}) is not staged: "
            f"no snapshot under {expected} recorded in {cache / STAGED_NAME}; run "
            f"`benchforge stage model={model.name}` on the login node (compute nodes are offline)")
    return entry


def snapshot_chat_template(snapshot: Path) -> tuple[str, str] | None:
    """The tokenizer's chat template in a snapshot, and where it was found: the
    ``chat_template.jinja`` file, else ``tokenizer_config.json``'s ``chat_template``."""
    jinja = snapshot / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8"), str(jinja)
    config = snapshot / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template, f"{config}#chat_template"
    return None


def template_sha256(text: str) -> str:
    """Hex sha256 of a chat template's UTF-8 text (what provenance and rows record)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fetch_url(download: Download, data_root: Path, mirror: str) -> dict[str, Any]:
    dest = data_root / download.dest
    if dest.is_file() and download.sha256 in (None, sha256_file(dest)):
        return {"file": str(dest), "status": "present", "sha256": sha256_file(dest)}
    url = f"{mirror.rstrip('/')}/{download.source}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(partial, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise BenchforgeError(f"download {url}: {exc}; check data.mirror or the network") \
            from exc
    digest = sha256_file(partial)
    if download.sha256 and digest != download.sha256:
        partial.unlink()
        raise BenchforgeError(f"{url}: sha256 {digest} is not the pinned {download.sha256}; "
                              f"nothing written to {dest}")
    os.replace(partial, dest)
    return {"file": str(dest), "status": "downloaded", "sha256": digest, "source": url}


def _fetch_hf_dataset(download: Download, data_root: Path) -> list[dict[str, Any]]:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    folder = data_root / download.dest
    try:
        commit = HfApi().repo_info(download.source, repo_type="dataset",
                                   revision=download.revision or "main").sha
        snapshot_download(download.source, repo_type="dataset", local_dir=str(folder),
                          allow_patterns=list(download.files), revision=commit)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise BenchforgeError(f"stage dataset {download.source}: {_first_line(exc)}") from exc
    missing = [f for f in download.files if not (folder / f).is_file()]
    if missing:
        raise BenchforgeError(f"dataset {download.source} has no {', '.join(missing)}: is "
                              "benchmark.version newer than the dataset?")
    staged = []
    for name in download.files:
        path = folder / name
        record = {"source": f"hf://datasets/{download.source}@{commit}",
                  "requested_revision": download.revision or "main", "commit": commit,
                  "sha256": sha256_file(path), "staged_utc": utc_now()}
        write_json_atomic(source_record(path), record)
        staged.append({"file": str(path), "status": "downloaded", "sha256": record["sha256"],
                       "source": record["source"]})
    return staged


def stage_data(benchmark: Benchmark, data_root: Path, mirror: str) -> list[dict[str, Any]]:
    """Fetch the benchmark's data files for its version into ``data_root``, then the files
    they name (:meth:`~benchforge.benchmarks.Benchmark.dependent_downloads`)."""

    def fetch(download: Download) -> list[dict[str, Any]]:
        if download.kind == "url":
            return [_fetch_url(download, data_root, mirror)]
        if download.kind == "hf_dataset":
            return _fetch_hf_dataset(download, data_root)
        raise BenchforgeError(f"unknown download kind {download.kind!r}")

    staged = [item for download in benchmark.downloads() for item in fetch(download)]
    return staged + [item for download in benchmark.dependent_downloads()
                     for item in fetch(download)]


def run_fetch(cfg: DictConfig) -> dict[str, Any]:
    """``benchforge stage`` (login node, online): the selected model at its revision into
    ``paths.hf_cache`` (recording the resolved commit), and the benchmark's data files for
    ``benchmark.version`` into ``data.root`` (checked against their pinned sha256).

    Returns:
        ``{"model": staged record or None, "data": [one record per file]}``.

    Raises:
        BenchforgeError: run on a compute node (``paths.offline``), or a download fails or
            does not match its pinned sha256.
    """
    if offline(cfg.paths):
        raise BenchforgeError("stage runs on the login node: this looks like a compute node "
                              "(paths.offline); set paths.offline=false to force it")
    result: dict[str, Any] = {"model": None, "data": []}
    if cfg.model.provider == Provider.hf:
        entry = stage_model(cfg.model, hf_cache(cfg))
        result["model"] = entry
        print_table("staged model", ["model", "repo", "revision", "commit", "path"],
                    [[cfg.model.name, entry["repo"], entry["requested_revision"],
                      entry["commit"], entry["path"]]])
    result["data"] = stage_data(load_benchmark(cfg), Path(str(cfg.data.root)).expanduser(),
                                str(cfg.data.mirror))
    for item in result["data"]:
        source = f"  from {item['source']}" if item.get("source") else ""
        print(f"{item['file']}  {item['status']}  sha256:{item['sha256']}{source}")
    if result["model"] is None and not result["data"]:
        log.info("nothing to stage: model=%s is not a hub model and benchmark=%s ships with "
                 "benchforge", cfg.model.name, cfg.benchmark.name)
    return result
