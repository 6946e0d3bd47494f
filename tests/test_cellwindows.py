"""Sample windows on disk: K fixed per cell, one part file per window, the cell as their union."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support import run_cli
from omegaconf import OmegaConf

from benchforge.cellwindows import (
    KeyIndex,
    PartAppender,
    fix_windows,
    mark_window,
    part_path,
    read_windows,
    reconcile,
    requested_windows,
    row_files,
    window_marker,
    window_problems,
    windows_path,
)
from benchforge.errors import BenchforgeError
from benchforge.manifest import annotate_cell, read_manifest, upsert_cell
from benchforge.rundir import CellDir, RowAppender, read_rows
from benchforge.windows import WindowError

TASKS = [f"T/{i}" for i in range(5)]


def compute(**keys: object) -> object:
    return OmegaConf.create({"shards_per_cell": 1, "tasks_per_shard": None, **keys})


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_tasks_per_shard_from_the_config() -> None:
    windows = requested_windows(compute(tasks_per_shard=2), 5, 3)
    assert [(w.start, w.stop) for w in windows] == [(0, 6), (6, 12), (12, 15)]
    assert requested_windows(compute(), 5, 3) == requested_windows(None, 5, 3)  # one window
    assert len(requested_windows(compute(shards_per_cell=4), 5, 3)) == 4
    with pytest.raises(WindowError, match="not both"):
        requested_windows(compute(shards_per_cell=2, tasks_per_shard=2), 5, 3)


def test_k_is_fixed_per_cell(tmp_path: Path) -> None:
    cdir = CellDir(tmp_path / "cell")
    assert fix_windows(cdir, compute(), 5, 2) is None
    assert not windows_path(cdir).exists()  # K=1 writes nothing: the cell is as before
    planned = fix_windows(cdir, compute(shards_per_cell=4), 5, 2)
    assert planned is not None and len(planned) == 4
    record = json.loads(windows_path(cdir).read_text())
    assert record["of"] == 4 and record["asked"] == "compute.shards_per_cell=4"
    assert fix_windows(cdir, compute(shards_per_cell=4), 5, 2) == planned == read_windows(cdir)
    for other, shown in ((compute(shards_per_cell=2), "K=2"), (compute(), "K=1"),
                         (compute(tasks_per_shard=1), "K=5")):
        with pytest.raises(WindowError) as refused:
            fix_windows(cdir, other, 5, 2)
        text = one_line(refused.value)
        assert "K=4" in text and shown in text and "compute.shards_per_cell=4" in text
    # as many windows, cut elsewhere (5 tasks x 2 samples: 2 near-equal windows vs
    # 3 tasks per window): the line says why two equal K are refused
    cut = CellDir(tmp_path / "cut")
    fix_windows(cut, compute(shards_per_cell=2), 5, 2)  # keys 0..5, 5..10
    with pytest.raises(WindowError) as refused:
        fix_windows(cut, compute(tasks_per_shard=3), 5, 2)  # keys 0..6, 6..10
    assert "K=2 (compute.tasks_per_shard=3), cut at other keys" in one_line(refused.value)
    # an unsharded cell that has rows cannot be cut into windows afterwards
    plain = CellDir(tmp_path / "plain")
    plain.path.mkdir()
    plain.samples.write_text('{"task_id": "T/0", "sample_idx": 0}\n')
    with pytest.raises(WindowError) as refused:
        fix_windows(plain, compute(shards_per_cell=3), 5, 2)
    assert "K=1" in one_line(refused.value) and "K=3" in str(refused.value)


def _rows(keys: list[tuple[str, int]]) -> list[dict[str, object]]:
    return [{"task_id": t, "sample_idx": s, "code": f"{t}#{s}"} for t, s in keys]


def test_parts_reconcile_into_the_union_only_when_every_window_is_done(tmp_path: Path) -> None:
    cdir = CellDir(tmp_path / "cell")
    windows = fix_windows(cdir, compute(shards_per_cell=3), 5, 2)
    assert windows is not None
    expected = {(t, s) for t in TASKS for s in range(2)}
    index = KeyIndex(windows, TASKS, 2)
    grid = [(t, s) for t in TASKS for s in range(2)]
    assert [index.window(t, s) for t, s in grid] == [w.index for w in windows
                                                      for _ in range(w.size)]
    # windows 2 and 0 written (out of order) through one appender routing rows to their part
    with PartAppender(cdir, "samples", index, [windows[0], windows[2]]) as sink:
        for row in reversed(_rows([k for w in (windows[2], windows[0])
                                   for k in w.keys(TASKS, 2)])):
            sink.append(row)
    assert [mark_window(cdir, "samples", w, TASKS, 2) for w in windows] == [True, False, True]
    assert row_files(cdir, "samples") == [part_path(cdir, "samples", 0),
                                          part_path(cdir, "samples", 2)]
    assert reconcile(cdir, "samples", windows, expected) is None
    assert not cdir.samples.exists()  # no union while a window is missing
    with RowAppender(part_path(cdir, "samples", 1)) as appender:
        for row in _rows(list(windows[1].keys(TASKS, 2)))[:-1]:
            appender.append(row)
    assert not mark_window(cdir, "samples", windows[1], TASKS, 2)  # one key short
    with RowAppender(part_path(cdir, "samples", 1)) as appender:
        appender.append(_rows(list(windows[1].keys(TASKS, 2)))[-1])
    assert mark_window(cdir, "samples", windows[1], TASKS, 2)
    parts = reconcile(cdir, "samples", windows, expected)
    assert parts is not None and [p["index"] for p in parts["windows"]] == [0, 1, 2]
    union = read_rows(cdir.samples)
    assert sorted((r["task_id"], r["sample_idx"]) for r in union) == sorted(expected)
    assert cdir.samples.read_bytes() == b"".join(
        part_path(cdir, "samples", w.index).read_bytes() for w in windows)
    assert row_files(cdir, "samples") == [cdir.samples]
    assert reconcile(cdir, "samples", windows, expected) == parts  # idempotent
    assert window_problems(cdir) == []
    # a part edited after its marker is never folded into the union again
    with open(part_path(cdir, "samples", 1), "a") as fh:
        fh.write(json.dumps(_rows([("T/0", 0)])[0]) + "\n")
    assert any("changed after generate.w1.done" in p for p in window_problems(cdir))
    with pytest.raises(BenchforgeError, match=r"changed after generate\.w1\.done"):
        reconcile(cdir, "samples", windows, expected)


def test_a_row_of_another_window_is_refused(tmp_path: Path) -> None:
    cdir = CellDir(tmp_path / "cell")
    windows = fix_windows(cdir, compute(shards_per_cell=2), 5, 1)
    assert windows is not None
    with RowAppender(part_path(cdir, "samples", 0)) as appender:
        for row in _rows([("T/0", 0), ("T/4", 0)]):  # T/4 is window 1's
            appender.append(row)
    with pytest.raises(BenchforgeError, match="outside window 0"):
        mark_window(cdir, "samples", windows[0], TASKS, 1)
    assert not window_marker(cdir, "samples", 0).exists()


def test_manifest_has_one_row_per_window_and_reads_as_one_cell(tmp_path: Path) -> None:
    root = tmp_path / "run"
    cell = {"cell_id": "abc", "model": "m", "benchmark": "b", "dir": "m/b", "n_tasks": 5,
            "n_samples": 2}
    other = {**cell, "dir": "m/c"}
    upsert_cell(root, cell)  # planned unsharded first (nothing generated yet)
    upsert_cell(root, other)
    windows = [{"index": i, "of": 3, "start": s, "stop": e}
               for i, (s, e) in enumerate([(0, 4), (4, 7), (7, 10)])]
    upsert_cell(root, cell, windows=windows)
    upsert_cell(root, cell, windows=windows)  # idempotent
    on_disk = read_rows(root / "manifest.jsonl")
    assert [(r["dir"], (r.get("window") or {}).get("index")) for r in on_disk] == [
        ("m/b", 0), ("m/b", 1), ("m/b", 2), ("m/c", None)]
    assert annotate_cell(root, str(root / "m/b"), {"shard_state": "generate: done",
                                                   "generate_job": "7_1"}, window=1)
    cells = read_manifest(root)
    assert [c["dir_recorded"] for c in cells] == ["m/b", "m/c"]
    sharded = cells[0]
    assert sharded["windows"] == 3 and "window" not in sharded
    assert "generate_job" not in sharded and "shard_state" not in sharded
    assert [s["window"]["index"] for s in sharded["shards"]] == [0, 1, 2]
    assert sharded["shards"][1]["shard_state"] == "generate: done"
    assert "shard_state" not in sharded["shards"][0]
    assert "windows" not in cells[1]
    with pytest.raises(BenchforgeError, match="different config"):
        upsert_cell(root, {**cell, "cell_id": "zzz"}, windows=windows)


def _cli(tmp_path: Path, *extra: str) -> list[str]:
    return [f"run.root={tmp_path / 'runs'}", "model=oracle", "benchmark=humaneval",
            "benchmark.limit=6", "model.n_samples=2", "generate.progress=false", *extra]


@pytest.mark.slow
def test_generate_done_only_after_every_window_and_another_k_is_one_line(
        tmp_path: Path) -> None:
    cell = tmp_path / "runs/default/oracle/humaneval"
    for i in range(3):
        proc = run_cli("generate", *_cli(tmp_path, "compute.shards_per_cell=3",
                                         f"compute.window={i}"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (cell / f"generate.w{i}.done").exists()
        assert (cell / "generate.done").exists() == (i == 2), i
        assert not (cell / "samples.jsonl").exists() or i == 2
        if i == 0:  # window 0 is scored while the others are not generated yet
            early = run_cli("score", *_cli(tmp_path, "compute.shards_per_cell=3",
                                           "compute.window=1"), cwd=tmp_path)
            assert early.returncode == 2 and "generate.w1.done is missing" in early.stderr
            assert len(early.stderr.strip().splitlines()) == 1, early.stderr
            scored = run_cli("score", *_cli(tmp_path, "compute.shards_per_cell=3",
                                            "compute.window=0"), cwd=tmp_path)
            assert scored.returncode == 0, scored.stderr[-2000:]
            assert (cell / "score.w0.done").exists() and not (cell / "score.done").exists()
            assert len(read_rows(cell / "results.w0.jsonl")) == 4
    logs = {p.name for p in (cell / "logs").glob("attempts*.jsonl")}
    assert logs == {"attempts.w0.jsonl", "attempts.w1.jsonl", "attempts.w2.jsonl"}
    for i in range(3):  # each window's attempt counts the rows of its own part
        ends = [a for a in read_rows(cell / "logs" / f"attempts.w{i}.jsonl")
                if a["event"] == "end" and a["stage"] == "generate"]
        assert [a["rows_written"] for a in ends] == [4] and ends[0]["window"] == i
    done = json.loads((cell / "generate.done").read_text())
    assert done["rows"] == 12 and len(done["windows"]) == 3
    status = run_cli("status", f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert status.returncode == 0 and "12/12" in status.stdout
    for k_override, asked in (("compute.shards_per_cell=2", "K=2"), (None, "K=1")):
        proc = run_cli("generate", *_cli(tmp_path, *([k_override] if k_override else [])),
                       cwd=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "K=3" in lines[0] and asked in lines[0]


def _sorted_rows(path: Path) -> list[str]:
    """The rows sorted by key, timings (``*_s``) left out: what must not depend on K."""
    rows = read_rows(path)
    return sorted(json.dumps({k: v for k, v in r.items() if not k.endswith("_s")},
                             sort_keys=True) for r in rows)


@pytest.mark.slow
def test_four_windows_give_the_same_cell_as_one(tmp_path: Path, mock_server) -> None:
    """K=4 locally (one process, every window) against K=1: the same rows, the same score,
    through status/verify/inspect; with wrong answers so verdicts differ across tasks."""
    url = mock_server(wrong={"HumanEval/1", "HumanEval/6", "HumanEval/10"})
    common = ["model=endpoint", f"model.base_url={url}", "model.served_name=mock-model",
              "benchmark=humaneval", "benchmark.limit=13", "model.n_samples=2",
              "generate.progress=false", "score.workers=2"]
    cells = {}
    for k in (1, 4):
        root = tmp_path / f"k{k}"
        proc = run_cli("run", *common, f"run.root={root}", f"compute.shards_per_cell={k}",
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        cells[k] = root / "default/mock-model/humaneval"
        assert run_cli("verify", f"run.root={root}", cwd=tmp_path).returncode == 0
    one, four = cells[1], cells[4]
    assert not (one / "windows.json").exists() and not list(one.glob("*.w*.jsonl"))
    assert len(list(four.glob("samples.w*.jsonl"))) == 4 == len(list(four.glob("score.w*.done")))
    for name in ("samples.jsonl", "results.jsonl"):
        assert _sorted_rows(one / name) == _sorted_rows(four / name), name
    metrics = [json.loads((c / "metrics.json").read_text()) for c in (one, four)]
    assert metrics[0]["pass@1"] == metrics[1]["pass@1"]
    assert metrics[1]["pass@1"]["value"] == pytest.approx(10 / 13)
    manifest = read_rows(tmp_path / "k4/default/manifest.jsonl")
    assert [r["window"]["index"] for r in manifest] == [0, 1, 2, 3]
    assert len(read_rows(tmp_path / "k1/default/manifest.jsonl")) == 1
    status = run_cli("status", f"run.root={tmp_path / 'k4'}", cwd=tmp_path)
    assert "26/26 ✓" in status.stdout and status.stdout.count("└ window") == 4
    inspect = run_cli("inspect", str(four), "--failed", cwd=tmp_path)
    assert inspect.returncode == 0 and "HumanEval/6" in inspect.stdout


@pytest.mark.slow
def test_an_edited_part_is_found_and_repaired(tmp_path: Path) -> None:
    args = _cli(tmp_path, "compute.shards_per_cell=3")
    assert run_cli("run", *args, cwd=tmp_path).returncode == 0
    cell = tmp_path / "runs/default/oracle/humaneval"
    before = {n: _sorted_rows(cell / n) for n in ("samples.jsonl", "results.jsonl")}
    part = cell / "samples.w1.jsonl"
    rows = read_rows(part)
    rows[0]["code"] = "raise SystemExit"
    part.write_text("".join(json.dumps(r) + "\n" for r in rows))
    verify = run_cli("verify", f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert verify.returncode == 1 and "samples.w1.jsonl: changed after generate.w1.done" \
        in verify.stderr, verify.stderr
    union = (cell / "samples.jsonl").read_bytes()
    assert run_cli("generate", *args, cwd=tmp_path).returncode == 0  # the signed union stands
    assert (cell / "samples.jsonl").read_bytes() == union
    repaired = run_cli("repair", *args, cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert run_cli("verify", f"run.root={tmp_path / 'runs'}", cwd=tmp_path).returncode == 0
    assert {n: _sorted_rows(cell / n) for n in before} == before
    assert list((cell / "logs").glob("repair-*/samples.w1.jsonl"))


def test_a_sweep_gets_one_array_element_per_window(shared_data: Path) -> None:
    """K of a sweep: shards_per_cell as given; tasks_per_shard from the largest cell (every
    job composed); a window named by hand, or none asked: one element per cell."""
    from benchforge.config import compose
    from benchforge.launch import sweep_windows

    base = [f"data.root={shared_data}", "benchmark=humaneval"]

    def k(*overrides: str) -> int:
        sweep = [*base, *overrides]
        return sweep_windows(compose([o.split(",")[0] for o in sweep], stage="generate"),
                             sweep, "generate")

    assert k() == 1
    assert k("compute.shards_per_cell=4") == 4
    assert k("compute.shards_per_cell=4", "compute.window=2") == 1
    assert k("compute.tasks_per_shard=3", "benchmark.limit=7,10") == 4  # 10 tasks -> 4
    with pytest.raises(WindowError, match=r"shards_per_cell must be >= 1"):
        k("compute.shards_per_cell=0")


def test_a_window_score_shard_waits_while_its_generate_array_is_alive(tmp_path: Path,
                                                                      monkeypatch) -> None:
    from benchforge import shard, slurm

    cdir = CellDir(tmp_path / "cell")
    cdir.path.mkdir()
    fix_windows(cdir, compute(shards_per_cell=3), 5, 2)
    # window 0's generate element started (job 77_0); window 2's is still queued behind it
    shard.append_attempt(cdir, {"event": "start", "stage": "generate", "job_id": "77_0",
                                "window": 0})
    monkeypatch.setattr(slurm, "job_states", lambda ids: {i: "RUNNING" for i in ids})
    alive = {"77": True}
    monkeypatch.setattr(slurm, "array_active", lambda array: alive.get(array, False))
    with pytest.raises(shard.WaitForGeneration, match=r"window 2's generate shard has not "
                                                      r"started yet; .*array 77 is active"):
        shard.require_generation(cdir, 2)
    with pytest.raises(shard.WaitForGeneration, match="generate job 77_0 is RUNNING"):
        shard.require_generation(cdir, 0)
    alive["77"] = False  # the array is gone and window 2 never generated: refuse, one line
    with pytest.raises(BenchforgeError) as refused:
        shard.require_generation(cdir, 2)
    assert not isinstance(refused.value, shard.WaitForGeneration)
    assert "generate.w2.done is missing and no generate job has run for window 2" in \
        str(refused.value)
    window_marker(cdir, "samples", 2).write_text("{}")  # generated: go on
    shard.require_generation(cdir, 2)


def test_a_negative_window_index_is_one_line() -> None:
    from benchforge.cellwindows import selected_windows
    from benchforge.windows import plan_windows

    windows = plan_windows(3, 1, shards_per_cell=2)
    with pytest.raises(WindowError, match=r"^compute.window=-1: a window index is 0 or more"):
        selected_windows(windows, -1)
    assert selected_windows(windows, 5) == []  # past the last: a sweep sized for bigger cells
    assert selected_windows(windows, 1) == [windows[1]]
