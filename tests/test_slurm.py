"""SLURM sweeps through hydra-submitit-launcher, on a real single-node SLURM (``slurm`` marker).

CI starts the cluster with ``.ci/slurm-up.sh`` (partition ``debug``, QOS normal/long/backfill
where long preempts backfill with requeue, two fake GPUs). Without ``sinfo`` these tests skip,
unless ``BENCHFORGE_REQUIRE_SLURM=1`` (set by CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import run_cli

from benchforge.config import compose
from benchforge.rundir import read_rows

pytestmark = pytest.mark.slurm

# Small shards that fit the 2-CPU CI node two at a time.
SHARDS = ["compute=slurm", "compute.partition=debug", "compute.headroom=0",
          "compute.generate.cpus=1", "compute.generate.mem_gb=1",
          "compute.score.cpus=1", "compute.score.mem_gb=2"]


@pytest.fixture(autouse=True)
def cluster() -> None:
    if shutil.which("sinfo") is None or subprocess.run(["sinfo", "-h"],
                                                       capture_output=True).returncode:
        if os.environ.get("BENCHFORGE_REQUIRE_SLURM") == "1":
            pytest.fail("no running SLURM, but BENCHFORGE_REQUIRE_SLURM=1 (.ci/slurm-up.sh)")
        pytest.skip("no running SLURM (start one with .ci/slurm-up.sh)")


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def attempts(cell: Path) -> list[dict]:
    from benchforge.attempts import read_attempt_log  # every window's log too, merged

    return read_attempt_log(cell)


def running_jobs(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-n", name, "-o", "%i"],
                         capture_output=True, text=True).stdout
    return out.split()


def sacct_runs(job: str) -> list[tuple[str, str]]:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", job, "-o", "JobID,State"],
                         capture_output=True, text=True).stdout
    return [tuple(line.split("|")[:2]) for line in out.splitlines() if line]  # type: ignore


def start_sweep(stage: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    import sys

    return subprocess.Popen([sys.executable, "-m", "benchforge", stage, "-m", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def slow_generation(tmp_path: Path, shared_data: Path, *extra: str) -> list[str]:
    """One oracle cell whose generation takes ~20 s: 40 tasks, 2 at a time, 1 s each."""
    return [f"run.root={tmp_path / 'runs'}", f"data.root={shared_data}", "model=oracle",
            "benchmark=humaneval", "benchmark.limit=40", "model.concurrency=2",
            "model.oracle_latency_s=1.0", "generate.progress=false", *SHARDS, *extra]


def test_sweep_of_two_models_by_two_benchmarks(tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "runs"
    started = time.monotonic()
    proc = run_cli("run", "-m", "model.name=oracle-a,oracle-b", "benchmark=humaneval,cruxeval_o",
                   "benchmark.limit=8", f"run.root={root}", f"data.root={shared_data}",
                   "generate.progress=false", *SHARDS, cwd=tmp_path, timeout=600)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"2x2 sweep on SLURM: {wall:.1f}s wall")
    cfg = compose([f"run.root={root}", f"data.root={shared_data}"], stage="status")
    from benchforge.stages import run_status

    statuses = run_status(cfg)
    assert len(statuses) == 4
    manifest = read_rows(root / "default" / "manifest.jsonl")
    generate_arrays = {str(row["generate_job"]).split("_")[0] for row in manifest}
    score_arrays = {str(row["score_job"]).split("_")[0] for row in manifest}
    assert len(generate_arrays) == 1 and len(score_arrays) == 1, manifest  # one array per stage
    for status, row in zip(statuses, manifest, strict=True):
        assert status["generate_done"] and status["score_done"]
        assert status["pass@1"]["value"] == 1.0
        assert row["generate_array_parallelism"] == 2  # 2 idle fake GPUs, headroom 0
        for stage in ("generate", "score"):
            job = row[f"{stage}_job"]
            wait_for(lambda job=job: sacct_runs(job), 30, f"sacct record of {job}")
            assert sacct_runs(job)[-1][1] == "COMPLETED"
        assert status["slurm"]["job_id"] == row["score_job"]
        assert status["slurm"]["job_state"] == "COMPLETED"
        assert status["slurm"]["attempts"] == 2  # one generate shard, one score shard
        assert row["shard_state"] == "score: done"
    shown = run_cli("status", f"run.root={root}", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.count("COMPLETED") == 4, shown.stdout
    verify = run_cli("verify", f"run.root={root}", cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr


def test_requeue_mid_generate_loses_and_duplicates_nothing(tmp_path: Path,
                                                           shared_data: Path) -> None:
    args = slow_generation(tmp_path, shared_data)
    cell = tmp_path / "runs" / "default" / "oracle" / "humaneval"
    sweep = start_sweep("run", *args, cwd=tmp_path)
    wait_for(lambda: lines(cell / "samples.jsonl") >= 4, 120, "rows being written")
    job = attempts(cell)[0]["job_id"]
    subprocess.run(["scontrol", "requeue", job], check=True)
    rows_at_requeue = lines(cell / "samples.jsonl")
    code, out = finish(sweep)
    assert code == 0, out[-3000:]
    assert 0 < rows_at_requeue < 40
    samples = read_rows(cell / "samples.jsonl")
    assert len(samples) == 40 and len({(r["task_id"], r["sample_idx"]) for r in samples}) == 40
    starts = [a for a in attempts(cell) if a["event"] == "start" and a["stage"] == "generate"]
    assert [a["restart_count"] for a in starts] == [0, 1]
    stops = [a for a in attempts(cell) if a["event"] == "stop" and a["stage"] == "generate"]
    assert "SIGTERM" in stops[0]["reason"] and stops[1]["reason"] == "completed"
    assert [state for _, state in sacct_runs(job)] == ["REQUEUED", "COMPLETED"]

    # The same cell without SLURM and without interruption gives the same results.
    plain = run_cli("run", f"run.root={tmp_path / 'plain'}", f"data.root={shared_data}",
                    "benchmark=humaneval", "benchmark.limit=40", "generate.progress=false",
                    cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    def verdicts(path: Path) -> dict:
        return {(r["task_id"], r["sample_idx"]): (r["passed"], r["failure_mode"])
                for r in read_rows(path)}

    assert verdicts(cell / "results.jsonl") == verdicts(
        tmp_path / "plain" / "default" / "oracle" / "humaneval" / "results.jsonl")


def test_preempted_backfill_shard_is_requeued_and_completes(tmp_path: Path,
                                                           shared_data: Path) -> None:
    args = slow_generation(tmp_path, shared_data, "compute.qos=backfill")
    cell = tmp_path / "runs" / "default" / "oracle" / "humaneval"
    sweep = start_sweep("generate", *args, cwd=tmp_path)
    wait_for(lambda: lines(cell / "samples.jsonl") >= 4, 120, "rows being written")
    job = attempts(cell)[0]["job_id"]
    cpus = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%c"], capture_output=True,
                          text=True).stdout.split()[0]
    # A job in QOS long that needs the whole node preempts the backfill shard.
    preemptor = subprocess.run(["sbatch", "--parsable", "--qos=long", "-c", cpus, "--mem=1G",
                                "-o", "/dev/null", "--wrap", "sleep 2"],
                               capture_output=True, text=True, check=True).stdout.strip()
    code, out = finish(sweep)
    assert code == 0, out[-3000:]
    shard_logs = "".join(p.read_text() for p in (tmp_path / "runs").rglob("*_log.err"))
    assert "Caught signal SIGUSR2" in shard_logs and "this job is preempted" in shard_logs
    starts = [a for a in attempts(cell) if a["event"] == "start"]
    stops = [a for a in attempts(cell) if a["event"] == "stop"]
    assert len(starts) == 2 and [a["restart_count"] for a in starts] == [0, 1]
    assert stops[0]["reason"].startswith("signal: SIGUSR2, requeued by submitit"), stops[0]
    assert stops[1]["reason"] == "completed"
    assert starts[0]["qos"] == "backfill"
    samples = read_rows(cell / "samples.jsonl")
    assert len({(r["task_id"], r["sample_idx"]) for r in samples}) == len(samples) == 40
    assert (cell / "generate.done").exists()
    wait_for(lambda: sacct_runs(preemptor) and sacct_runs(preemptor)[-1][1] == "COMPLETED",
             30, "the preemptor to finish")
    assert sacct_runs(job)[0][1] in ("REQUEUED", "PREEMPTED")


def test_requeue_budget_stops_a_shard(tmp_path: Path, shared_data: Path) -> None:
    args = slow_generation(tmp_path, shared_data, "compute.max_requeue_per_shard=1")
    cell = tmp_path / "runs" / "default" / "oracle" / "humaneval"
    sweep = start_sweep("generate", *args, cwd=tmp_path)
    for restart in (0, 1):
        wait_for(lambda restart=restart: any(
            a["event"] == "start" and a["restart_count"] == restart for a in attempts(cell))
            and lines(cell / "samples.jsonl") >= 2 * (restart + 1), 120,
            f"attempt {restart} writing rows")
        subprocess.run(["scontrol", "requeue", attempts(cell)[0]["job_id"]], check=True)
    code, out = finish(sweep)
    assert code != 0
    assert "requeued 2 times, more than compute.max_requeue_per_shard=1" in out, out[-3000:]
    assert attempts(cell)[-1]["event"] == "refused"
    assert attempts(cell)[-1]["reason"] == "requeue budget"
    assert not (cell / "generate.done").exists()
    shown = run_cli("status", f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert "failed: requeue budget" in shown.stdout, shown.stdout


def test_gpu_hour_budget_refuses_the_launch(tmp_path: Path, shared_data: Path) -> None:
    before = subprocess.run(["sacct", "-n", "-X", "-a", "-o", "JobID"], capture_output=True,
                            text=True).stdout.split()
    proc = run_cli("run", "-m", "model.name=oracle-a,oracle-b", f"run.root={tmp_path / 'runs'}",
                   f"data.root={shared_data}", "compute.gpu_hour_budget=0.5", *SHARDS,
                   cwd=tmp_path)
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]
    assert "refusing to launch" in message and "0.50 of 0.5 left" in message, proc.stderr
    assert "needs up to 8.00 (2 shards x 1 GPU x 4 h)" in message
    after = subprocess.run(["sacct", "-n", "-X", "-a", "-o", "JobID"], capture_output=True,
                           text=True).stdout.split()
    assert after == before  # nothing was submitted


def test_probe_reads_the_cluster(tmp_path: Path) -> None:
    proc = run_cli("probe", "compute=daic", f"run.root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "compute.partition=debug" in proc.stdout and "compute.account=ci" in proc.stdout
    rows = {r.split("│")[1].strip(): r for r in proc.stdout.splitlines() if "compute." in r
            and "│" in r}
    assert "long" in rows["compute.qos"] and "backfill" in rows["compute.qos"]


def test_score_shard_started_early_waits_for_generation(tmp_path: Path,
                                                        shared_data: Path) -> None:
    args = slow_generation(tmp_path, shared_data)
    cell = tmp_path / "runs" / "default" / "oracle" / "humaneval"
    generate = start_sweep("generate", *args, cwd=tmp_path)
    wait_for(lambda: lines(cell / "samples.jsonl") >= 2, 120, "generation to start")
    score = start_sweep("score", *args, cwd=tmp_path)
    code, out = finish(generate)
    assert code == 0, out[-3000:]
    code, out = finish(score)
    assert code == 0, out[-3000:]
    score_stops = [a for a in attempts(cell) if a["event"] == "stop" and a["stage"] == "score"]
    assert score_stops[0]["reason"].startswith("waiting for generate.done"), score_stops
    assert score_stops[0]["results"] == 0  # it scored nothing before generation finished
    assert score_stops[-1]["reason"] == "completed"
    assert lines(cell / "results.jsonl") == 40
    assert json.loads((cell / "score.done").read_text())["rows"] == 40


def test_shard_larger_than_any_node_is_refused_before_submission(tmp_path: Path) -> None:
    """The default generate shape asks 4 CPUs / 32 GB; a shard asking more CPUs than the CI
    node has would pend forever (PartitionConfig): refused, naming the key, nothing queued."""
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True,
                            text=True).stdout.split()
    proc = run_cli("generate", "-m", *SHARDS, "compute.generate.cpus=512",
                   f"run.root={tmp_path / 'runs'}", "benchmark.limit=2", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("benchforge generate: error: compute.generate.cpus=512: no node of "
                           "partition debug has that many CPUs"), proc.stderr
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True,
                           text=True).stdout.split()
    assert set(after) <= set(before)  # nothing new queued (an earlier test's job may end)


def _sorted(path: Path) -> list[str]:
    """Rows sorted by key, timings (``*_s``) left out: what must not depend on the windows."""
    return sorted(json.dumps({k: v for k, v in r.items() if not k.endswith("_s")},
                             sort_keys=True) for r in read_rows(path))


def test_sample_windows_run_as_four_array_elements(tmp_path: Path, shared_data: Path) -> None:
    """One HumanEval cell planned with K=4 windows: 4 generate and 4 score array elements,
    the same sorted rows as the unsharded cell; wall times of both printed (the closing note
    of issue 19 quotes them)."""
    walls = {}
    cells = {}
    for k in (1, 4):
        root = tmp_path / f"k{k}"
        args = [f"run.root={root}", *slow_generation(tmp_path, shared_data,
                                                      f"compute.shards_per_cell={k}")[1:]]
        started = time.monotonic()
        code, out = finish(start_sweep("run", *args, cwd=tmp_path), timeout=400)
        walls[k] = time.monotonic() - started
        assert code == 0, out[-3000:]
        cells[k] = root / "default" / "oracle" / "humaneval"
    print(f"HumanEval x 40 on 2 fake GPUs: unsharded {walls[1]:.1f}s wall, "
          f"4 windows {walls[4]:.1f}s wall")
    one, four = cells[1], cells[4]
    for name in ("samples.jsonl", "results.jsonl"):
        assert _sorted(one / name) == _sorted(four / name), name
    manifest = read_rows(tmp_path / "k4" / "default" / "manifest.jsonl")
    assert [row["window"]["index"] for row in manifest] == [0, 1, 2, 3]
    for stage in ("generate", "score"):
        jobs = [str(row[f"{stage}_job"]) for row in manifest]
        assert len({job.split("_")[0] for job in jobs}) == 1  # one array per stage
        assert len(set(jobs)) == 4  # one element per window
    assert all(row["shard_state"] == "score: done" for row in manifest)
    starts = [a for a in attempts(four) if a["event"] == "start"]
    assert sorted((a["stage"], a["window"]) for a in starts) == sorted(
        (stage, i) for stage in ("generate", "score") for i in range(4))
    for i in range(4):  # one attempt log per window: no two shards append to one file
        own = read_rows(four / "logs" / f"attempts.w{i}.jsonl")
        assert {a.get("window") for a in own} == {i}
    assert not (four / "logs" / "attempts.jsonl").exists()
    ends = [a for a in attempts(four) if a["event"] == "end" and a["stage"] == "generate"]
    assert sorted(a["rows_written"] for a in ends) == [10, 10, 10, 10]  # each its own part
    shown = run_cli("status", f"run.root={tmp_path / 'k4'}", cwd=tmp_path)
    assert shown.stdout.count("└ window") == 4 and "40/40 ✓" in shown.stdout, shown.stdout
    assert run_cli("verify", f"run.root={tmp_path / 'k4'}", cwd=tmp_path).returncode == 0


def test_a_requeued_window_ends_with_one_row_per_key(tmp_path: Path,
                                                      shared_data: Path) -> None:
    args = slow_generation(tmp_path, shared_data, "compute.shards_per_cell=4")
    cell = tmp_path / "runs" / "default" / "oracle" / "humaneval"
    sweep = start_sweep("generate", *args, cwd=tmp_path)
    wait_for(lambda: lines(cell / "samples.w1.jsonl") >= 2, 180, "window 1 writing rows")
    job = next(a["job_id"] for a in attempts(cell)
               if a["event"] == "start" and a.get("window") == 1)
    subprocess.run(["scontrol", "requeue", job], check=True)  # <array>_<index>
    rows_at_requeue = lines(cell / "samples.w1.jsonl")
    code, out = finish(sweep, timeout=400)
    assert code == 0, out[-3000:]
    assert 0 < rows_at_requeue < 10
    samples = read_rows(cell / "samples.jsonl")
    assert len(samples) == len({(r["task_id"], r["sample_idx"]) for r in samples}) == 40
    starts = [a for a in attempts(cell) if a["event"] == "start" and a.get("window") == 1]
    assert [a["restart_count"] for a in starts] == [0, 1]
    assert json.loads((cell / "generate.done").read_text())["rows"] == 40
