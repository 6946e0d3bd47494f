"""``benchforge compare`` and regression baselines: which differences between runs are real.

Both sides are read from their raw ``results.jsonl`` (never from ``metrics.json``); the
difference in pass@1 is a paired bootstrap over the problems both sides scored.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.console import print_table
from benchforge.errors import BenchforgeError
from benchforge.manifest import read_manifest
from benchforge.rundir import CellDir, read_json
from benchforge.stats import PairedDifference, paired_bootstrap
from benchforge.verdicts import read_verdicts


def cell_dirs(path: Path) -> dict[str, CellDir]:
    """``benchmark -> cell`` of a cell dir, or of every cell of a run dir (its manifest)."""
    path = path.expanduser()
    if (path / "results.jsonl").exists() or (path / "score.done").exists():
        return {_names(CellDir(path))[1]: CellDir(path)}
    manifest = path / "manifest.jsonl"
    if manifest.exists():
        cells: dict[str, CellDir] = {}
        for row in read_manifest(path.resolve()):
            key = str(row["benchmark"])
            if key in cells:
                key = f"{row['model']}/{row['benchmark']}"
            cells[key] = CellDir(Path(row["dir"]))
        return cells
    raise BenchforgeError(f"{path}: neither a scored cell dir (results.jsonl) nor a run dir "
                          "(manifest.jsonl)")


def _names(cell: CellDir) -> tuple[str, str]:
    """(model, benchmark) of a cell, from its provenance, else from its path."""
    prov = read_json(cell.provenance) if cell.provenance.exists() else {}
    return (str(prov.get("model", {}).get("name", cell.path.parent.name)),
            str(prov.get("dataset", {}).get("name", cell.path.name)))


def task_pass_rates(cell: CellDir) -> dict[str, float]:
    """Per-problem pass rate (the pass@1 estimate of each problem) from the raw rows."""

    return read_verdicts(cell.results).pass_rates()


def compare_cells(a: CellDir, b: CellDir, agg: DictConfig) -> PairedDifference:
    """Paired bootstrap of the per-task pass rates of two cells (B - A), over the tasks both scored,
    with ``aggregate``'s resamples, seed and level."""
    return paired_bootstrap(task_pass_rates(a), task_pass_rates(b), int(agg.bootstrap),
                            int(agg.seed), float(agg.confidence))


def run_compare(cfg: DictConfig) -> list[dict[str, Any]]:
    """``benchforge compare A B``: every cell pair the two runs (or cells) share, compared and
    printed.

    Returns:
        One record per shared benchmark (difference, interval, win/loss/tie, verdict); the
        interval is at ``aggregate.confidence`` under the key ``ci95``, named as in
        ``metrics.json`` whatever the level.

    Raises:
        BenchforgeError: A or B missing, or they share no benchmark.
    """
    if not cfg.compare.a or not cfg.compare.b:
        raise BenchforgeError("usage: benchforge compare <run or cell A> <run or cell B>")
    side_a, side_b = cell_dirs(Path(str(cfg.compare.a))), cell_dirs(Path(str(cfg.compare.b)))
    shared = sorted(set(side_a) & set(side_b))
    if not shared:
        raise BenchforgeError(f"{cfg.compare.a} and {cfg.compare.b} have no benchmark in "
                              f"common ({', '.join(side_a)} vs {', '.join(side_b)})")
    results = []
    for key in shared:
        a, b = side_a[key], side_b[key]
        diff = compare_cells(a, b, cfg.aggregate)
        name_a, name_b = _names(a)[0], _names(b)[0]
        if name_a == name_b:
            name_a, name_b = f"A ({name_a})", f"B ({name_b})"
        results.append({"benchmark": key, "a": str(a.path), "b": str(b.path),
                        "n_tasks": diff.n_tasks, "pass@1_a": diff.a, "pass@1_b": diff.b,
                        "diff": diff.diff, "ci95": list(diff.ci),
                        "prob_not_better": diff.prob_not_better,
                        "prob_not_worse": diff.prob_not_worse, "wins": diff.wins,
                        "losses": diff.losses, "ties": diff.ties,
                        "verdict": diff.verdict(name_a, name_b)})
    print_table("paired bootstrap over shared problems (B - A, pass@1)",
                ["benchmark", "tasks", "A", "B",
                 f"B - A [{float(cfg.aggregate.confidence):.0%} CI]", "P(B<=A)", "win/loss/tie"],
                [[r["benchmark"], r["n_tasks"], f"{r['pass@1_a']:.3f}", f"{r['pass@1_b']:.3f}",
                  f"{100 * r['diff']:+.1f} [{100 * r['ci95'][0]:+.1f}, "
                  f"{100 * r['ci95'][1]:+.1f}]", f"{r['prob_not_better']:.3f}",
                  f"{r['wins']}/{r['losses']}/{r['ties']}"] for r in results])
    for r in results:
        print(f"{r['benchmark']}: {r['verdict']}")
    return results


def check_baseline(cell: CellDir, cfg: DictConfig) -> dict[str, Any] | None:
    """``aggregate.baseline``: compare this cell with a baseline cell (or several, pooled);
    a drop whose CI (at ``aggregate.confidence``) excludes zero is a regression.

    Returns:
        None without a baseline; else ``metrics.json``'s ``baseline`` record: ``diff`` (this
        run - baseline, pass@1 fraction), ``ci95`` (its interval at the configured level;
        the key keeps its historical name), ``regression``, ``verdict``, ``baselines``.

    Raises:
        BenchforgeError: a baseline run with ``model.sampling=server``, or a sampled run
            (temperature > 0) with fewer than 3 baselines.
    """
    agg = cfg.aggregate
    if not agg.baseline:
        return None
    baselines = [CellDir(Path(p.strip()).expanduser()) for p in str(agg.baseline).split(",")
                 if p.strip()]
    for base in baselines:
        prov = read_json(base.provenance) if base.provenance.exists() else {}
        if prov.get("model", {}).get("sampling") == "server":
            raise BenchforgeError(
                f"aggregate.baseline={base.path}: ran with model.sampling=server (the server's "
                "own sampling defaults: non-canonical, they can change without notice); use a "
                "run with model.sampling=request as the regression baseline")
    greedy = float(cfg.model.temperature) == 0.0
    if not greedy and len(baselines) < 3:
        raise BenchforgeError(
            f"aggregate.baseline: sampled runs (temperature {cfg.model.temperature}) vary "
            f"from run to run; give at least 3 baseline runs (comma-separated cell dirs), "
            f"got {len(baselines)}")
    pooled: dict[str, list[float]] = defaultdict(list)
    for base in baselines:
        for task, rate in task_pass_rates(base).items():
            pooled[task].append(rate)
    base_rates = {t: sum(v) / len(v) for t, v in pooled.items()}
    diff = paired_bootstrap(base_rates, task_pass_rates(cell), int(agg.bootstrap),
                            int(agg.seed), float(agg.confidence))
    return {"baselines": [str(b.path) for b in baselines], "n_tasks": diff.n_tasks,
            "diff": diff.diff, "ci95": list(diff.ci), "regression": diff.ci[1] < 0,
            "verdict": diff.verdict("baseline", "this run")}
