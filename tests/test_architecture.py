"""The shape of the package, held in place: the import graph (function-local imports included)
is acyclic and respects the layers of the design; the command registry is the only table of
commands; cell ids do not move.

Layers (each imports only from itself and the layers below it):
  L0 leaves   errors, procutil, rundir, prompts, answers, sandbox.types, sandbox._worker,
              config, slurm, console, ... (nothing from a higher layer)
  L1 domain   cell, benchmarks, sandbox, engine, client, scoring, metrics' inputs, ...
  L2 use      metrics, the stages, the run-level commands (compare, report, publish, ...)
  L3 entry    benchforge.stages (the registry: string targets only), cli, benchforge
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from _imports import cycles, read_package
from omegaconf import OmegaConf

MODULES = read_package()

# Modules that import nothing from benchforge at all.
STANDALONE = {"benchforge.procutil", "benchforge.sandbox._worker", "benchforge.sandbox.types",
              "benchforge.errors", "benchforge.console", "benchforge.prompts",
              "benchforge.slurm", "benchforge.stages"}
# Layer 0 may import only layer 0: the leaves every other module stands on.
LEAVES = {*STANDALONE, "benchforge.rundir", "benchforge.config", "benchforge.answers",
          "benchforge.answers.stops", "benchforge.answers.thinking", "benchforge.stats",
          "benchforge.serving", "benchforge.chat_template", "benchforge.gguf_model",
          "benchforge.prompt_identity", "benchforge.outcomes"}
# The run-level commands: they look at a run's cells, never import a stage.
RUN_LEVEL = {"benchforge.compare", "benchforge.inspect_cell", "benchforge.report",
             "benchforge.publish", "benchforge.smoke", "benchforge.launch",
             "benchforge.shard", "benchforge.metrics", "benchforge.cellcheck"}
# Who may import a stage module: the entry layer, and the stages that compose others.
STAGE_IMPORTERS = {"benchforge", "benchforge.cli", "benchforge.stages",
                   "benchforge.stages.run", "benchforge.stages.repair",
                   "benchforge.stages.score"}
STAGE_IMPORTS_ALLOWED = {
    "benchforge.stages.run": {"benchforge.stages.plan", "benchforge.stages.generate",
                              "benchforge.stages.score", "benchforge.stages.aggregate"},
    "benchforge.stages.repair": {"benchforge.stages.run"},
    "benchforge.stages.score": {"benchforge.stages.aggregate"},  # score.aggregate=true
}


def _is_stage(name: str) -> bool:
    return name.startswith("benchforge.stages.")


def test_the_import_graph_is_acyclic() -> None:
    assert cycles(MODULES) == []


def test_leaves_import_nothing_above_them() -> None:
    wrong = {name: sorted(MODULES[name].imports)
             for name in STANDALONE if MODULES[name].imports}
    assert not wrong, f"modules that must import nothing from benchforge: {wrong}"
    above = {name: sorted(MODULES[name].imports - LEAVES) for name in LEAVES
             if MODULES[name].imports - LEAVES}
    assert not above, f"leaves importing above layer 0: {above}"


def test_benchmarks_depend_on_the_sandbox_types_only() -> None:
    """Importing a benchmark never needs the sandbox's host machinery (pool, outer layer)."""
    wrong = {name: sorted(i for i in m.imports if i.startswith("benchforge.sandbox")
                          and i != "benchforge.sandbox.types")
             for name, m in MODULES.items() if name.startswith("benchforge.benchmarks")}
    assert not {k: v for k, v in wrong.items() if v}


def test_only_the_entry_layer_imports_a_stage() -> None:
    wrong = {}
    for name, module in MODULES.items():
        stages = {i for i in module.imports if _is_stage(i)}
        allowed = STAGE_IMPORTS_ALLOWED.get(name, set())
        if name in {"benchforge", "benchforge.cli", "benchforge.stages"}:
            continue
        if stages - allowed:
            wrong[name] = sorted(stages - allowed)
    assert not wrong, f"modules importing a stage (use cell/metrics instead): {wrong}"
    assert set(STAGE_IMPORTS_ALLOWED) <= STAGE_IMPORTERS
    run_level = {name: sorted(i for i in MODULES[name].imports if i.startswith(
        "benchforge.stages")) for name in RUN_LEVEL}
    assert not {k: v for k, v in run_level.items() if v}


def test_the_registry_imports_nothing_eagerly() -> None:
    """``benchforge --help`` stays instant: the CLI and the registry load only stdlib at
    import, and every target resolves to a callable."""
    from benchforge import stages

    assert MODULES["benchforge.stages"].imports == set()
    assert MODULES["benchforge.cli"].eager <= {"benchforge.errors", "benchforge.stages"}
    assert MODULES["benchforge"].eager == set()
    for name, command in stages.COMMANDS.items():
        assert command.scope in ("cell", "run"), name
        assert command.shard in (None, "generate", "score"), name
        assert callable(stages.runner(name)), name


def test_every_key_a_command_help_names_exists(base_cfg) -> None:
    """The keys ``benchforge <command> --help`` lists are real config keys."""
    from benchforge import stages

    known = _leaf_keys(base_cfg)
    for name, command in stages.COMMANDS.items():
        for keys, _ in command.keys:
            for key in keys.replace(" ", "").split(","):
                key = key.split("=")[0]
                if "." not in key or key.startswith("-"):
                    continue  # a config group (model=<name>) or a positional argument
                assert key in known or any(k.startswith(f"{key}.") for k in known), (name, key)


def _leaf_keys(cfg) -> set[str]:
    """Every dotted key of the composed config."""
    flat = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=False)))
    found: set[str] = set()

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                found.add(f"{prefix}{key}")

    walk(flat, "")
    return found


def test_fixed_choices_are_checked_at_composition(tmp_path: Path) -> None:
    """provider, mode, engine.launch and compute.launcher are enums: a value outside the set
    is refused while composing, naming the key and the choices; the values serialise as the
    same strings as before (config.yaml, provenance)."""
    import pytest

    from benchforge.config import Mode, compose

    for override, choices in (("model.provider=bogus", "oracle, endpoint, hf, gguf"),
                              ("model.mode=chatty", "chat, completion"),
                              ("engine.launch=docker", "none, native, apptainer, llamacpp"),
                              ("compute.launcher=pbs", "local, slurm")):
        with pytest.raises(Exception) as caught:
            compose([override])
        text = f"{caught.value} {caught.value.__cause__}"
        assert choices in text and override.split("=")[0] in text, text
    cfg = compose(["model=oracle"])
    assert cfg.model.mode == "chat" and cfg.model.mode is Mode.chat
    assert f"{cfg.model.mode}" == str(cfg.model.mode) == "chat"
    assert json.dumps({"m": cfg.model.mode}) == '{"m": "chat"}'
    assert "mode: chat" in OmegaConf.to_yaml(cfg.model)


def test_defaults_live_once() -> None:
    """No YAML option restates a schema default (or, for a model, its model_base's value)."""
    import yaml

    from benchforge import config

    root = Path(__file__).resolve().parents[1] / "conf"

    def plain(cls) -> dict:
        return OmegaConf.to_container(OmegaConf.structured(cls), enum_to_str=True)

    base = yaml.safe_load((root / "model_base" / "hf.yaml").read_text())
    restated = []
    for group, cls in (("model", config.ModelConfig), ("model_base", config.ModelConfig),
                       ("engine", config.EngineConfig), ("sandbox", config.SandboxConfig),
                       ("compute", config.ComputeConfig),
                       ("benchmark", config.BenchmarkConfig)):
        for path in sorted((root / group).glob("*.yaml")):
            values = yaml.safe_load(path.read_text()) or {}
            default = plain(cls)
            if group == "model" and "/model_base@_here_: hf" in path.read_text():
                default.update(base)
            restated += [f"{path.name}: {k}" for k, v in values.items()
                         if k != "defaults" and default.get(k, "???") != "???"
                         and default.get(k) == v]
    top = yaml.safe_load((root / "config.yaml").read_text())
    default = plain(config.BenchforgeConfig)
    restated += [f"config.yaml: {section}.{k}" for section, values in top.items()
                 if isinstance(values, dict) and isinstance(default.get(section), dict)
                 for k, v in values.items()
                 if default[section].get(k, "???") != "???" and default[section].get(k) == v]
    assert not restated, restated


# Cell ids of fixed configs, computed on main before the redesign (benchforge at 1d74f6a:
# config.cell_id, and stages.import_external_samples for the external cell). They must never
# change: every cell on disk is found by its id.
ORACLE_HUMANEVAL_ID = "8caa3223374a1a95"
ORACLE_HUMANEVAL_LIMIT2_ID = "6ce2fd2d8f97a681"
QWEN_MBPPPLUS_ID = "6750e957b9c59a41"
EXTERNAL_HUMANEVAL_LIMIT2_ID = "8d17183a8867dccc"


def test_cell_ids_are_the_ones_main_computed(tmp_path: Path) -> None:
    from benchforge.cell import cell_id
    from benchforge.config import compose

    cfg = compose(["model=oracle", "benchmark=humaneval", f"run.root={tmp_path}"])
    assert cell_id(cfg) == ORACLE_HUMANEVAL_ID
    limited = copy.deepcopy(cfg)
    OmegaConf.update(limited, "benchmark.limit", 2)
    assert cell_id(limited) == ORACLE_HUMANEVAL_LIMIT2_ID
    qwen = compose(["model=qwen2.5-coder-7b-instruct", "benchmark=mbppplus",
                    f"run.root={tmp_path}", "model.n_samples=5", "model.temperature=0.8"])
    assert cell_id(qwen) == QWEN_MBPPPLUS_ID
    external = tmp_path / "ext.jsonl"
    external.write_text("".join(json.dumps({"task_id": f"HumanEval/{i}",
                                            "completion": "    return 1\n"}) + "\n"
                                for i in range(2)))
    assert cell_id(limited, external) == EXTERNAL_HUMANEVAL_LIMIT2_ID
    # and the cells the stages make carry those ids
    from benchforge.cell import prepare_cell
    from benchforge.stages.score import import_external_samples

    assert prepare_cell(limited).cell_id == ORACLE_HUMANEVAL_LIMIT2_ID
    OmegaConf.update(limited, "run.dir", str(tmp_path / "external"))
    assert import_external_samples(limited, external).cell_id == EXTERNAL_HUMANEVAL_LIMIT2_ID


def test_the_former_stages_module_names_still_import() -> None:
    """Scripts written against the single ``benchforge.stages`` module keep working (the names
    it defined at 1d74f6a, before the split)."""
    import benchforge.stages as stages

    for name in ("Cell", "run_root", "cell_path", "relative_to_run", "manifest_cell",
                 "chat_template_sha256", "load_benchmark", "prepare_cell", "run_plan",
                 "mark_generate_done", "thinking_kwargs", "request_max_tokens", "run_generate",
                 "read_samples_file", "import_external_samples", "default_workers",
                 "run_score", "compute_metrics", "cell_cost", "RegressionDetected",
                 "licence_tag", "run_aggregate", "run_run", "provenance_model", "run_status",
                 "verify_cell", "run_verify", "run_pull_image"):
        assert callable(getattr(stages, name)), name
