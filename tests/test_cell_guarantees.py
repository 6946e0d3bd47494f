"""What benchforge guarantees about a run directory: one writer per cell and stage, markers that
are never re-signed over edited rows, a record per attempt, runs that can move, and status/verify
that report every problem of every cell."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _support import run_cli

from benchforge.celllock import CellLocked, cell_lock, lock_path
from benchforge.errors import BenchforgeError
from benchforge.rundir import read_rows

HOLD = """
import fcntl, json, os, sys, time
path, record = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)
os.write(fd, record.encode())
print("held", flush=True)
time.sleep(float(sys.argv[3]))
"""


def hold_lock(cell: Path, stage: str, record: dict, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the cell's lock file (with the given holder record)."""
    cell.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_path(cell, stage)),
                             json.dumps(record), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


# ------------------------------------------------------------------------------------- 1 locks
def test_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = {"pid": 4242, "host": "node7", "stage": "score", "since_utc": "T"}
    proc = hold_lock(tmp_path / "cell", "score", holder, 30)
    try:
        with pytest.raises(CellLocked, match=r"score is in use by pid 4242 on host node7.*"
                                             r"run.wait_for_lock=true"), \
                cell_lock(tmp_path / "cell", "score"):
            pass
        with cell_lock(tmp_path / "cell", "generate"):  # another stage: its own lock
            pass
    finally:
        proc.kill()
        proc.wait()


def test_waiting_writer_gets_the_lock_when_released(tmp_path: Path) -> None:
    proc = hold_lock(tmp_path / "cell", "generate",
                     {"pid": 1, "host": "elsewhere", "stage": "generate"}, 1.5)
    started = time.monotonic()
    with cell_lock(tmp_path / "cell", "generate", wait=True) as me:
        waited = time.monotonic() - started
        assert me["pid"] == os.getpid()
        assert json.loads(lock_path(tmp_path / "cell", "generate").read_text())["pid"] == \
            os.getpid()
    proc.wait()
    assert 1.0 < waited < 10
    assert not lock_path(tmp_path / "cell", "generate").exists()  # released: removed


def test_lock_of_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # The lock is still held (as by an NFS server that missed the crash), but its recorded
    # holder is a process of this host that no longer runs.
    proc = hold_lock(tmp_path / "cell", "score",
                     {"pid": dead.pid, "host": socket.gethostname(), "stage": "score"}, 30)
    try:
        with cell_lock(tmp_path / "cell", "score") as me:
            assert me["pid"] == os.getpid()
    finally:
        proc.kill()
        proc.wait()


def _keys(path: Path) -> tuple[int, int]:
    rows = read_rows(path)
    return len(rows), len({(r["task_id"], r["sample_idx"]) for r in rows})


@pytest.mark.slow
def test_two_processes_racing_on_one_cell(tmp_path: Path) -> None:
    """generate (via run), score (score.force) and aggregate: each pair ends with one row per
    key and one refusal, or a wait with run.wait_for_lock=true. The second process starts
    once the first is writing, so the two overlap however slow the machine is."""
    root = tmp_path / "runs"
    args = [f"run.root={root}", "generate.progress=false", "model.oracle_latency_s=0.02",
            "model.concurrency=1", "score.workers=1"]
    cell = root / "default" / "oracle" / "humaneval"

    def start(stage: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "benchforge", stage, *args, *extra],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def holds(lock: str, pid: int) -> bool:
        try:
            return json.loads((cell / f".{lock}.lock").read_text())["pid"] == pid
        except (OSError, ValueError, KeyError):
            return False

    def race(stage: str, lock: str, *extra: str) -> list[subprocess.CompletedProcess[str]]:
        first = start(stage, *extra)
        deadline = time.monotonic() + 120
        while not holds(lock, first.pid):  # the first is writing: the second overlaps it
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.01)
        procs = [first, start(stage, *extra)]
        outs = [p.communicate(timeout=300) for p in procs]
        return [subprocess.CompletedProcess(p.args, p.returncode, *out)
                for p, out in zip(procs, outs, strict=True)]

    done = race("run", "generate")
    assert [p.returncode for p in done] == [0, 2], [p.stderr[-500:] for p in done]
    assert "Traceback" not in done[1].stderr
    assert "is in use by pid" in done[1].stderr.strip().splitlines()[-1]
    assert _keys(cell / "samples.jsonl") == (164, 164)
    assert _keys(cell / "results.jsonl") == (164, 164)

    forced = race("score", "score", "score.force=true")
    assert [p.returncode for p in forced] == [0, 2], [p.stderr[-500:] for p in forced]
    assert "score is in use by pid" in forced[1].stderr
    assert _keys(cell / "results.jsonl") == (164, 164)
    waited = race("score", "score", "score.force=true", "run.wait_for_lock=true")
    assert [p.returncode for p in waited] == [0, 0], [p.stderr[-500:] for p in waited]
    assert "waiting (run.wait_for_lock=true)" in waited[1].stderr
    assert _keys(cell / "results.jsonl") == (164, 164)
    aggregated = [start("aggregate", "run.wait_for_lock=true") for _ in range(2)]
    assert [p.wait(120) for p in aggregated] == [0, 0]
    assert run_cli("verify", f"run.root={root}", cwd=tmp_path).returncode == 0


# ----------------------------------------------------------------------------------- 2 markers
def _flip_verdict(cell: Path) -> None:
    rows = read_rows(cell / "results.jsonl")
    rows[3]["passed"], rows[3]["failure_mode"] = False, "assertion"
    (cell / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _break_sample(cell: Path) -> None:
    rows = read_rows(cell / "samples.jsonl")
    rows[2]["code"] = rows[2]["completion"] = "def broken(:"
    (cell / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("edit", [_flip_verdict, _break_sample])
def test_edited_rows_are_never_resigned_until_repaired(cfg_with, edit, capsys) -> None:
    from benchforge.integrity import MarkerMismatch
    from benchforge.stages import run_run, run_verify, runner

    cfg = cfg_with(benchmark__limit=8, generate__progress=False, score__workers=2)
    run_run(cfg)
    cell = Path(str(cfg.run.dir)).resolve()
    edit(cell)
    markers = {n: (cell / n).read_bytes() for n in ("generate.done", "score.done")}
    first = run_verify(cfg)
    assert first
    for _ in range(3):  # any number of reruns: refused, markers untouched, verify still fails
        for stage in ("run", "score", "aggregate"):
            with pytest.raises(MarkerMismatch, match=r"benchforge verify.*repair"):
                runner(stage)(cfg)
        assert {n: (cell / n).read_bytes() for n in markers} == markers
        assert run_verify(cfg) == first
    result = runner("repair")(cfg)
    assert result["problems"] and Path(result["archived"]).is_dir()
    assert run_verify(cfg) == []
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["pass@1"]["value"] == 1.0  # re-derived, the edit did not become the score
    kept = list(Path(result["archived"]).iterdir())
    assert any(p.name in ("results.jsonl", "samples.jsonl") for p in kept)  # nothing lost


def test_force_rescore_repairs_an_edited_verdict(cfg_with) -> None:
    from benchforge.stages import run_aggregate, run_run, run_score, run_verify

    cfg = cfg_with(benchmark__limit=5, generate__progress=False, score__workers=2)
    run_run(cfg)
    _flip_verdict(Path(str(cfg.run.dir)))
    cfg.score.force = True
    run_score(cfg)
    cfg.score.force = False
    run_aggregate(cfg)
    assert run_verify(cfg) == []


def test_deleted_generate_done_is_a_verify_problem(cfg_with) -> None:
    from benchforge.stages import run_run, run_verify

    cfg = cfg_with(benchmark__limit=3, generate__progress=False, score__workers=1)
    run_run(cfg)
    (Path(str(cfg.run.dir)) / "generate.done").unlink()
    assert any("present without generate.done" in p for p in run_verify(cfg))


# ------------------------------------------------------------------------ 3 attempts and config
def test_config_is_written_once_and_checked(cfg_with) -> None:
    from benchforge.attempts import attempt_summaries
    from benchforge.stages import run_run, run_verify

    cfg = cfg_with(benchmark__limit=4, generate__progress=False, score__workers=1)
    run_run(cfg)
    cell = Path(str(cfg.run.dir)).resolve()
    planned = (cell / "config.yaml").read_text()
    provenance = json.loads((cell / "provenance.json").read_text())
    # an execution setting: recorded in the attempt, never in config.yaml
    cfg.score.workers = 2
    cfg.sandbox.name = "rlimit-only"
    run_run(cfg)
    assert (cell / "config.yaml").read_text() == planned
    assert json.loads((cell / "provenance.json").read_text())["overrides"] == \
        provenance["overrides"]
    last = attempt_summaries(cell)[-1]
    assert last["execution"]["score.workers"] == [1, 2]
    assert last["execution"]["sandbox.name"][1] == "rlimit-only"
    # a setting that decides verdicts: refused, naming it
    cfg.sandbox.time_factor = 8.0
    with pytest.raises(BenchforgeError, match=r"sandbox.time_factor \(planned 4.0, now 8.0\)"):
        run_run(cfg)
    cfg.sandbox.time_factor = 4.0
    # an edited config.yaml: verify says so and a rerun refuses
    (cell / "config.yaml").write_text(planned.replace("temperature: 0.0", "temperature: 0.8"))
    assert any("config.yaml: changed after the cell was planned" in p for p in run_verify(cfg))
    with pytest.raises(BenchforgeError, match=r"config\.yaml: changed after the cell was planned"):
        run_run(cfg)


def test_every_stage_invocation_is_an_attempt(cfg_with) -> None:
    from benchforge.attempts import attempt_summaries, read_attempt_log
    from benchforge.stages import run_run

    cfg = cfg_with(benchmark__limit=4, generate__progress=False, score__workers=1)
    run_run(cfg)
    run_run(cfg)
    cell = Path(str(cfg.run.dir)).resolve()
    summaries = attempt_summaries(cell)
    assert [s["stage"] for s in summaries] == ["plan", "generate", "score", "aggregate"] * 2
    assert all(s["outcome"] == "completed" for s in summaries)
    gen = summaries[1]
    assert gen["rows_written"] == 4 and gen["completion_tokens"] > 0 and gen["wall_s"] > 0
    score = summaries[2]
    assert score["sandbox_mode"] and score["sandbox_guarantees"] is not None
    assert score["workers"] == 1 and score["rows_written"] == 4
    assert summaries[5]["rows_written"] == 0  # the rerun had nothing to do
    begin = read_attempt_log(cell)[0]
    assert {"host", "pid", "config_sha256", "overrides", "utc"} <= set(begin)


@pytest.mark.slow
def test_kill_and_resume_cost_is_the_sum_of_the_attempts(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    args = [sys.executable, "-m", "benchforge", "generate", "benchmark.limit=30",
            f"run.root={root}", "generate.progress=false", "model.oracle_latency_s=0.1",
            "model.concurrency=1"]
    cell = root / "default" / "oracle" / "humaneval"
    started = time.monotonic()
    first = subprocess.Popen(args, cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (cell / "samples.jsonl").exists() or len(read_rows(cell / "samples.jsonl")) < 12:
        assert first.poll() is None and time.monotonic() - started < 60
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    wall_first = time.monotonic() - started
    started = time.monotonic()
    second = run_cli("run", *args[4:], cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    wall_second = time.monotonic() - started
    from benchforge.attempts import attempt_summaries

    generate = [s for s in attempt_summaries(cell) if s["stage"] == "generate"]
    assert len(generate) == 2 and generate[0]["outcome"].startswith("killed")
    assert generate[0]["rows_written"] >= 12
    total = sum(s["wall_s"] for s in generate)
    cost = json.loads((cell / "metrics.json").read_text())["cost"]
    assert cost["generate_wall_s"] == pytest.approx(total, rel=0.02)
    assert cost["generate_attempts"] == 2
    # each attempt lies within its process's wall time; together they cover the generation
    assert generate[0]["wall_s"] <= wall_first and generate[1]["wall_s"] <= wall_second
    assert total >= 30 * 0.1 * 0.9
    tokens = sum(r["completion_tokens"] for r in read_rows(cell / "samples.jsonl"))
    assert cost["tokens_per_s"] == pytest.approx(tokens / total, rel=0.02)
    stages = json.loads((cell / "provenance.json").read_text())["stages"]
    assert stages["generate"]["attempts"] == 2
    assert stages["generate"]["wall_s"] == pytest.approx(total, rel=0.02)


# ----------------------------------------------------------------------------- 4 portable runs
@pytest.mark.slow
def test_moved_and_copied_run_read_the_same(tmp_path: Path) -> None:
    made = run_cli("run", "benchmark.limit=5", f"run.root={tmp_path / 'a'}",
                   "generate.progress=false", cwd=tmp_path)
    assert made.returncode == 0, made.stderr

    def look(root: Path) -> tuple[str, int, str]:
        status = run_cli("status", f"run.root={root}", cwd=tmp_path)
        verify = run_cli("verify", f"run.root={root}", cwd=tmp_path)
        report = run_cli("report", f"run.root={root}", cwd=tmp_path)
        assert report.returncode == 0, report.stderr
        assert (root / "default" / "report.png").is_file()
        table = status.stdout.replace(str(root), "ROOT")
        return table, verify.returncode, (root / "default" / "report.md").read_text().replace(
            str(root), "ROOT")

    before = look(tmp_path / "a")
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert look(tmp_path / "b") == before
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    assert look(tmp_path / "c") == before
    results = tmp_path / "c" / "default" / "oracle" / "humaneval" / "results.jsonl"
    results.write_text("".join(results.read_text().splitlines(keepends=True)[:-1]))
    copy = run_cli("verify", f"run.root={tmp_path / 'c'}", cwd=tmp_path)
    assert copy.returncode == 1 and "has 4 of 5 rows" in copy.stderr
    assert str(tmp_path / "c") in copy.stderr and str(tmp_path / "b") not in copy.stderr
    assert run_cli("verify", f"run.root={tmp_path / 'b'}", cwd=tmp_path).returncode == 0


# ---------------------------------------------------------------------------- 5 status/verify
def test_status_and_verify_report_every_cell(cfg_with, capsys) -> None:
    from benchforge.stages import run_run, run_status, run_verify

    cfgs = [cfg_with(benchmark__limit=6, generate__progress=False, score__workers=1,
                     model__name=name) for name in ("m1", "m2")]
    for cfg in cfgs:
        run_run(cfg)
    c1, c2 = (Path(str(c.run.dir)).resolve() for c in cfgs)
    (c1 / "provenance.json").write_text("{")  # one bad cell...
    _flip_verdict(c2)  # ...and a stale metrics.json in the other
    with open(c2 / "results.jsonl", "a") as fh:
        fh.write(json.dumps(read_rows(c2 / "results.jsonl")[0]) + "\n")
    capsys.readouterr()
    statuses = run_status(cfgs[0])
    shown = capsys.readouterr().out
    assert len(statuses) == 2
    s1, s2 = statuses
    assert any("provenance.json" in n for n in s1["notes"]) and s1["scored"] == 6
    assert s2["metrics"] == "stale" and s2["pass@1"]["value"] == pytest.approx(5 / 6)
    assert any("1 duplicate row" in n for n in s2["notes"])
    assert "(recomputed)" in shown
    problems = run_verify(cfgs[0])
    assert any("m1" in p and "provenance.json: not valid JSON" in p for p in problems)
    assert any("m2" in p and "duplicate row" in p for p in problems)
    # a corrupt line is named in words, never as a negative count
    lines = (c2 / "results.jsonl").read_text().splitlines(keepends=True)
    lines[2] = '{"task_id": "HumanEval/2", "sam\n'
    (c2 / "results.jsonl").write_text("".join(lines))
    s2 = run_status(cfgs[0])[1]
    assert s2["scored"] is None
    assert any("results.jsonl corrupt: results.jsonl:3" in n for n in s2["notes"])
    # no count printed as -1 (a corrupt file is said in words); paths may contain "-1"
    assert not re.search(r"(?<![\w/.-])-1(?![\w.])", capsys.readouterr().out)
