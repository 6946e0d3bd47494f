"""benchforge vs evalplus.evaluate on the same generations, same machine, same worker count.

    python bench/vs_evalplus.py [--workers 2] [--only humanevalplus|mbppplus] [--record]

For HumanEval+ v0.1.9 (Llama-3-8B-Instruct, 164 samples) and MBPP+ v0.1.0 (WizardCoder-7B,
399 samples) from ../shared/data/generations: runs `python -m evalplus.evaluate` (ground truth
cached by a warm-up run, results file removed so it really scores) and `benchforge score`
(expected outputs cached the same way, timeout audit off, as evalplus has none), prints wall
times, the ratio, and how many per-sample verdicts each tool shares with the official ones
(with the corrections documented in the shared SOURCES.md applied).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _anchor  # bench/_anchor.py, next to this script

ANCHOR = Path(__file__).with_name("anchor_vs_evalplus.json")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {
    "humanevalplus": {
        "evalplus": "humaneval", "version": "v0.1.9", "override": "HUMANEVAL_OVERRIDE_PATH",
        "data": DATA / "humanevalplus/v0.1.9/HumanEvalPlus.jsonl.gz",
        "samples": DATA / "generations/humanevalplus/llama3-8b-instruct/samples.jsonl",
        "corrections": {"HumanEval/21": ("pass", "pass")},
    },
    "mbppplus": {
        "evalplus": "mbpp", "version": "v0.1.0", "override": "MBPP_OVERRIDE_PATH",
        "data": DATA / "mbppplus/v0.1.0/MbppPlus.jsonl.gz",
        "samples": DATA / "generations/mbppplus/wizardcoder-python-7b-v1.0/"
                          "mbpp_WizardCoder-Python-7B-V1.0.jsonl",
        "corrections": {t: ("pass", "pass") for t in ("Mbpp/276", "Mbpp/312", "Mbpp/441",
                                                       "Mbpp/606", "Mbpp/249")},
    },
}
STATUS = {"success": "pass", "failed": "fail", "timed out": "fail", "pass": "pass",
          "fail": "fail", "timeout": "fail"}


def official(case: dict) -> dict[str, tuple[str, str]]:
    folder = case["samples"].parent
    result = json.loads(next(folder.glob("*eval_results.json")).read_text())["eval"]
    verdicts = {}
    for task, entry in result.items():
        if isinstance(entry, list):
            verdicts[task] = (STATUS[entry[0]["base_status"]], STATUS[entry[0]["plus_status"]])
        else:
            verdicts[task] = (STATUS[entry["base"][0][0]], STATUS[entry["plus"][0][0]])
    return {**verdicts, **case["corrections"]}


def run_evalplus(case: dict, work: Path, workers: int) -> tuple[float, dict]:
    plain = work / f"{case['evalplus']}.jsonl"  # evalplus wants it uncompressed offline
    plain.write_bytes(gzip.decompress(case["data"].read_bytes()))
    samples = work / "evalplus_samples.jsonl"
    samples.write_bytes(case["samples"].read_bytes())
    env = {**os.environ, case["override"]: str(plain)}
    cmd = [sys.executable, "-m", "evalplus.evaluate", "--dataset", case["evalplus"],
           "--samples", str(samples), "--parallel", str(workers), "--i-just-wanna-run"]
    results = samples.with_name("evalplus_samples_eval_results.json")
    for _run in range(2):  # the first run only warms evalplus's ground-truth cache
        results.unlink(missing_ok=True)  # else evalplus reuses it (or asks on stdin)
        started = time.monotonic()
        subprocess.run(cmd, env=env, check=True, capture_output=True,
                       stdin=subprocess.DEVNULL, cwd=work)
    wall = time.monotonic() - started
    result = json.loads(results.read_text())
    return wall, {t: (STATUS[v[0]["base_status"]], STATUS[v[0]["plus_status"]])
                  for t, v in result["eval"].items()}


def run_benchforge(name: str, case: dict, work: Path, workers: int) -> tuple[float, dict]:
    def score(run_dir: Path) -> None:
        subprocess.run([sys.executable, "-m", "benchforge", "score", f"benchmark={name}",
                        f"benchmark.version={case['version']}", f"data.root={DATA}",
                        f"score.samples={case['samples']}", f"run.dir={run_dir}",
                        f"score.workers={workers}", "score.audit_timeouts=false",
                        "generate.progress=false"], cwd=work, check=True, capture_output=True)

    score(work / "warm")  # expected outputs and fixtures cached, like evalplus's
    started = time.monotonic()
    score(work / "timed")
    wall = time.monotonic() - started
    rows = [json.loads(line) for line in (work / "timed/results.jsonl").open()]
    return wall, {r["task_id"]: (r["base_status"], r["plus_status"]) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--only", choices=sorted(CASES))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    anchor = _anchor.load(ANCHOR)
    now: dict[str, dict[str, float]] = {}
    print(_anchor.HEADER)
    for name, case in CASES.items():
        if args.only and name != args.only:
            continue
        truth = official(case)
        with tempfile.TemporaryDirectory(prefix="benchforge-vs-evalplus-") as tmp:
            ep_wall, ep = run_evalplus(case, Path(tmp), args.workers)
            bf_wall, bf = run_benchforge(name, case, Path(tmp), args.workers)
        now[name] = {"evalplus_wall_s": ep_wall, "benchforge_wall_s": bf_wall,
                     "speedup_x": ep_wall / bf_wall}
        for key, value in now[name].items():
            print(_anchor.row(name, key, value, anchor.get(name, {}).get(key)))
        print(f"{name}: agreement with the official verdicts: evalplus "
              f"{sum(ep.get(t) == v for t, v in truth.items())}/{len(truth)}, benchforge "
              f"{sum(bf.get(t) == v for t, v in truth.items())}/{len(truth)}; differ: "
              f"evalplus {sorted(t for t, v in truth.items() if ep.get(t) != v)}, "
              f"benchforge {sorted(t for t, v in truth.items() if bf.get(t) != v)}")
    print(f"({args.workers} workers each; 'ratio' compares each number with the anchor run)")
    if args.record:
        _anchor.record(ANCHOR, now)


if __name__ == "__main__":
    main()
