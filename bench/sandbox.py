"""Sandbox throughput: score the shared HumanEval+ generations in each mode, side by side.

    python bench/sandbox.py [--modes userns,bwrap,rlimit-only] [--repeat 3] [--record]

For each mode: samples/s scoring the 164 real Llama-3-8B-Instruct solutions (HumanEval tests,
one worker per core), and the per-sample overhead of the sandbox itself (a no-op program, one
worker), against bench/anchor_sandbox.json (ratio > 1 means faster than the anchor). With
both userns and bwrap measured, a last line gives userns's throughput relative to bwrap's (the
private filesystem view userns builds may cost at most 20%: ratio >= 0.80).
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

ANCHOR = Path(__file__).with_name("anchor_sandbox.json")
SAMPLES = (Path(__file__).resolve().parents[2] / "shared" / "data" / "generations"
           / "humanevalplus" / "llama3-8b-instruct" / "samples.jsonl")


def score_rate(mode: str) -> float:
    with tempfile.TemporaryDirectory(prefix="benchforge-bench-") as tmp:
        out = Path(tmp, "cell")
        subprocess.run([sys.executable, "-m", "benchforge", "score", f"sandbox={mode}",
                        f"score.samples={SAMPLES}", f"run.dir={out}", "sandbox.time_factor=0",
                        "score.audit_timeouts=false", "generate.progress=false"],
                       cwd=tmp, check=True, capture_output=True)
        wall = json.loads((out / "provenance.json").read_text())["stages"]["score"]["wall_s"]
        rows = sum(1 for _ in (out / "results.jsonl").open())
    return rows / wall


def overhead_ms(mode: str, n: int = 200) -> tuple[float, float]:
    """(ms per no-op sample through one worker, ms to start the pool's first worker)."""
    from benchforge.config import compose
    from benchforge.sandbox import CheckProgram, make_sandbox

    cfg = compose([f"sandbox={mode}"]).sandbox
    started = time.perf_counter()
    with make_sandbox(cfg, workers=1) as sandbox:
        start_ms = (time.perf_counter() - started) * 1000
        program = CheckProgram("pass\n")
        sandbox.run(program)
        started = time.perf_counter()
        for _ in range(n):
            sandbox.run(program)
        per_sample = (time.perf_counter() - started) * 1000 / n
    return per_sample, start_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="userns,bwrap,rlimit-only")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if not SAMPLES.is_file():
        sys.exit(f"{SAMPLES}: the shared generations are needed next to the repo")
    anchor = _anchor.load(ANCHOR)
    now: dict[str, dict[str, float]] = {}
    modes = args.modes.split(",")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    costs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for _ in range(args.repeat):  # modes interleaved: a busy spell on the host hits all alike
        for mode in modes:
            rates[mode].append(score_rate(mode))
            costs[mode].append(overhead_ms(mode))
    for mode in modes:
        now[mode] = {"samples_per_s": statistics.median(rates[mode]),
                     "overhead_ms_per_sample": statistics.median(c[0] for c in costs[mode]),
                     "worker_start_ms": statistics.median(c[1] for c in costs[mode])}
    for mode, metrics in now.items():
        _anchor.table(mode, metrics, anchor.get(mode, {}))
    print(f"(median of {args.repeat}; {os.cpu_count()} cpus; workers = cpus for samples/s, "
          "1 for overhead)")
    if "userns" in now and "bwrap" in now:
        ratio = now["userns"]["samples_per_s"] / now["bwrap"]["samples_per_s"]
        extra = now["userns"]["overhead_ms_per_sample"] - now["bwrap"]["overhead_ms_per_sample"]
        print(f"userns vs bwrap: throughput x{ratio:.3f} ({'ok' if ratio >= 0.8 else 'OVER'} "
              f"the 20% budget), per-sample overhead {extra:+.2f} ms")
    if args.record:
        _anchor.record(ANCHOR, now)


if __name__ == "__main__":
    main()
