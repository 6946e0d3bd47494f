"""``benchforge plan``: create the cell dir and its manifest row, nothing else."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from benchforge.attempts import cell_stage
from benchforge.cell import Cell, prepare_cell

log = logging.getLogger("benchforge")


@cell_stage("plan")
def run_plan(cfg: DictConfig) -> Cell:
    """Plan the cell of ``cfg``: ``config.yaml``, ``provenance.json`` and its manifest row.

    Returns:
        The prepared :class:`~benchforge.cell.Cell`.

    Raises:
        BenchforgeError: the dir holds another config's cell, or the data cannot be loaded.
        CellLocked: another process works on the cell (``run.wait_for_lock`` waits instead).
    """
    cell = prepare_cell(cfg)
    log.info("planned cell %s (%s): %d tasks x %d samples%s -> %s", cell.cell_id,
             f"{cfg.model.name}/{cfg.benchmark.name}", len(cell.dataset.tasks), cell.n_samples,
             f" in {len(cell.windows)} sample windows" if cell.windows else "", cell.dir.path)
    return cell
