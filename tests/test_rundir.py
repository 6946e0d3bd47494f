"""Append-only rows survive kills: torn tails are dropped, corrupt rows are refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from benchforge.errors import BenchforgeError
from benchforge.manifest import read_manifest, upsert_cell
from benchforge.rundir import RowAppender, read_rows, write_atomic

ROWS = [{"task_id": f"T/{i}", "sample_idx": 0, "completion": "x" * i} for i in range(3)]


def write(path: Path, rows: list[dict], tail: bytes = b"") -> bytes:
    with RowAppender(path) as appender:
        for row in rows:
            appender.append(row)
    with open(path, "ab") as fh:
        fh.write(tail)
    return path.read_bytes()


def test_appended_rows_read_back(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write(path, ROWS)
    assert read_rows(path) == ROWS
    assert read_rows(tmp_path / "missing.jsonl") == []


def test_torn_tail_without_newline_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    good = write(path, ROWS[:2])
    write(path, [], tail=b'{"task_id": "T/2", "sample_')
    assert read_rows(path) == ROWS[:2]  # ignored on read
    assert path.read_bytes() != good
    assert read_rows(path, torn_tail="repair") == ROWS[:2]
    assert path.read_bytes() == good  # truncated back to the last complete row


def test_torn_tail_complete_json_without_newline_is_redone(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    good = write(path, ROWS[:2])
    write(path, [], tail=json.dumps(ROWS[2]).encode())
    assert read_rows(path, torn_tail="repair") == ROWS[:2]
    assert path.read_bytes() == good


def test_garbled_last_line_is_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    good = write(path, ROWS[:2])
    write(path, [], tail=b'{"task_id": \x00\x00\x00\n')
    assert read_rows(path, torn_tail="repair") == ROWS[:2]
    assert path.read_bytes() == good


def test_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write(path, ROWS[:1], tail=b"not json\n")
    write(path, ROWS[1:])
    before = path.read_bytes()
    for mode in ("ignore", "repair", "error"):
        with pytest.raises(BenchforgeError, match=rf"{path}:2: corrupt row"):
            read_rows(path, torn_tail=mode)
    assert path.read_bytes() == before  # never "repaired" away


def test_error_mode_rejects_torn_tail_but_accepts_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "ext.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]))
    assert read_rows(path, torn_tail="error") == ROWS[:2]
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"task_id": ')
    with pytest.raises(BenchforgeError, match=r"ext.jsonl:2"):
        read_rows(path, torn_tail="error")


def test_non_object_row_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text("[1, 2]\n{}\n")
    with pytest.raises(BenchforgeError, match=r"s.jsonl:1: expected a JSON object"):
        read_rows(path)


def test_write_atomic_replaces_and_respects_umask(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "marker"
    write_atomic(path, "one")
    write_atomic(path, "two")
    assert path.read_text() == "two"
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by group/others (umask 022)
    assert [p.name for p in path.parent.iterdir()] == ["marker"]  # no temp files left


def test_manifest_upsert_and_conflict(tmp_path: Path) -> None:
    row = {"cell_id": "a", "dir": "/x/a", "model": "m", "benchmark": "b", "n_tasks": 1,
           "n_samples": 1}
    upsert_cell(tmp_path, row)
    upsert_cell(tmp_path, {**row, "n_tasks": 2})
    upsert_cell(tmp_path, {**row, "cell_id": "b", "dir": "/x/b"})
    rows = read_manifest(tmp_path)
    assert [(r["cell_id"], r["n_tasks"]) for r in rows] == [("a", 2), ("b", 1)]
    with pytest.raises(BenchforgeError, match="different config"):
        upsert_cell(tmp_path, {**row, "cell_id": "c"})
    with pytest.raises(BenchforgeError, match="no manifest"):
        read_manifest(tmp_path / "nothing")
