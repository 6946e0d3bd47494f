"""``benchforge repair``: archive what no longer matches its marker (kept under ``logs/``)
and re-derive it by running the cell to the end again."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from benchforge.attempts import cell_stage
from benchforge.cell import cell_dir
from benchforge.cellconfig import config_text, sha256_text
from benchforge.errors import BenchforgeError
from benchforge.integrity import archive, repair_plan
from benchforge.provenance import update_provenance
from benchforge.rundir import read_json, sha256_file, utc_now, write_atomic
from benchforge.stages.run import run_run

log = logging.getLogger("benchforge")


@cell_stage("repair")
def run_repair(cfg: DictConfig) -> dict[str, Any]:
    """``benchforge repair``: archive what no longer matches its marker and re-derive it.

    Returns:
        ``{"problems": [...], "archived": dir or None}`` (then the cell is run to the end).

    Raises:
        BenchforgeError: ``run.dir`` names no cell; or as :func:`~benchforge.stages.run.run_run`.
    """
    cell = cell_dir(cfg)
    if not cell.path.is_dir():
        raise BenchforgeError(f"{cell.path}: no such cell; nothing to repair")
    stamp = utc_now().replace(":", "").replace("+0000", "Z")
    problems, move = repair_plan(cell)
    config_edited = False
    if cell.provenance.exists() and cell.config.exists():
        recorded = read_json(cell.provenance).get("config_sha256")
        current = sha256_file(cell.config)
        if recorded and recorded != current:
            problems.append(f"{cell.config}: changed after the cell was planned")
            move.append("config.yaml")
            config_edited = True
    archived = archive(cell, move, stamp) if move else None
    if config_edited:
        text = config_text(cfg)
        write_atomic(cell.config, text)
        update_provenance(cell, config_sha256=sha256_text(text))
    for problem in problems:
        log.warning("repair: %s", problem)
    if archived:
        log.warning("repair: moved %s to %s; re-deriving them", ", ".join(move), archived)
    else:
        log.info("repair: %s: every marker matches its rows", cell.path)
    run_run(cfg)
    return {"problems": problems, "archived": str(archived) if archived else None}
