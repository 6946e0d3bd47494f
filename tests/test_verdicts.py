"""The columnar reader of results.jsonl against a plain per-row computation of the same rules."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from benchforge.errors import BenchforgeError
from benchforge.stats import bootstrap_ci
from benchforge.verdicts import _columns_arrow, _columns_rows, cell_verdicts, read_verdicts


def messy_rows(seed: int = 0) -> list[dict]:
    """Shuffled rows with duplicates, CRUXEval-style skips, labels, nulls and nested extras."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(60):
        for s in range(5):
            passed = bool(rng.random() < 0.4)
            skipped = bool(rng.random() < 0.2) and not passed
            rows.append({"task_id": f"T/{t}", "sample_idx": s, "passed": passed,
                         "skipped": skipped,
                         "failure_mode": None if passed else ["wrong_answer", "timeout",
                                                              None][int(rng.integers(3))],
                         "contaminated": t % 3 == 0, "difficulty": ["easy", "hard"][t % 2],
                         "plus_fail_input": [[1, "a"], {"x": 2}, "s", None][s % 4]})
    order = rng.permutation(len(rows))
    shuffled = [rows[i] for i in order]
    # a rescored duplicate after the original: the first row must win
    shuffled.append({**shuffled[0], "passed": not shuffled[0]["passed"]})
    return shuffled


def expected(rows: list[dict]) -> dict:
    first: dict = {}
    for row in rows:
        first.setdefault((row["task_id"], row["sample_idx"]), row)
    by_task = defaultdict(list)
    for row in first.values():
        by_task[row["task_id"]].append(row)
    out = {}
    for task, task_rows in sorted(by_task.items()):
        task_rows.sort(key=lambda r: r["sample_idx"])  # "run j" is sample j, not file row j
        kept = [r["passed"] for r in task_rows if not r["skipped"]]
        counted = kept if any(kept) else [False] * len(task_rows)
        out[task] = (len(task_rows), counted, task_rows[0]["contaminated"],
                     task_rows[0]["difficulty"])
    modes = Counter(str(r["failure_mode"]) for r in first.values() if not r["passed"])
    return {"tasks": out, "modes": dict(sorted(modes.items()))}


def write(path: Path, rows: list[dict], tail: str = "\n") -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + tail)
    return path


@pytest.mark.parametrize("reader", [_columns_arrow, _columns_rows])
def test_both_readers_apply_the_same_rules(tmp_path: Path, reader) -> None:
    rows = messy_rows()
    columns = reader(write(tmp_path / "results.jsonl", rows))
    assert columns is not None
    got = cell_verdicts(columns)
    want = expected(rows)
    assert got.tasks == list(want["tasks"])
    for i, (task, (n_rows, counted, contaminated, difficulty)) in enumerate(
            want["tasks"].items()):
        assert got.rows[i] == n_rows, task
        assert got.task_verdicts(i) == counted, task
        assert got.c[i] == sum(counted)
        assert got.labels["contaminated"][i] == contaminated
        assert got.labels["difficulty"][i] == difficulty
    assert got.failure_modes == want["modes"]
    width = min(len(v[1]) for v in want["tasks"].values())
    matrix = got.matrix(np.arange(len(got.tasks)))
    assert matrix.tolist() == [v[1][:width] for v in want["tasks"].values()]


def test_torn_or_odd_files_take_the_row_reader_and_give_one_line_errors(tmp_path: Path) -> None:
    rows = messy_rows()
    torn = write(tmp_path / "torn.jsonl", rows, tail="\n{\"task_id\": ")
    assert _columns_arrow(torn) is None
    with pytest.raises(BenchforgeError, match=r"torn.jsonl:302: corrupt row"):
        read_verdicts(torn)
    odd = write(tmp_path / "odd.jsonl", [*rows[:5], {**rows[5], "task_id": 7}])
    assert _columns_arrow(odd) is None  # an int task id: the row reader str()s it
    assert "7" in read_verdicts(odd).tasks
    missing = write(tmp_path / "missing.jsonl", [*rows[:3], {"task_id": "T/1"}])
    with pytest.raises(BenchforgeError, match=r"missing.jsonl: row 4 has no sample_idx, passed"):
        read_verdicts(missing)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(BenchforgeError, match="no results to aggregate"):
        read_verdicts(empty)


def test_shared_bootstrap_draws_equal_a_separate_call() -> None:
    from benchforge.stats import bootstrap_cis

    rng = np.random.default_rng(3)
    a, b = rng.random(300), rng.random(300)
    together = bootstrap_cis([a, b], 500, 11, 0.95)
    assert together[0] == pytest.approx(bootstrap_ci(a, 500, 11, 0.95), abs=1e-12)
    assert together[1] == pytest.approx(bootstrap_ci(b, 500, 11, 0.95), abs=1e-12)
    # and the same as the textbook gather of the same draws
    idx = np.random.default_rng(11).integers(0, 300, size=(500, 300))
    lo, hi = np.quantile(a[idx].mean(axis=1), [0.025, 0.975])
    assert together[0] == pytest.approx((lo, hi), abs=1e-12)


def test_mean_at_n_groups_by_sample_idx_not_file_order(tmp_path: Path) -> None:
    """Same verdicts in two row orders: same mean@N and stderr (over sample indices)."""
    from benchforge.stats import mean_at_n_matrix

    plan = {"T/0": [True, True, False], "T/1": [True, False, False], "T/2": [False] * 3}
    rows = [{"task_id": t, "sample_idx": i, "passed": p}
            for t, verdicts in plan.items() for i, p in enumerate(verdicts)]
    shuffled = rows[:3][::-1] + rows[3:]
    results = []
    for name, order in (("a", rows), ("b", shuffled)):
        verdicts = read_verdicts(write(tmp_path / f"{name}.jsonl", order))
        results.append(mean_at_n_matrix(verdicts.matrix(np.arange(3))))
    assert results[0] == results[1]
    assert results[0]["stderr"] == pytest.approx(np.std([2 / 3, 1 / 3, 0], ddof=1) / np.sqrt(3))
