"""Aggregation speed: pass@k + 1000-resample bootstrap CIs over 1,000,000 raw result rows.

    python bench/aggregate.py [--problems 10000] [--samples 100] [--record]

Writes a synthetic scored cell (10k problems x 100 samples, seeded) to a temp dir, then times
`benchforge.metrics.compute_metrics` on it (reading results.jsonl, pass@1/10/100, bootstrap)
and prints it side by side with bench/anchor_aggregate.json. The issue's target: < 2 s on
2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import _anchor  # bench/_anchor.py, next to this script
import numpy as np
from omegaconf import OmegaConf

from benchforge.metrics import compute_metrics
from benchforge.rundir import CellDir

ANCHOR = Path(__file__).with_name("anchor_aggregate.json")


def synthetic_cell(root: Path, problems: int, samples: int) -> CellDir:
    rng = np.random.default_rng(0)
    difficulty = rng.random(problems)
    cell = CellDir(root / "cell")
    cell.create()
    with open(cell.results, "w") as fh:
        for p in range(problems):
            passed = rng.random(samples) < difficulty[p]
            for s in range(samples):
                fh.write(json.dumps({"task_id": f"P/{p}", "sample_idx": s,
                                     "passed": bool(passed[s]),
                                     "failure_mode": None if passed[s] else "assertion",
                                     "duration_s": 0.01}) + "\n")
    cell.samples.write_text("")
    cell.provenance.write_text(json.dumps({"cell_id": "bench", "model": {"name": "m"},
                                           "dataset": {"name": "synthetic"}}))
    return cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    agg = OmegaConf.create({"bootstrap": 1000, "seed": 1234, "confidence": 0.95,
                            "ks": [1, 10, 100], "exclude_contaminated": True})
    with tempfile.TemporaryDirectory(prefix="benchforge-bench-agg-") as tmp:
        cell = synthetic_cell(Path(tmp), args.problems, args.samples)
        started = time.perf_counter()
        metrics = compute_metrics(cell, agg)
        seconds = time.perf_counter() - started
    rows = args.problems * args.samples
    print(f"aggregate: {rows:,} rows, pass@1 {metrics['pass@1']['value']:.4f} "
          f"{metrics['pass@1']['ci95']}")
    now = {"aggregate_s": seconds, "rows_per_s": rows / seconds}
    _anchor.report(ANCHOR, "aggregate", now, args.record)


if __name__ == "__main__":
    main()
