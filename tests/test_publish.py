"""`benchforge publish`: Hive-partitioned Parquet that gives back metrics.json's pass@1, the
leaderboard table, and exactly which folders go to which Hub datasets (HfApi faked)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from _support import run_cli

from benchforge.config import compose
from benchforge.errors import BenchforgeError
from benchforge.publish import run_publish
from benchforge.rundir import read_json


def test_dry_run_layout_and_parquet_round_trip(scored_run: Path, tmp_path: Path) -> None:
    proc = run_cli("publish", f"run.root={scored_run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "dry run: nothing uploaded" in proc.stdout
    out = scored_run / "default" / "publish"
    parts = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert (out / "space" / "app.py").is_file()
    assert parts == ["leaderboard/leaderboard.parquet",
                     "results/data/benchmark=humaneval/model=mock-model/part-0.parquet",
                     "results/data/benchmark=humaneval/model=oracle/part-0.parquet"]
    table = ds.dataset(out / "results" / "data", partitioning="hive").to_table().to_pylist()
    assert len(table) == 24
    assert {r["sandbox_mode"] for r in table} and all(r["benchforge_version"] for r in table)
    for model in ("oracle", "mock-model"):
        rows = [r for r in table if r["model"] == model]
        per_task: dict[str, list[bool]] = {}
        for r in rows:
            per_task.setdefault(r["task_id"], []).append(bool(r["counted_pass"]))
        pass1 = sum(sum(v) / len(v) for v in per_task.values()) / len(per_task)
        metrics = read_json(scored_run / "default" / model / "humaneval" / "metrics.json")
        assert pass1 == pytest.approx(metrics["pass@1"]["value"])
    board = {r["model"]: r for r in pq.read_table(out / "leaderboard" / "leaderboard.parquet")
             .to_pylist()}
    assert board["oracle"]["pass@1"] == 1.0
    assert board["mock-model"]["pass@1"] == pytest.approx(8 / 12)
    assert board["mock-model"]["pass@1_ci_lo"] < board["mock-model"]["pass@1"]
    assert board["oracle"]["cost_completion_tokens"] > 0
    # each row links to the provenance.json published with the results (never a local path),
    # and that copy is the cell's, with its config.yaml beside it
    for model, row in board.items():
        link = row["provenance"]
        assert link == f"results/provenance/benchmark=humaneval/model={model}/provenance.json"
        cell = scored_run / "default" / model / "humaneval"
        assert (out / link).read_bytes() == (cell / "provenance.json").read_bytes()
        assert (out / link).with_name("config.yaml").read_bytes() == \
            (cell / "config.yaml").read_bytes()
        assert str(scored_run) not in link


class FakeHfApi:
    """The HfApi boundary: records what would be created and uploaded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def create_repo(self, repo_id: str, *, repo_type: str, exist_ok: bool,
                    space_sdk: str | None = None) -> None:
        self.calls.append(("create_repo", repo_id, repo_type, exist_ok))

    def upload_large_folder(self, *, repo_id: str, folder_path: str, repo_type: str) -> None:
        assert Path(folder_path).is_dir()
        self.calls.append(("upload_large_folder", repo_id, folder_path, repo_type))

    def upload_folder(self, *, repo_id: str, folder_path: str, repo_type: str) -> None:
        assert (Path(folder_path) / "app.py").is_file()
        self.calls.append(("upload_folder", repo_id, folder_path, repo_type))


def test_upload_sends_each_folder_to_its_dataset_repo(scored_run: Path) -> None:
    cfg = compose([f"run.root={scored_run}", "publish.dry_run=false", "publish.org=lab"],
                  stage="publish")
    api = FakeHfApi()
    run_publish(cfg, api_factory=lambda: api)
    out = scored_run / "default" / "publish"
    assert api.calls == [
        ("create_repo", "lab/benchforge-results", "dataset", True),
        ("upload_large_folder", "lab/benchforge-results", str(out / "results"), "dataset"),
        ("create_repo", "lab/benchforge-leaderboard", "dataset", True),
        ("upload_large_folder", "lab/benchforge-leaderboard", str(out / "leaderboard"),
         "dataset"),
        ("create_repo", "lab/benchforge-leaderboard-space", "space", True),
        ("upload_folder", "lab/benchforge-leaderboard-space", str(out / "space"), "space"),
    ]
    assert (out / "space" / "leaderboard_source.txt").read_text().strip() == \
        "hf://datasets/lab/benchforge-leaderboard"
    board = pq.read_table(out / "leaderboard" / "leaderboard.parquet").to_pylist()
    for row in board:  # the uploaded copy inside lab/benchforge-results
        relative = row["provenance"].split("/blob/main/")[1]
        assert row["provenance"].startswith(
            "https://huggingface.co/datasets/lab/benchforge-results/blob/main/provenance/")
        assert (out / "results" / relative).is_file()
    no_org = compose([f"run.root={scored_run}", "publish.dry_run=false"], stage="publish")
    with pytest.raises(BenchforgeError, match=r"publish\.org is required"):
        run_publish(no_org, api_factory=lambda: api)


def test_report_writes_png_and_markdown(scored_run: Path, tmp_path: Path) -> None:
    proc = run_cli("report", f"run.root={scored_run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    png = scored_run / "default" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    markdown = (scored_run / "default" / "report.md").read_text()
    assert "| oracle | humaneval | 100.0 | [100.0, 100.0] | 12 | 1 |" in markdown
    assert "| mock-model | humaneval | 66.7 |" in markdown
    assert "![pass@1](report.png)" in markdown
