"""Shared fixtures: the composed config (once per session), the CLI, a mock model server."""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import REPO, SHARED
from _support import run_cli as _run_cli
from omegaconf import DictConfig, OmegaConf

from benchforge.benchmarks import get_benchmark, oracle_answers
from benchforge.config import compose
from benchforge.engine import free_port, launch_server
from benchforge.mock_server import write_answers
from benchforge.rundir import read_rows


@pytest.fixture(scope="session")
def base_cfg() -> DictConfig:
    """The default config, composed once; tests take copies through ``cfg_with``."""
    return compose([])


@pytest.fixture
def cfg_with(base_cfg: DictConfig, tmp_path: Path):
    def make(**dotted: object) -> DictConfig:
        cfg = copy.deepcopy(base_cfg)  # keeps the structured-config types
        OmegaConf.update(cfg, "run.root", str(tmp_path / "runs"))
        for key, value in dotted.items():
            OmegaConf.update(cfg, key.replace("__", "."), value)
        return cfg

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = SHARED / "data"
    if not path.is_dir():
        pytest.fail(f"{path} missing: tests need the shared benchmark data next to the repo")
    return path


@pytest.fixture
def humaneval(base_cfg: DictConfig):
    bench = get_benchmark(base_cfg.benchmark, Path("."))
    return bench, bench.load()


@pytest.fixture
def mock_server(tmp_path: Path, humaneval):
    """Start the real mock server executable with oracle answers, optionally made wrong."""

    started: list[object] = []

    def start(wrong: set[str] = frozenset(), *, delay_s: float = 0.0, fail_first: int = 0,
              served_name: str = "mock-model", mode: str = "chat",
              answers: list[dict[str, str]] | None = None, flavour: str = "vllm",
              chat_template: Path | None = None, template_suffix: str = "") -> str:
        """Oracle answers for HumanEval (``wrong`` tasks get a wrong one), or ``answers``;
        ``flavour`` is the tokenize API the server speaks (benchforge.mock_server)."""
        bench, dataset = humaneval
        rows = answers if answers is not None else oracle_answers(bench, dataset.tasks, mode)
        for row, task in zip(rows if answers is None else [], dataset.tasks, strict=False):
            if task.task_id in wrong:
                entry = task.data["entry_point"]
                row["completion"] = f"```python\ndef {entry}(*args):\n    return None\n```\n"
        answers = tmp_path / f"answers-{len(started)}.jsonl"
        write_answers(answers, rows)
        port = free_port()
        cmd = [sys.executable, "-m", "benchforge.mock_server", "--port", str(port),
               "--answers", str(answers), "--served-model-name", served_name,
               "--delay-s", str(delay_s), "--fail-first", str(fail_first),
               "--flavour", flavour, "--template-suffix", template_suffix]
        if chat_template is not None:
            cmd += ["--chat-template", str(chat_template)]
        ctx = launch_server(cmd, port, tmp_path / f"mock-{len(started)}.log", 30,
                            ready_path="/v1/models")
        url = ctx.__enter__()
        started.append(ctx)
        return url

    yield start
    for ctx in started:
        ctx.__exit__(None, None, None)  # type: ignore[attr-defined]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "work"
    path.mkdir()
    yield path


@pytest.fixture
def fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, humaneval):
    """Put fake `vllm` and `apptainer` on PATH, serving HumanEval's canonical answers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in (("vllm", "fake_vllm.py"), ("apptainer", "fake_apptainer.py")):
        path = bin_dir / name
        target = REPO / "tests" / "fakes" / script
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{target}" "$@"\n')
        path.chmod(0o755)
    bench, dataset = humaneval
    answers = tmp_path / "answers.jsonl"
    write_answers(answers, oracle_answers(bench, dataset.tasks, "chat"))
    record = tmp_path / "vllm-record.jsonl"
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_ANSWERS", str(answers))
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    sif = tmp_path / "vllm-openai.sif"
    sif.write_bytes(b"fake SIF image")

    def launches() -> list[dict]:
        return read_rows(record) if record.exists() else []

    def requests() -> list[dict]:
        path = tmp_path / "requests.jsonl"
        return read_rows(path) if path.exists() else []

    return {"launches": launches, "sif": sif, "requests": requests}


@pytest.fixture
def scored_run(tmp_path: Path, mock_server) -> Path:
    root = tmp_path / "runs"
    oracle = _run_cli("run", "benchmark.limit=12", f"run.root={root}", "generate.progress=false",
                     cwd=tmp_path)
    assert oracle.returncode == 0, oracle.stderr
    url = mock_server(wrong={f"HumanEval/{i}" for i in range(0, 12, 3)})  # 4 of 12 wrong
    mock = _run_cli("run", "model=endpoint", f"model.base_url={url}",
                   "model.served_name=mock-model", "benchmark.limit=12", f"run.root={root}",
                   "generate.progress=false", cwd=tmp_path)
    assert mock.returncode == 0, mock.stderr
    return root
