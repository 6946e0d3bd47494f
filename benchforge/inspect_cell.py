"""``benchforge inspect``: what failed in a cell, and what flipped between two runs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchforge.console import print_table
from benchforge.errors import BenchforgeError
from benchforge.rundir import CellDir, first_rows_by_key, read_rows


def _rows(path: Path) -> dict[Any, dict[str, Any]]:
    if not path.exists():
        raise BenchforgeError(f"{path}: missing; is this a scored cell dir?")
    return first_rows_by_key(read_rows(path, torn_tail="error"))


CASE_PARTS = (("input", "fail_input"), ("expected", "fail_expected"), ("actual", "fail_actual"))


def failing_case_lines(row: dict[str, Any]) -> list[str]:
    """The failing input with its expected and actual output, per suite (EvalPlus's base and
    plus: ``base_fail_input``...) or for the sample (``fail_input``...)."""
    prefixes = sorted({field[: -len("fail_input")] for field in row
                       if field.endswith("fail_input")})
    lines = []
    for prefix in prefixes:
        name = prefix.rstrip("_") or "failing case"
        status = row.get(f"{prefix}status")
        if status == "not_run":
            lines.append(f"{name}: not run (an earlier suite failed, so it cannot change the "
                         "verdict; score.full_suites=true runs it)")
        elif status is not None:
            lines.append(f"{name}: {status}")
        for label, suffix in CASE_PARTS:
            value = row.get(prefix + suffix)
            if value is not None:
                lines.append(f"  {label:<9} {value}")
    return lines


def run_inspect(cfg: DictConfig) -> dict[str, Any]:
    """``benchforge inspect CELL``: the cell's failure modes; with ``--failed`` its failed samples
    (raw answer, extracted code, failing input); with ``--diff OTHER`` the samples that flipped.

    Raises:
        BenchforgeError: no CELL given, or it cannot be read.
    """
    if not cfg.inspect.cell:
        raise BenchforgeError("usage: benchforge inspect <cell dir> [--failed] "
                              "[--diff <other cell dir>]")
    cell = CellDir(Path(str(cfg.inspect.cell)).expanduser())
    results = _rows(cell.results)
    failed = [r for key, r in sorted(results.items()) if not r["passed"]]
    modes = Counter(str(r["failure_mode"]) for r in failed)
    print(f"{cell.path}: {len(failed)} of {len(results)} samples failed")
    print_table("failure modes", ["failure mode", "samples"],
                sorted(modes.items(), key=lambda kv: -kv[1]))
    report: dict[str, Any] = {"failed": len(failed), "failure_modes": dict(modes)}
    if cfg.inspect.failed:
        samples = _rows(cell.samples)
        shown = failed[: int(cfg.inspect.limit)]
        for row in shown:
            key = (row["task_id"], row["sample_idx"])
            print(f"\n=== {row['task_id']} #{row['sample_idx']}: {row['failure_mode']} "
                  f"({row.get('duration_s')} s)")
            for line in failing_case_lines(row):
                print(line)
            if row.get("detail"):
                print(f"detail: {row['detail']}")
            sample = samples.get(key, {})
            if row.get("exec_failure_mode"):
                print(f"code failed as: {row['exec_failure_mode']}")
            print(f"--- raw answer (finish_reason={sample.get('finish_reason')})")
            raw = sample.get("completion")
            print(raw if raw else "(empty)")
            print("--- code (extracted)")
            print(sample.get("code", "(sample missing)"))
        if len(failed) > len(shown):
            print(f"\n... {len(failed) - len(shown)} more (inspect.limit={cfg.inspect.limit})")
        report["shown"] = [f"{r['task_id']}#{r['sample_idx']}" for r in shown]
    if cfg.inspect.diff:
        other = CellDir(Path(str(cfg.inspect.diff)).expanduser())
        theirs = _rows(other.results)
        flipped = [(key, results[key], theirs[key]) for key in sorted(set(results) & set(theirs))
                   if bool(results[key]["passed"]) != bool(theirs[key]["passed"])]
        print(f"\nflipped between {cell.path} (A) and {other.path} (B): {len(flipped)}")
        print_table("flipped samples", ["task", "sample", "A", "B", "A failure", "B failure"],
                    [[k[0], k[1], "pass" if a["passed"] else "fail",
                      "pass" if b["passed"] else "fail", a["failure_mode"] or "",
                      b["failure_mode"] or ""] for k, a, b in flipped])
        report["flipped"] = [{"task_id": k[0], "sample_idx": k[1], "a": bool(a["passed"]),
                              "b": bool(b["passed"])} for k, a, b in flipped]
    return report
