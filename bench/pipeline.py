"""Throughput of the oracle pipeline (generate, score, whole run) against the anchor run.

    python bench/pipeline.py [--repeat 3] [--record]

Runs `benchforge run` on HumanEval with the oracle in a temp dir, reads the per-stage wall times
benchforge records in provenance.json, and prints them side by side with bench/anchor.json
(ratio > 1 means faster than the anchor). --record overwrites the anchor with this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _anchor  # bench/_anchor.py, next to this script

ANCHOR = Path(__file__).with_name("anchor.json")


def one_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="benchforge-bench-") as tmp:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "benchforge", "run", "generate.progress=false"],
                       cwd=tmp, check=True, capture_output=True)
        wall = time.monotonic() - started
        cell = Path(tmp, "runs/default/oracle/humaneval")
        stages = json.loads((cell / "provenance.json").read_text())["stages"]
        n = json.loads((cell / "metrics.json").read_text())["n_tasks"]
    return {"run_wall_s": wall, "generate_samples_per_s": n / stages["generate"]["wall_s"],
            "score_samples_per_s": n / stages["score"]["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.repeat)]
    now = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    now["cpus"] = os.cpu_count() or 0
    anchor = _anchor.load(ANCHOR)
    _anchor.table("oracle", {k: v for k, v in now.items() if k != "cpus"}, anchor)
    print(f"(median of {args.repeat}; anchor on {anchor.get('cpus', '?')} cpus, now {now['cpus']})")
    if args.record:
        _anchor.record(ANCHOR, now)


if __name__ == "__main__":
    main()
