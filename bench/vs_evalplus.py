"""benchforge vs evalplus.evaluate as users run them: same generations, same machine.

    python bench/vs_evalplus.py [--pairs 3] [--workers 2] [--only humanevalplus|mbppplus]
                                [--record]

For HumanEval+ v0.1.9 (Llama-3-8B-Instruct, 164 samples) and MBPP+ v0.1.0 (WizardCoder-7B,
399 samples) from ../shared/data/generations, each pair runs both tools one after the other
(which goes first alternates from pair to pair), each first cold (a fresh, empty cache: the
expected outputs are computed in the run) and then warm (same cache again):

- ``python -m evalplus.evaluate --parallel <workers>`` (its cache under XDG_CACHE_HOME);
- ``benchforge score`` with its default settings (sandbox auto, timeout audit on) and
  ``score.workers=<workers>`` (its cache under BENCHFORGE_CACHE).

Prints whole-process wall times (median, min-max over the pairs) and the ratio evalplus /
benchforge, the peak RSS of any one process of each tool, each tool's cache size on disk, the
timeout audit's share of benchforge's score stage, and how many tasks each tool agrees on
with the official verdicts (base, and base AND plus, after the corrections documented in the
shared SOURCES.md). The load average at the start and end is printed: timings on a shared
machine are noisy.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
          "fail": "fail", "timeout": "fail", "not_run": "fail"}
# Runs a command, then prints its wall time and the peak RSS of any one of its processes.
MEASURE = ("import json, resource, subprocess, sys, time\n"
           "t = time.monotonic()\n"
           "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,"
           " stdin=subprocess.DEVNULL).returncode\n"
           "wall = time.monotonic() - t\n"
           "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
           "print(json.dumps({'rc': rc, 'wall_s': wall, 'peak_rss_bytes': rss}))\n")


def reported(base: str, plus: str) -> tuple[str, str]:
    """EvalPlus's two numbers per sample: base, and base AND plus."""
    base, plus = STATUS[base], STATUS[plus]
    return base, "pass" if base == plus == "pass" else "fail"


def official(case: dict) -> dict[str, tuple[str, str]]:
    folder = case["samples"].parent
    result = json.loads(next(folder.glob("*eval_results.json")).read_text())["eval"]
    verdicts = {}
    for task, entry in result.items():
        if isinstance(entry, list):
            verdicts[task] = reported(entry[0]["base_status"], entry[0]["plus_status"])
        else:
            verdicts[task] = reported(entry["base"][0][0], entry["plus"][0][0])
    return {**verdicts, **{t: reported(*v) for t, v in case["corrections"].items()}}


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE, *cmd], env=env, cwd=cwd,
                          capture_output=True, text=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed (exit {out['rc']})")
    return out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_evalplus(case: dict, work: Path, workers: int) -> tuple[list[dict], dict, int]:
    """Cold then warm; returns the two measurements, the warm run's verdicts, cache bytes."""
    plain = work / f"{case['evalplus']}.jsonl"  # evalplus wants it uncompressed offline
    plain.write_bytes(gzip.decompress(case["data"].read_bytes()))
    samples = work / "evalplus_samples.jsonl"
    samples.write_bytes(case["samples"].read_bytes())
    cache = work / "evalplus-cache"
    env = {**os.environ, case["override"]: str(plain), "XDG_CACHE_HOME": str(cache)}
    cmd = [sys.executable, "-m", "evalplus.evaluate", "--dataset", case["evalplus"],
           "--samples", str(samples), "--parallel", str(workers), "--i-just-wanna-run"]
    results = samples.with_name("evalplus_samples_eval_results.json")
    runs = []
    for _ in ("cold", "warm"):
        results.unlink(missing_ok=True)  # else evalplus reuses it (or asks on stdin)
        runs.append(measure(cmd, env, work))
    result = json.loads(results.read_text())
    verdicts = {t: reported(v[0]["base_status"], v[0]["plus_status"])
                for t, v in result["eval"].items()}
    return runs, verdicts, du(cache)


def run_benchforge(name: str, case: dict, work: Path, workers: int
                   ) -> tuple[list[dict], dict, int, float | None]:
    """Cold then warm with default settings; also the warm run's audit share of scoring."""
    cache = work / "benchforge-cache"
    env = {**os.environ, "BENCHFORGE_CACHE": str(cache)}
    runs = []
    for label in ("cold", "warm"):
        runs.append(measure([sys.executable, "-m", "benchforge", "score", f"benchmark={name}",
                             f"benchmark.version={case['version']}", f"data.root={DATA}",
                             f"score.samples={case['samples']}", f"run.dir={work / label}",
                             f"score.workers={workers}", "generate.progress=false"], env, work))
    rows = [json.loads(line) for line in (work / "warm/results.jsonl").open()]
    stages = json.loads((work / "warm/provenance.json").read_text())["stages"]
    # the time the audit added to the stage: its reruns overlap the last samples' scoring
    audit = stages.get("timeout_audit", {}).get("added_s", 0.0)
    share = audit / stages["score"]["wall_s"]  # the score stage's wall includes the audit
    return (runs, {r["task_id"]: reported(r["base_status"], r["plus_status"]) for r in rows},
            du(cache), share)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=sorted(CASES))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    anchor = _anchor.load(ANCHOR)
    now: dict[str, dict[str, float]] = {}
    print(f"load average at start: {os.getloadavg()}, {os.cpu_count()} CPUs")
    for name, case in CASES.items():
        if args.only and name != args.only:
            continue
        truth = official(case)
        walls: dict[str, list[float]] = {k: [] for k in ("ep_cold", "ep_warm", "bf_cold",
                                                         "bf_warm")}
        rss = {"ep": 0, "bf": 0}
        shares: list[float] = []
        for pair in range(args.pairs):
            with tempfile.TemporaryDirectory(prefix="benchforge-vs-evalplus-") as tmp:
                work = Path(tmp)
                (work / "ep").mkdir()
                (work / "bf").mkdir()
                order = ("ep", "bf") if pair % 2 == 0 else ("bf", "ep")
                for tool in order:
                    if tool == "ep":
                        runs, ep, ep_cache = run_evalplus(case, work / "ep", args.workers)
                    else:
                        runs, bf, bf_cache, share = run_benchforge(name, case, work / "bf",
                                                                   args.workers)
                        shares.append(share)
                    walls[f"{tool}_cold"].append(runs[0]["wall_s"])
                    walls[f"{tool}_warm"].append(runs[1]["wall_s"])
                    rss[tool] = max(rss[tool], *(r["peak_rss_bytes"] for r in runs))
            print(f"{name} pair {pair + 1}/{args.pairs} ({'/'.join(order)} first): "
                  + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in walls.items())
                  + f"; load {os.getloadavg()[0]:.1f}", flush=True)
        med = {k: statistics.median(v) for k, v in walls.items()}
        now[name] = {"evalplus_warm_s": med["ep_warm"], "benchforge_warm_s": med["bf_warm"],
                     "speedup_warm_x": med["ep_warm"] / med["bf_warm"],
                     "evalplus_cold_s": med["ep_cold"], "benchforge_cold_s": med["bf_cold"],
                     "speedup_cold_x": med["ep_cold"] / med["bf_cold"]}
        _anchor.table(name, now[name], anchor.get(name, {}))
        shown = {k: _anchor.spread(v) for k, v in walls.items()}
        print(f"{name}: warm evalplus {shown['ep_warm']}, benchforge {shown['bf_warm']}; "
              f"cold evalplus {shown['ep_cold']}, benchforge {shown['bf_cold']}")
        print(f"{name}: cold overhead over warm: evalplus "
              f"{med['ep_cold'] - med['ep_warm']:.1f} s, benchforge "
              f"{med['bf_cold'] - med['bf_warm']:.1f} s")
        print(f"{name}: peak RSS (largest process): evalplus {rss['ep'] / 2**30:.2f} GiB, "
              f"benchforge {rss['bf'] / 2**30:.2f} GiB; cache on disk: evalplus "
              f"{ep_cache / 2**20:.0f} MiB, benchforge {bf_cache / 2**20:.0f} MiB")
        print(f"{name}: timeout audit share of benchforge's score stage (warm): median "
              f"{_anchor.spread([100 * share for share in shares], '%')}")
        for label, index in (("base", 0), ("base AND plus", 1)):
            differ = {tool: sorted(t for t, v in truth.items()
                                   if got.get(t, ("?", "?"))[index] != v[index])
                      for tool, got in (("evalplus", ep), ("benchforge", bf))}
            print(f"{name}: agreement with the official verdicts on {label}: evalplus "
                  f"{len(truth) - len(differ['evalplus'])}/{len(truth)}, benchforge "
                  f"{len(truth) - len(differ['benchforge'])}/{len(truth)}; differ: evalplus "
                  f"{differ['evalplus']}, benchforge {differ['benchforge']}")
    print(f"({args.workers} workers each, medians of {args.pairs} alternating pairs; load "
          f"average at end: {os.getloadavg()}; 'ratio' compares each number with the anchor)")
    if args.record:
        _anchor.record(ANCHOR, now)


if __name__ == "__main__":
    main()
