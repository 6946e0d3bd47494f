"""SLURM pre-flight against the partition, pending-reason watch and the missing `slurm` extra,
with sinfo/scontrol/squeue/scancel faked on PATH (the cluster is the boundary)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from _support import run_cli

from benchforge.config import compose
from benchforge.errors import BenchforgeError

SHARDS = ["compute=slurm", "compute.partition=small"]


def fake_cluster(bin_dir: Path, *, cpus: int = 2, mem_mb: int = 7900, gpus: int = 1,
                 max_time: str = "1-00:00:00", squeue: str = "") -> None:
    """sinfo/scontrol/squeue/scancel that describe one node of partition ``small``."""
    bin_dir.mkdir(exist_ok=True)
    scripts = {
        "sinfo": f'echo "node1 {cpus} {mem_mb} gpu:{gpus}"\n',
        "scontrol": f'echo "PartitionName=small MaxTime={max_time} MaxNodes=UNLIMITED"\n',
        "squeue": f"cat <<'X'\n{squeue}\nX\n",
        "scancel": f'echo "$@" >> {bin_dir}/cancelled\n',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def cluster_path(tmp_path: Path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_default_generate_shape_on_a_two_cpu_node_is_refused(cluster_path: Path) -> None:
    from benchforge.launch import check_shape

    fake_cluster(cluster_path)
    cfg = compose(SHARDS)
    with pytest.raises(BenchforgeError, match=r"compute.generate.cpus=4: no node of partition "
                                              r"small has that many CPUs \(largest: 2 CPUs\); "
                                              r"set compute.generate.cpus=2 or less"):
        check_shape(cfg.compute, "generate")
    cfg = compose([*SHARDS, "compute.generate.cpus=2"])
    with pytest.raises(BenchforgeError, match=r"compute.generate.mem_gb=32: .* set "
                                              r"compute.generate.mem_gb=7 or less"):
        check_shape(cfg.compute, "generate")
    cfg = compose([*SHARDS, "compute.generate.cpus=2", "compute.generate.mem_gb=4",
                   "compute.generate.gpus=2"])
    with pytest.raises(BenchforgeError, match=r"compute.generate.gpus=2"):
        check_shape(cfg.compute, "generate")
    cfg = compose([*SHARDS, "compute.generate.cpus=2", "compute.generate.mem_gb=4",
                   "compute.time=2-00:00:00"])
    with pytest.raises(BenchforgeError, match=r"compute.time=2-00:00:00 is longer than "
                                              r"partition small's MaxTime=1-00:00:00"):
        check_shape(cfg.compute, "generate")
    check_shape(compose([*SHARDS, "compute.generate.cpus=2", "compute.generate.mem_gb=4"]
                        ).compute, "generate")  # fits: no error


def test_sweep_is_refused_before_submission(tmp_path: Path, cluster_path: Path) -> None:
    fake_cluster(cluster_path)
    proc = run_cli("generate", "-m", *SHARDS, f"run.root={tmp_path / 'runs'}", cwd=tmp_path,
                   env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "benchforge generate: error: compute.generate.cpus=4: no node of partition small")
    assert "nothing was submitted" in proc.stderr
    assert not (tmp_path / "runs" / "default" / "logs" / "launches.jsonl").exists()


def test_hopeless_pending_reason_stops_the_sweep(tmp_path: Path, cluster_path: Path,
                                                 monkeypatch, caplog) -> None:
    import _thread

    from benchforge import launch

    fake_cluster(cluster_path, squeue="")
    interrupted: list[bool] = []
    monkeypatch.setattr(_thread, "interrupt_main", lambda: interrupted.append(True))
    watch = launch.PendingWatch("bf-generate", tmp_path / "pending.json", 1)
    fake_cluster(cluster_path, squeue="77_[0-3]|PENDING|Resources")
    assert watch.look() and not watch.stopped  # waiting for resources resolves itself
    assert "array 77 (bf-generate) PENDING (Resources)" in caplog.text
    assert "Resources" in (tmp_path / "pending.json").read_text()
    fake_cluster(cluster_path, squeue="77_[0-3]|PENDING|PartitionConfig")
    watch.look()
    assert interrupted == [True]
    assert watch.stopped and "reason PartitionConfig" in watch.stopped
    assert (cluster_path / "cancelled").read_text().split() == ["77"]


def test_missing_slurm_extra_is_one_line(tmp_path: Path) -> None:
    # a regular `hydra_plugins` package first on the path hides the installed launcher plugin
    shadow = tmp_path / "shadow" / "hydra_plugins"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    proc = run_cli("run", "compute=slurm", "compute.partition=x", cwd=tmp_path,
                   env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'benchforge run: compute=slurm needs hydra-submitit-launcher: pip install '
        '"benchforge[slurm]"'], proc.stderr
    assert sys.executable
