"""SLURM launch logic that needs no cluster: placeholders, time limits, budgets, gres parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from _support import run_cli

from benchforge.config import compose, slurm_minutes
from benchforge.launch import first_job_overrides, placeholders
from benchforge.shard import attempt_gpu_hours, used_requeues
from benchforge.slurm import _gpu_count


def test_unresolved_placeholders_refuse_the_sweep_and_name_each(tmp_path: Path) -> None:
    proc = run_cli("run", "-m", "compute=daic", "model.name=a,b", f"run.root={tmp_path}",
                   cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr
    assert "compute=daic has 2 unresolved placeholder(s); nothing was submitted" in err
    assert "compute.partition=PLACEHOLDER_GPU_PARTITION  <- sinfo" in err
    assert "compute.account=PLACEHOLDER_ACCOUNT  <- sacctmgr" in err
    assert "Traceback" not in err
    assert not (tmp_path / "default" / "manifest.jsonl").exists()


def test_daic_profile_composes_the_launcher() -> None:
    cfg = compose(["compute=daic", "compute.partition=gpu", "compute.account=lab"])
    assert cfg.compute.qos == "long" and cfg.compute.nice == 1000000
    assert cfg.compute.signal == "USR1" and cfg.compute.signal_delay_s == 120
    assert placeholders(cfg.compute) == []
    assert [k for k, _ in placeholders(compose(["compute=daic"]).compute)] == [
        "compute.partition", "compute.account"]


def test_launcher_fields_follow_the_stage_shape() -> None:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from benchforge.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="benchforge.conf", version_base="1.3"):
        shapes = {}
        for shard in ("generate", "score"):
            cfg = hydra_compose("config", overrides=["compute=daic", "compute.partition=gpu",
                                                     "compute.account=lab",
                                                     f"compute.shard={shard}"],
                                return_hydra_config=True)
            launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
            shapes[shard] = launcher
    GlobalHydra.instance().clear()
    gen, score = shapes["generate"], shapes["score"]
    assert gen["_target_"].endswith("SlurmLauncher")
    assert gen["gres"] == "gpu:1" and score["gres"] is None
    assert gen["timeout_min"] == 240 and gen["qos"] == "long" and gen["partition"] == "gpu"
    assert gen["additional_parameters"] == {"requeue": True, "nice": 1000000}
    assert gen["max_num_timeout"] == 5 and score["cpus_per_task"] == 8


@pytest.mark.parametrize(("text", "minutes"), [
    ("04:00:00", 240), ("1-00:00:00", 1440), ("30", 30), ("10:30", 11), ("1-2:00", 1560),
    ("00:00:01", 1),
])
def test_slurm_time_limits(text: str, minutes: int) -> None:
    assert slurm_minutes(text) == minutes


def test_bad_time_limit_is_a_config_error(tmp_path: Path) -> None:
    proc = run_cli("run", "-m", "compute=slurm", "compute.partition=p", "compute.time=4h",
                   f"run.root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and "compute.time='4h': expected [D-]HH:MM:SS" in proc.stderr


@pytest.mark.parametrize(("gres", "gpus"), [
    ("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4), ("gpu:0(IDX:N/A)", 0),
    ("gpu:a100:1(IDX:0),shard:4", 1), ("(null)", 0), ("gpu:tesla:2,gpu:a40:1", 3),
])
def test_gres_gpu_counts(gres: str, gpus: int) -> None:
    assert _gpu_count(gres) == gpus


def test_gpu_hours_from_attempts() -> None:
    log = [
        {"event": "start", "job_id": "7_0", "restart_count": 0, "pid": 1, "gpus": 2, "t": 0},
        {"event": "stop", "job_id": "7_0", "restart_count": 0, "pid": 1, "gpus": 2,
         "elapsed_s": 1800},
        {"event": "start", "job_id": "7_0", "restart_count": 1, "pid": 2, "gpus": 2, "t": 5000},
    ]
    # 0.5 h x 2 GPUs stopped, plus an attempt still open for 1800 s x 2 GPUs
    assert attempt_gpu_hours(log, now=6800) == pytest.approx(2.0)


def test_waiting_requeues_do_not_spend_the_requeue_budget() -> None:
    log = [{"event": "stop", "job_id": "9_1", "reason": "waiting for generate.done (x)"},
           {"event": "stop", "job_id": "9_1", "reason": "terminated by SIGTERM"},
           {"event": "stop", "job_id": "9_2", "reason": "waiting for generate.done (x)"}]
    assert used_requeues(log, "9_1", restart_count=3) == 2


def test_first_job_of_a_sweep() -> None:
    assert first_job_overrides(["model=oracle,endpoint", "+x=1,2", "benchmark.limit=3", "-m"]) \
        == ["model=oracle", "+x=1", "benchmark.limit=3"]
