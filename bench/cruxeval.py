"""CRUXEval-I and -O scoring time, 8000 samples each, against the official evaluator's anchor.

    python bench/cruxeval.py [--repeat 3] [--only i|o] [--record]

`benchforge score` with its default settings (sandbox auto, timeout audit on, one worker per
core). CRUXEval-I scores the 8000 CodeLlama-7B generations in ../shared/data/generations and
counts the verdicts equal to the official scorer's. CRUXEval-O has no shipped generations:
it scores 8000 output predictions built from the dataset (per task, 10 samples: 5 times the
gold output, 5 times a wrong literal, seeded), whose right verdicts are known by construction.
The anchors are the official evaluator's measured wall times for 8000 samples on this machine
(213 s for -I, 157 s for -O; it is not on PyPI, so it cannot run here); the target is 55 s.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _anchor  # bench/_anchor.py, next to this script

ANCHOR = Path(__file__).with_name("anchor_cruxeval.json")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OFFICIAL_S = {"i": 213.0, "o": 157.0}
TARGET_S = 55.0
GENERATIONS_I = (DATA / "generations/cruxeval/codellama-7b_temp0.2/"
                 "sample_scored_codellama-7b_temp0.2_input.json")


def samples_o(work: Path) -> tuple[Path, dict[str, list[bool]]]:
    """10 output predictions per task (5 gold, 5 wrong literals) and their right verdicts."""
    rng = random.Random(1234)
    rows = [json.loads(line) for line in (DATA / "cruxeval/cruxeval.jsonl").open()]
    generations, right = {}, {}
    for row in rows:
        wrong = rng.choice(["None", "0", "''", "[]", "-1", "'x'"])
        # wrong by value, as the official check compares (0 == False, so "0" is right there)
        if ast.literal_eval(wrong) == ast.literal_eval(row["output"]):
            wrong = "'not the output'"
        picks = [rng.random() < 0.5 for _ in range(10)]
        generations[row["id"]] = [row["output"] if ok else wrong for ok in picks]
        right[row["id"]] = picks
    path = work / "generations_o.json"
    path.write_text(json.dumps(generations))
    return path, right


def one_run(mode: str, work: Path, label: str) -> tuple[float, dict[tuple[str, int], bool]]:
    if mode == "i":
        source = GENERATIONS_I
    else:
        source, _ = samples_o(work)
    out = work / label
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "benchforge", "score", f"benchmark=cruxeval_{mode}",
                    f"data.root={DATA}", f"score.samples={source}", f"run.dir={out}",
                    "generate.progress=false"], check=True, capture_output=True)
    wall = time.monotonic() - started
    rows = [json.loads(line) for line in (out / "results.jsonl").open()]
    return wall, {(r["task_id"], r["sample_idx"]): bool(r["passed"]) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["i", "o"])
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    anchor = _anchor.load(ANCHOR)
    now: dict[str, dict[str, float]] = {}
    print(f"load average at start: {os.getloadavg()}, {os.cpu_count()} CPUs")
    for mode in ("i", "o"):
        if args.only and mode != args.only:
            continue
        walls = []
        with tempfile.TemporaryDirectory(prefix="benchforge-bench-crux-") as tmp:
            work = Path(tmp)
            for rep in range(args.repeat):
                wall, verdicts = one_run(mode, work, f"run{rep}")
                walls.append(wall)
                print(f"cruxeval_{mode} run {rep + 1}/{args.repeat}: {wall:.1f} s; load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
            if mode == "i":
                official = json.loads(GENERATIONS_I.read_text())["raw_scored_generations"]
                right = {(t, i): bool(v) for t, vs in official.items() for i, v in enumerate(vs)}
            else:
                right = {(t, i): v for t, vs in samples_o(work)[1].items()
                         for i, v in enumerate(vs)}
        agree = sum(verdicts.get(k) == v for k, v in right.items())
        median = statistics.median(walls)
        now[f"cruxeval_{mode}"] = {"benchforge_s": median,
                                   "vs_official_x": OFFICIAL_S[mode] / median}
        _anchor.table(f"cruxeval_{mode}", now[f"cruxeval_{mode}"],
                      anchor.get(f"cruxeval_{mode}", {}))
        print(f"cruxeval_{mode}: 8000 samples in {_anchor.spread(walls)} (median, min-max) "
              f"over {args.repeat} runs; official "
              f"evaluator {OFFICIAL_S[mode]:.0f} s ({OFFICIAL_S[mode] / median:.2f}x); target "
              f"<= {TARGET_S:.0f} s: {'met' if median <= TARGET_S else 'missed'}; verdicts "
              f"right: {agree}/{len(right)}")
    print(f"(default worker count: {len(os.sched_getaffinity(0))}; load average at end: "
          f"{os.getloadavg()})")
    if args.record:
        _anchor.record(ANCHOR, now)


if __name__ == "__main__":
    main()
