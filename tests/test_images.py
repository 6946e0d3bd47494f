"""`benchforge pull-image` and the image check before generation, with a fake `apptainer`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from _support import QWEN, run_cli

from benchforge.errors import BenchforgeError
from benchforge.images import source_digest
from benchforge.stages import run_generate


def pull(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    return run_cli("pull-image", "engine=vllm_apptainer", f"paths.images={tmp_path / 'img'}",
                   f"run.root={tmp_path / 'runs'}", *args, cwd=tmp_path, env=env)


def test_pull_records_the_sif_digest_and_generation_checks_it(cfg_with, tmp_path: Path,
                                                               fake_engine) -> None:
    proc = pull(tmp_path)
    assert proc.returncode == 0, proc.stderr
    sif = tmp_path / "img" / "vllm-openai-v0.8.5.sif"
    digest = hashlib.sha256(sif.read_bytes()).hexdigest()
    records = json.loads((tmp_path / "img" / "benchforge-images.json").read_text())
    entry = records[str(sif.resolve())]
    assert entry["sha256"] == digest and entry["source"] == "docker://vllm/vllm-openai:v0.8.5"
    assert entry["source_digest"] is None  # a tag pins no content digest
    assert digest in proc.stdout

    cfg = cfg_with(**QWEN, engine__name="vllm_apptainer", engine__launch="apptainer",
                   engine__executable="apptainer", engine__image=str(sif),
                   engine__image_source="docker://vllm/vllm-openai:v0.8.5",
                   paths__images=str(tmp_path / "img"), benchmark__limit=2,
                   generate__progress=False)
    cell = run_generate(cfg)
    provenance = json.loads(cell.dir.provenance.read_text())
    assert provenance["engine_image"]["sha256"] == digest

    sif.write_bytes(sif.read_bytes() + b"tampered")
    cfg.run.name = "second"
    with pytest.raises(BenchforgeError) as info:
        run_generate(cfg)
    assert f"{sif}: sha256" in str(info.value)
    assert "recorded by `benchforge pull-image`" in str(info.value)


def test_a_failed_pull_is_one_line_and_leaves_no_image(tmp_path: Path, fake_engine) -> None:
    proc = pull(tmp_path, env={"FAKE_APPTAINER_FAIL": "1"})
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("benchforge pull-image: error: `apptainer pull --force")
    assert "manifest unknown" in line and "Traceback" not in proc.stderr
    assert not list((tmp_path / "img").glob("*.sif"))


def test_nothing_to_pull_for_a_native_engine(tmp_path: Path) -> None:
    proc = run_cli("pull-image", f"run.root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and "nothing to pull" in proc.stderr


def test_source_digests() -> None:
    pinned = "docker://vllm/vllm-openai@sha256:" + "ab" * 32
    assert source_digest(pinned) == "sha256:" + "ab" * 32
    assert source_digest("docker://vllm/vllm-openai:v0.8.5") is None
