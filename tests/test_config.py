"""Config groups compose, types are checked, and configs ship inside the wheel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from _support import REPO, run_cli
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from benchforge.cell import cell_id
from benchforge.config import compose

GROUPS = ("model", "benchmark", "compute", "engine", "sandbox", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize("group,option",
                         [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group: str, option: str) -> None:
    extra = ["model.base_url=http://h:1/v1", "model.served_name=m"] if option == "endpoint" else []
    if option == "gguf":  # any GGUF: its file and name are the user's
        extra = ["model.name=my-coder", "model.gguf=/models/my-coder.gguf"]
    cfg = compose([f"{group}={option}", *extra])
    assert isinstance(cfg, DictConfig)
    assert cfg.run.dir.endswith(f"{cfg.model.name}/{cfg.benchmark.name}".replace("/", "/"))


def test_defaults(base_cfg: DictConfig) -> None:
    assert base_cfg.model.provider == "oracle"
    assert base_cfg.benchmark.name == "humaneval"
    assert base_cfg.compute.name == "local"
    assert base_cfg.sandbox.name == "auto"
    assert base_cfg.run.dir == "runs/default/oracle/humaneval"


def test_experiment_overlay_is_global() -> None:
    cfg = compose(["experiment=smoke"])
    assert cfg.run.name == "smoke"
    assert cfg.benchmark.limit == 20


def test_endpoint_requires_url_and_name() -> None:
    cfg = compose(["model=endpoint"])
    with pytest.raises(MissingMandatoryValue):
        _ = cfg.model.base_url


def test_endpoint_name_is_directory_safe() -> None:
    cfg = compose(["model=endpoint", "model.base_url=http://h:1/v1",
                   "model.served_name=Qwen/Qwen2.5-Coder-7B-Instruct"])
    assert cfg.run.dir == "runs/default/Qwen--Qwen2.5-Coder-7B-Instruct/humaneval"


def test_cell_id_tracks_what_is_computed(base_cfg: DictConfig) -> None:
    same = compose(["model.concurrency=3", "model.max_retries=0"])
    other_sampling = compose(["model.temperature=0.8"])
    other_bench = compose(["benchmark.limit=5"])
    assert cell_id(same) == cell_id(base_cfg)
    assert len({cell_id(base_cfg), cell_id(other_sampling), cell_id(other_bench)}) == 3


def test_wrong_type_is_one_line_naming_the_key(tmp_path: Path) -> None:
    proc = run_cli("plan", "model.temperature=abc", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "model.temperature" in lines[0] and "Traceback" not in proc.stderr


def test_thinking_is_checked_at_composition(tmp_path: Path) -> None:
    """``model.thinking`` outside on/off/null fails when the config is composed (Python API and
    CLI), in one line, before the command runs; on/off compose to Thinking members' values."""
    from benchforge.config import Thinking, thinking_choice
    from benchforge.errors import BenchforgeError

    with pytest.raises(BenchforgeError, match=r"^model\.thinking=maybe: expected on, off or null$"):
        compose(["model=oracle", "model.thinking=maybe"])
    for value, member in (("on", Thinking.on), ("off", Thinking.off), ("null", None)):
        assert thinking_choice(compose(["model=oracle", f"model.thinking={value}"]).model) is member
    proc = run_cli("plan", "model=oracle", "model.thinking=maybe", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["benchforge plan: error: model.thinking=maybe: expected on, off or null"]
    assert not [p for p in tmp_path.rglob("*") if p.name in ("provenance.json", "manifest.jsonl")]


def test_unknown_option_gives_hydras_error(tmp_path: Path) -> None:
    proc = run_cli("plan", "model=no_such_model", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Could not find 'model/no_such_model'" in proc.stderr
    assert "oracle" in proc.stderr  # Hydra lists the available options
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("plan", "no_such_key=1", cwd=tmp_path)
    assert proc.returncode == 2 and "no_such_key" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was written for a bad command


def test_user_config_dir_via_searchpath(tmp_path: Path) -> None:
    user_conf = tmp_path / "myconf" / "model"
    user_conf.mkdir(parents=True)
    (user_conf / "mine.yaml").write_text(
        "name: mine\nprovider: endpoint\nbase_url: http://h:1/v1\nserved_name: mine-served\n")
    proc = run_cli("plan", "model=mine", f"hydra.searchpath=[file://{tmp_path / 'myconf'}]",
                   f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "runs" / "default" / "manifest.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["model"] == "mine"


def test_sweep_two_models_one_manifest(tmp_path: Path) -> None:
    proc = run_cli("plan", "-m", "model=oracle,endpoint", "model.base_url=http://h:1/v1",
                   "model.served_name=other", f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = tmp_path / "runs" / "default" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(r["model"] for r in rows) == ["oracle", "other"]
    assert len({r["cell_id"] for r in rows}) == 2
    for row in rows:
        assert row["n_tasks"] == 164 and row["n_samples"] == 1
        assert not Path(row["dir"]).is_absolute()  # relative to the run root: runs can move
        assert (manifest.parent / row["dir"] / "config.yaml").is_file()
        assert (manifest.parent / row["dir"] / "provenance.json").is_file()


def test_help_is_instant_and_lists_stages() -> None:
    code = ("import sys, benchforge.cli as c; c.main(['--help']); "
            "heavy = [m for m in ('hydra', 'omegaconf', 'openai', 'numpy', 'rich') "
            "if m in sys.modules]; print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    for stage in ("run", "plan", "generate", "score", "aggregate", "status", "verify"):
        assert f"\n  {stage} " in out
    assert "HEAVY []" in out


def test_a_closed_pipe_is_no_traceback() -> None:
    """`benchforge --help | head -1`: the reader leaves early; exit 141, nothing on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "benchforge", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before benchforge writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 141 and "Traceback" not in err, err


def test_unknown_stage(tmp_path: Path) -> None:
    proc = run_cli("launch", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown stage 'launch'" in proc.stderr


@pytest.mark.slow
def test_wheel_ships_the_configs(tmp_path: Path) -> None:
    # Build from a clean copy: a stale build/ dir in the checkout could hide a missing package.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "benchforge", "conf"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (REPO / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(src)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("benchforge-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (REPO / "conf").rglob("*.yaml"):
        assert f"benchforge/conf/{path.relative_to(REPO / 'conf')}" in names
    assert "benchforge/conf/__init__.py" in names
    for path in (REPO / "benchforge").rglob("*.py"):
        assert f"benchforge/{path.relative_to(REPO / 'benchforge')}" in names
    # The installed wheel (not the checkout) composes its configs through pkg://.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    code = ("import benchforge, benchforge.config as c; cfg = c.compose(['experiment=smoke']); "
            "print(benchforge.__file__, cfg.benchmark.limit)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env={"PYTHONPATH": str(target),
                                                        "PATH": "/usr/bin:/bin"}).stdout
    assert out.startswith(str(target)) and out.split()[-1] == "20"
