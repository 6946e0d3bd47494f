"""Apptainer images: pulled (or built) once on the login node, verified before every use.

``benchforge pull-image`` pulls the engine's pinned vLLM image (``engine.image_source``) into
``engine.image`` and builds the scorer image from ``containers/scorer.def`` when the sandbox
uses one; each SIF's sha256 and its source go into ``<paths.images>/benchforge-images.json``.
Generation refuses a SIF whose sha256 differs from the recorded one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.config import Launch
from benchforge.errors import BenchforgeError
from benchforge.rundir import read_record_map, sha256_file, update_record_map, utc_now

RECORD_NAME = "benchforge-images.json"


def record_path(images: Path) -> Path:
    """The sha256 record file of the images dir (what pull-image recorded)."""
    return images / RECORD_NAME


REMEDY = "rerun `benchforge pull-image`"


def read_records(images: Path) -> dict[str, dict[str, Any]]:
    """The image records of ``images`` ({} before any pull).

    Raises:
        BenchforgeError: the record file is corrupt (rerun ``benchforge pull-image``).
    """
    return read_record_map(record_path(images), REMEDY)


def source_digest(source: str) -> str | None:
    """The content digest a source pins (``docker://repo@sha256:...``), else None (a tag)."""
    match = re.search(r"@(sha256:[0-9a-f]{64})$", source)
    return match.group(1) if match else None


def _apptainer(executable: str, args: list[str], what: str) -> None:
    if shutil.which(executable) is None:
        raise BenchforgeError(f"{executable} not found: install Apptainer on the login node "
                              f"to {what}")
    proc = subprocess.run([executable, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise BenchforgeError(f"`{executable} {' '.join(args)}` failed ({proc.returncode}): "
                              f"{tail}")


def fetch_image(executable: str, sif: Path, source: str, images: Path, *,
                build: bool = False) -> dict[str, Any]:
    """``apptainer pull`` (or ``build`` from a definition file) into ``sif``, atomically, and
    record its sha256."""
    sif.parent.mkdir(parents=True, exist_ok=True)
    partial = sif.with_name(sif.name + ".partial")
    partial.unlink(missing_ok=True)
    verb = "build" if build else "pull"
    _apptainer(executable, [verb, "--force", str(partial), source], f"{verb} {source}")
    os.replace(partial, sif)
    stat = sif.stat()
    entry = {"source": source, "source_digest": source_digest(source),
             "sha256": sha256_file(sif), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
             "pulled_utc": utc_now()}
    update_record_map(record_path(images), str(sif.resolve()), entry, REMEDY)
    return entry


def verify_image(sif: Path, images: Path) -> str:
    """The SIF's sha256, checked against what pull-image recorded. A file that changed since
    (same path, other bytes) is refused; an unrecorded one is hashed and reported."""
    if not sif.is_file():
        raise BenchforgeError(f"{sif}: no such image; run `benchforge pull-image` on the "
                              "login node")
    entry = read_records(images).get(str(sif.resolve()))
    stat = sif.stat()
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])  # unchanged since it was hashed: skip re-reading GBs
    digest = sha256_file(sif)
    if entry and entry["sha256"] != digest:
        raise BenchforgeError(
            f"{sif}: sha256 {digest[:16]}… differs from {entry['sha256'][:16]}… recorded by "
            f"`benchforge pull-image` ({entry['pulled_utc']}, {entry['source']}); refusing a "
            "changed image: pull it again or restore it")
    return digest


def run_pull_image(cfg: DictConfig) -> list[dict[str, Any]]:
    """``benchforge pull-image`` (login node): the engine's vLLM SIF, and the scorer SIF when
    the sandbox runs in Apptainer; each recorded with its sha256.

    Returns:
        One record per image: ``{"image", "sha256", "source", ...}``.

    Raises:
        BenchforgeError: nothing to pull, no ``engine.image_source``, no scorer definition
            (``containers/scorer.def`` of a checkout), or apptainer fails.
    """
    images = Path(str(cfg.paths.images)).expanduser()
    pulled = []
    if cfg.engine.launch == Launch.apptainer:
        if not cfg.engine.image_source:
            raise BenchforgeError(f"engine={cfg.engine.name}: engine.image_source is not set")
        sif = Path(str(cfg.engine.image)).expanduser()
        pulled.append({"image": str(sif), **fetch_image(str(cfg.engine.executable), sif,
                                                         str(cfg.engine.image_source), images)})
    if str(cfg.sandbox.name).startswith("apptainer") and cfg.sandbox.image:
        definition = Path(__file__).resolve().parents[1] / "containers" / "scorer.def"
        if not definition.is_file():
            raise BenchforgeError(f"{definition}: missing; build the scorer image from a "
                                  "benchforge checkout")
        sif = Path(str(cfg.sandbox.image)).expanduser()
        pulled.append({"image": str(sif), **fetch_image("apptainer", sif, str(definition),
                                                         images, build=True)})
    if not pulled:
        raise BenchforgeError("nothing to pull: use engine=vllm_apptainer and/or an apptainer "
                              "sandbox with sandbox.image")
    for entry in pulled:  # plain lines: digests must stay copyable, never wrapped
        print(f"{entry['image']}  sha256:{entry['sha256']}  from {entry['source']}")
    return pulled
