"""The GPU trace behind ``cost.gpu``: parsing nvidia-smi, sampling through a fake nvidia-smi
(tests/fakes/fake_nvidia_smi.py, the driver boundary), the energy integral, and the trace of a
launched engine reaching metrics.json, status, report and the leaderboard row."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchforge import gpumon


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "smi-bin"
    bindir.mkdir()
    exe = bindir / "nvidia-smi"
    target = Path(__file__).parent / "fakes" / "fake_nvidia_smi.py"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{target}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SMI_LOG", str(tmp_path / "smi.log"))
    monkeypatch.setenv("FAKE_SMI_T0", str(time.time()))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # NVML absent: the nvidia-smi path
    return tmp_path / "smi.log"


def test_parse_smi_csv_fields_and_not_available() -> None:
    rows = gpumon.parse_smi_csv("0, 40536, 287.41, 97\n1, 812, [N/A], [Not Supported]\n\nbad\n")
    assert rows == [
        {"gpu": "0", "memory_used_mib": 40536.0, "power_w": 287.41, "utilization_pct": 97.0},
        {"gpu": "1", "memory_used_mib": 812.0, "power_w": None, "utilization_pct": None},
    ]


def test_visible_gpus_follows_cuda_visible_devices() -> None:
    assert gpumon.visible_gpus({}) is None
    assert gpumon.visible_gpus({"CUDA_VISIBLE_DEVICES": "1,3"}) == ["1", "3"]
    assert gpumon.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpumon.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-ab12"}) == ["GPU-ab12"]


def test_monitor_energy_equals_integral_of_the_trace(fake_smi: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    trace = tmp_path / "cell" / "logs" / gpumon.TRACE_NAME
    with gpumon.GpuMonitor(trace, interval_s=0.2) as monitor:
        assert monitor.active and monitor.source.name == "nvidia-smi"
        time.sleep(2.0)
    assert "--id=0,1" in fake_smi.read_text().splitlines()[0]
    rows = gpumon.read_trace([trace])
    assert {r["gpu"] for r in rows} == {"0", "1"} and len(rows) >= 16
    t0 = float(os.environ["FAKE_SMI_T0"])
    # The exact integral of P(t) over each GPU's sampled window, from the fake's formula.
    expected_j = 0.0
    for gpu, base in (("0", 100.0), ("1", 50.0)):
        ts = sorted(r["t"] - t0 for r in rows if r["gpu"] == gpu)
        a, b = ts[0], ts[-1]
        expected_j += base * (b - a) + 20 * (b * b - a * a)
    summary = gpumon.summarize(rows)
    assert summary["energy_wh"] == pytest.approx(expected_j / 3600, rel=0.01)
    assert summary["gpus"] == 2 and summary["samples"] == len(rows)
    assert summary["peak_power_w"] == round(max(r["power_w"] for r in rows), 2)
    assert summary["peak_memory_gb"] == pytest.approx(
        max(r["memory_used_mib"] for r in rows) * 2**20 / 1e9, abs=1e-3)
    assert summary["mean_utilization_pct"] == 90.0  # GPU 1 reports [N/A]: not counted
    assert summary["avg_power_w"] == pytest.approx(
        summary["energy_wh"] * 3600 / summary["seconds"], rel=1e-3)


def test_summarize_skips_gaps_and_keeps_attempts_apart() -> None:
    rows = [
        {"run": "a", "t": 0.0, "gpu": "0", "power_w": 100.0},
        {"run": "a", "t": 1.0, "gpu": "0", "power_w": 100.0},
        {"run": "a", "t": 100.0, "gpu": "0", "power_w": 100.0},  # suspended: not integrated
        {"run": "b", "t": 1.5, "gpu": "0", "power_w": 300.0},  # another attempt, same GPU
        {"run": "b", "t": 2.5, "gpu": "0", "power_w": 300.0},
    ]
    summary = gpumon.summarize(rows)
    assert summary["energy_wh"] == pytest.approx((100 + 300) / 3600)
    assert summary["seconds"] == 2.0 and summary["avg_power_w"] == 200.0
    assert summary["peak_memory_gb"] is None and summary["mean_utilization_pct"] is None


def test_no_gpu_means_null_not_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setitem(sys.modules, "pynvml", None)
    trace = tmp_path / "gpu.jsonl"
    with gpumon.GpuMonitor(trace, interval_s=0.05) as monitor:
        time.sleep(0.1)
    assert not monitor.active and not trace.exists()
    summary = gpumon.summarize(gpumon.read_trace([trace]))
    assert summary["samples"] == 0
    assert all(v is None for k, v in summary.items() if k != "samples")


def test_failing_nvidia_smi_is_no_source(fake_smi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SMI_T0", "not-a-number")  # the fake crashes, like a lost driver
    assert gpumon.open_source() is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpumon.open_source() is None


def test_nvml_source_reads_units(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotSupported(Exception):
        pass

    def unsupported(handle: object) -> float:
        raise NotSupported

    fake = SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetHandleByUUID=lambda u: u,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=3 * 2**30),
        nvmlDeviceGetPowerUsage=lambda h: 250_500,  # mW
        nvmlDeviceGetUtilizationRates=unsupported)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    source = gpumon.open_source()
    assert source is not None and source.name == "nvml"
    assert source.read() == [{"gpu": "0", "memory_used_mib": 3072.0, "power_w": 250.5,
                              "utilization_pct": None}]


def test_trace_rows_are_json_lines(fake_smi: Path, tmp_path: Path) -> None:
    trace = tmp_path / "gpu.jsonl"
    with gpumon.GpuMonitor(trace, interval_s=0.1):
        time.sleep(0.25)
    with open(trace, "a") as f:
        f.write('{"run": "x", "t": ')  # a torn last line (killed mid-write)
    rows = gpumon.read_trace([trace])
    assert rows and all(set(r) == {"run", "t", "gpu", "memory_used_mib", "power_w",
                                   "utilization_pct"} for r in rows)
    assert len({r["run"] for r in rows}) == 1
    json.dumps(gpumon.summarize(rows))


def _ramp_integral_j(rows: list[dict], t0: float) -> float:
    """The exact energy of the fake's P(t) over each GPU's sampled window (J)."""
    total = 0.0
    for gpu, base in (("0", 100.0), ("1", 50.0)):
        ts = sorted(r["t"] - t0 for r in rows if r["gpu"] == gpu)
        if ts:
            total += base * (ts[-1] - ts[0]) + 20 * (ts[-1] ** 2 - ts[0] ** 2)
    return total


def test_a_launched_engine_reports_cost_gpu(cfg_with, fake_engine, fake_smi: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from _support import QWEN

    from benchforge.publish import leaderboard_row
    from benchforge.stages import run_run, run_status

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the job's GPU, as SLURM sets it
    monkeypatch.setenv("FAKE_VLLM_DELAY", "0.3")
    cfg = cfg_with(**QWEN, benchmark__limit=5, generate__progress=False)
    metrics = run_run(cfg)
    cell = Path(str(cfg.run.root)) / "default" / "qwen-coder-7b" / "humaneval"
    rows = gpumon.read_trace([cell / "logs" / gpumon.TRACE_NAME])
    assert {r["gpu"] for r in rows} == {"1"} and len(rows) >= 2
    assert all("--id=1" in line for line in fake_smi.read_text().splitlines())
    gpu = metrics["cost"]["gpu"]
    expected_wh = _ramp_integral_j(rows, float(os.environ["FAKE_SMI_T0"])) / 3600
    assert gpu["energy_wh"] == pytest.approx(expected_wh, rel=0.01)
    assert gpu["gpus"] == 1 and gpu["peak_power_w"] is not None
    solved = metrics["pass@1"]["value"] * metrics["n_tasks"]
    assert gpu["energy_wh_per_solved_task"] == pytest.approx(gpu["energy_wh"] / solved,
                                                             rel=1e-3)
    on_disk = json.loads((cell / "metrics.json").read_text())
    assert on_disk["cost"]["gpu"] == gpu
    capsys.readouterr()
    cfg.stage = "status"
    run_status(cfg)
    assert "GPU Wh, peak GB" in capsys.readouterr().out
    from benchforge.rundir import CellDir

    row = leaderboard_row(CellDir(cell), "qwen-coder-7b", "humaneval", "default", cfg.aggregate)
    assert row["gpu_energy_wh"] == gpu["energy_wh"] and "cost_gpu" not in row


def test_no_gpu_leaves_cost_gpu_null(cfg_with, fake_engine, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from _support import QWEN

    from benchforge.stages import run_run, run_status

    monkeypatch.setitem(sys.modules, "pynvml", None)  # and no nvidia-smi on this PATH
    assert gpumon.open_source() is None
    cfg = cfg_with(**QWEN, benchmark__limit=2, generate__progress=False)
    gpu = run_run(cfg)["cost"]["gpu"]
    assert gpu["samples"] == 0
    assert all(v is None for k, v in gpu.items() if k != "samples")  # null, not zero
    capsys.readouterr()
    cfg.stage = "status"
    run_status(cfg)
    assert "GPU Wh" not in capsys.readouterr().out
