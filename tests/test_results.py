"""Comparing runs (paired bootstrap), regression baselines, inspect, mean@N and cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _support import run_cli

from benchforge.rundir import read_json
from benchforge.stats import mean_at_n, paired_bootstrap, pass_at_k


def write_cell(path: Path, verdicts: dict[str, list[bool]], model: str,
               benchmark: str = "synthetic") -> Path:
    """A scored cell with the given verdicts (the rows compare/inspect read)."""
    path.mkdir(parents=True)
    rows = [{"task_id": t, "sample_idx": i, "passed": v, "failure_mode": None if v else
             "assertion", "duration_s": 0.01, "detail": "" if v else "AssertionError"}
            for t, vs in verdicts.items() for i, v in enumerate(vs)]
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "samples.jsonl").write_text("".join(
        json.dumps({"task_id": r["task_id"], "sample_idx": r["sample_idx"],
                    "code": f"def f():\n    return {r['sample_idx']}  # {r['task_id']}"}) + "\n"
        for r in rows))
    (path / "provenance.json").write_text(json.dumps(
        {"model": {"name": model}, "dataset": {"name": benchmark}}))
    return path


def planted(n_tasks: int = 400, extra: int = 20, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    base = rng.random(n_tasks) < 0.5
    better = base.copy()
    better[np.flatnonzero(~base)[:extra]] = True  # 20 of 400 problems = +5 points
    a = {f"T/{i}": [bool(v)] for i, v in enumerate(base)}
    b = {f"T/{i}": [bool(v)] for i, v in enumerate(better)}
    return a, b


def test_paired_bootstrap_finds_a_planted_five_points_and_nothing_in_identical_runs() -> None:
    a, b = planted()
    rates_a = {t: float(v[0]) for t, v in a.items()}
    rates_b = {t: float(v[0]) for t, v in b.items()}
    diff = paired_bootstrap(rates_a, rates_b, 1000, 1234, 0.95)
    assert diff.diff == pytest.approx(0.05)
    assert diff.significant and diff.ci[0] > 0.02 and diff.ci[1] < 0.08
    assert (diff.wins, diff.losses, diff.ties) == (20, 0, 380)
    assert diff.verdict().startswith("B better than A by +5.0 points [+")
    same = paired_bootstrap(rates_a, dict(rates_a), 1000, 1234, 0.95)
    assert not same.significant and same.diff == 0
    assert same.verdict() == "no significant difference (B - A: +0.0 points [+0.0, +0.0])"
    # seeded: same seed, same CI; another seed, another CI
    assert paired_bootstrap(rates_a, rates_b, 1000, 1234, 0.95).ci == diff.ci
    assert paired_bootstrap(rates_a, rates_b, 1000, 99, 0.95).ci != diff.ci


def test_pass_at_k_matches_evalplus_estimator() -> None:
    from evalplus.eval import estimate_pass_at_k

    n = np.array([10, 10, 20, 5, 7])
    c = np.array([0, 3, 20, 1, 6])
    for k in (1, 5):
        ours = pass_at_k(n, c, k)
        theirs = estimate_pass_at_k(n, c, k)
        assert np.allclose(ours, theirs)
    assert pass_at_k(np.array([4]), np.array([1]), 2)[0] == pytest.approx(1 - 3 / 6)  # by hand


def test_mean_at_n_and_its_standard_error() -> None:
    verdicts = {"a": [True, True, False], "b": [False, True, False]}
    result = mean_at_n(verdicts)
    assert result is not None
    per_run = np.array([0.5, 1.0, 0.0])
    assert result["value"] == pytest.approx(per_run.mean())
    assert result["stderr"] == pytest.approx(per_run.std(ddof=1) / np.sqrt(3))
    assert mean_at_n({"a": [True], "b": [False]}) is None


def test_compare_cli_on_cells_and_runs(tmp_path: Path) -> None:
    a, b = planted()
    cell_a = write_cell(tmp_path / "A" / "m1" / "synthetic", a, "m1")
    cell_b = write_cell(tmp_path / "B" / "m2" / "synthetic", b, "m2")
    proc = run_cli("compare", str(cell_a), str(cell_b), f"run.root={tmp_path / 'runs'}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "synthetic: m2 better than m1 by +5.0 points [" in proc.stdout
    assert "20/0/380" in proc.stdout
    same = run_cli("compare", str(cell_a), str(cell_a), f"run.root={tmp_path / 'runs'}",
                   cwd=tmp_path)
    assert "no significant difference" in same.stdout
    for run, cell in (("A", cell_a), ("B", cell_b)):
        (tmp_path / run / "manifest.jsonl").write_text(json.dumps(
            {"dir": str(cell), "benchmark": "synthetic", "model": run}) + "\n")
    runs = run_cli("compare", str(tmp_path / "A"), str(tmp_path / "B"),
                   f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert "better than" in runs.stdout, runs.stderr
    bad = run_cli("compare", str(tmp_path / "nowhere"), str(cell_b),
                  f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert bad.returncode == 2 and "neither a scored cell dir" in bad.stderr


def test_inspect_failed_and_diff(tmp_path: Path) -> None:
    a, b = planted(n_tasks=40, extra=3)
    cell_a = write_cell(tmp_path / "A" / "m" / "synthetic", a, "m")
    cell_b = write_cell(tmp_path / "B" / "m" / "synthetic", b, "m")
    proc = run_cli("inspect", str(cell_a), "--failed", "--diff", str(cell_b),
                   f"run.root={tmp_path / 'runs'}", "inspect.limit=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    failed = sum(not v[0] for v in a.values())
    assert f"{failed} of 40 samples failed" in proc.stdout
    assert proc.stdout.count("=== T/") == 2 and "--- code" in proc.stdout
    assert "detail: AssertionError" in proc.stdout and "def f():" in proc.stdout
    assert f"... {failed - 2} more" in proc.stdout
    assert "flipped between" in proc.stdout and ": 3" in proc.stdout


def test_baseline_regression_exits_non_zero(tmp_path: Path, mock_server) -> None:
    base = run_cli("run", "benchmark.limit=30", f"run.root={tmp_path}", "run.name=base",
                   "generate.progress=false", cwd=tmp_path)
    assert base.returncode == 0, base.stderr
    base_cell = tmp_path / "base" / "oracle" / "humaneval"
    wrong = {f"HumanEval/{i}" for i in range(0, 30, 2)}  # 15 of 30 wrong: -50 points
    url = mock_server(wrong=wrong)
    args = ["run", "model=endpoint", f"model.base_url={url}", "model.served_name=mock-model",
            "benchmark.limit=30", f"run.root={tmp_path}", "run.name=new",
            f"aggregate.baseline={base_cell}", "generate.progress=false"]
    flagged = run_cli(*args, cwd=tmp_path)
    assert flagged.returncode == 0, flagged.stderr
    assert "vs baseline: this run worse than baseline by -50.0 points" in flagged.stdout
    assert "REGRESSION" in flagged.stdout
    metrics = read_json(tmp_path / "new" / "mock-model" / "humaneval" / "metrics.json")
    assert metrics["baseline"]["regression"] is True
    failing = run_cli(*args, "--exit-on-regression", cwd=tmp_path)
    assert failing.returncode == 3
    assert failing.stderr.strip().splitlines()[-1].startswith("benchforge run: regression:")
    sampled = run_cli(*args, "model.temperature=0.8", "run.name=sampled", cwd=tmp_path)
    assert sampled.returncode == 2 and "give at least 3 baseline runs" in sampled.stderr


def test_metrics_carry_cost(tmp_path: Path) -> None:
    proc = run_cli("run", "benchmark.limit=5", f"run.root={tmp_path}", "generate.progress=false",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cost = read_json(tmp_path / "default" / "oracle" / "humaneval" / "metrics.json")["cost"]
    assert cost["completion_tokens"] > 0 and cost["prompt_tokens"] > 0
    assert cost["generate_wall_s"] > 0 and cost["tokens_per_s"] > 0
    assert cost["cpu_hours"] > 0 and cost["gpu_hours"] is None  # no SLURM attempt: unknown


def test_breakdown_by_difficulty(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from benchforge.metrics import compute_metrics
    from benchforge.rundir import CellDir

    verdicts = {f"T/{i}": [i % 3 != 0] for i in range(30)}
    cell = write_cell(tmp_path / "cell", verdicts, "m")
    labels = ["easy", "medium", "hard"]
    rows = [json.loads(line) for line in (cell / "results.jsonl").read_text().splitlines()]
    for row in rows:
        row["difficulty"] = labels[int(row["task_id"].split("/")[1]) % 3]
    (cell / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    agg = OmegaConf.create({"bootstrap": 200, "seed": 1, "confidence": 0.95, "ks": [1],
                           "exclude_contaminated": True})
    metrics = compute_metrics(CellDir(cell), agg)
    by = metrics["breakdown"]["difficulty"]
    assert {k: v["n_tasks"] for k, v in by.items()} == {"easy": 10, "hard": 10, "medium": 10}
    assert by["easy"]["pass@1"]["value"] == 0.0  # i % 3 == 0: every easy task fails here
    assert by["medium"]["pass@1"]["value"] == 1.0
    assert metrics["pass@1"]["value"] == pytest.approx(20 / 30)
