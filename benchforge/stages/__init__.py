"""The per-cell pipeline, one module per stage, and the one registry of every command.

Each stage module exposes ``run_<stage>(cfg)``: resolve the cell from a composed config, call
the stage's core, render. :data:`COMMANDS` maps each ``benchforge <command>`` to a lazy
``"module:function"`` target (imported only when that command runs, as lm-evaluation-harness's
``lm_eval/api/registry.py`` and inspect_ai's ``model/_providers/providers.py`` do), its scope,
the SLURM shard shape it asks for, its help line and its most used keys. The CLI, its
``--help``, sweeps and SLURM shards all read this table; adding a command is one module plus
one :class:`Command` here.

Nothing here is imported eagerly: ``from benchforge.stages import run_score`` loads only
``benchforge.stages.score`` (and what it needs).

Words: a *stage* is a step of the per-cell pipeline (``plan``, ``generate``, ``score``,
``aggregate``; ``run`` chains them; ``repair`` redoes them), one module each here. A
*command* is anything ``benchforge <name>`` runs, stages included; the config key ``stage``
holds the command's name whatever it is. ``benchforge stage`` is not a pipeline stage: it is
the *staging* (download, "fetch") of models and benchmark data on the login node,
:func:`benchforge.hub.run_fetch`; the command keeps its name, the code says staging/fetch.

Python API: ``run_<stage>(cfg)`` resolves the cell, calls the stage's core and renders (prints
its table, as the CLI shows it). The cores print nothing and return data:
:func:`benchforge.stages.generate.generate_samples`,
:func:`benchforge.stages.score.score_pending` (both show a progress bar only when passed
``progress=True``) and :func:`benchforge.stages.aggregate.aggregate`; they log through
``logging`` (silent unless a handler is configured).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    """One ``benchforge <name>`` command.

    Attributes:
        target: ``"module:function"``; the function takes the composed config.
        help: the one line ``benchforge --help`` shows.
        scope: ``cell`` (works on the cell ``run.dir`` names; Hydra logs go in the cell) or
            ``run`` (looks at a whole run; its Hydra logs go under ``<run>/logs/``).
        shard: which SLURM resource shape (``compute.generate`` / ``compute.score``) its shards
            ask for; None: it never runs as a shard.
        read_only: writes nothing, not even a Hydra log dir (answers on a full disk).
        usage: the arguments after the command name, as ``benchforge <name> --help`` shows.
        keys: the most used config keys of the command, ``(key, what it does)``.
    """

    target: str
    help: str
    scope: str = "cell"
    shard: str | None = None
    read_only: bool = False
    usage: str = ""  # default: "[key=value ...]", plus "[-m]" where sweeps apply (shard)
    keys: tuple[tuple[str, str], ...] = ()


_CELL_KEYS = (
    ("model=<name>", "model config (conf/model/): oracle, endpoint, a hub model"),
    ("benchmark=<name>", "humaneval, humanevalplus, mbppplus, cruxeval_o, livecodebench, ..."),
    ("run.root, run.name", "where the run's cells go (<run.root>/<run.name>/<model>/<bench>)"),
    ("benchmark.limit", "only the first N tasks"),
    ("compute=slurm", "run each cell as a SLURM shard (with -m: a job array)"),
    ("compute.shards_per_cell, compute.tasks_per_shard",
     "cut each cell into sample windows, one shard each (fixed per cell)"),
)
_RUN_KEYS = (("run.root, run.name", "the run to look at"),)

COMMANDS: dict[str, Command] = {
    "run": Command(
        "benchforge.stages.run:run_run",
        "plan + generate + score + aggregate for each cell (resumes where it stopped)",
        shard="generate",
        keys=(*_CELL_KEYS,
              ("model.n_samples, model.temperature", "samples per task and their sampling"),
              ("score.samples=<file>", "score a samples file instead of a model"),
              ("score.reference=true", "self-check: score the benchmark's references"),
              ("smoke.gate=true", "with -m: smoke every model before any shard starts"))),
    "plan": Command(
        "benchforge.stages.plan:run_plan",
        "create cell dirs and write manifest.jsonl (the run's list of cells)",
        shard="score", keys=_CELL_KEYS),
    "generate": Command(
        "benchforge.stages.generate:run_generate",
        "query the model server, append rows to samples.jsonl, write generate.done",
        shard="generate",
        keys=(*_CELL_KEYS, ("engine=<name>", "how a hub model is served (vllm_native, ...)"),
              ("model.base_url", "an OpenAI-compatible server already running"),
              ("generate.progress", "show a progress bar"))),
    "score": Command(
        "benchforge.stages.score:run_score",
        "run every sample in the sandbox, append results.jsonl, write score.done",
        shard="score",
        keys=(*_CELL_KEYS, ("sandbox=<mode>", "auto, bwrap, apptainer, userns, rlimit-only"),
              ("score.workers", "parallel sandbox workers (0: one per CPU)"),
              ("score.samples=<file>", "EvalPlus JSONL or CRUXEval JSON made elsewhere"),
              ("score.force=true", "rescore (the old verdicts are kept under logs/)"))),
    "aggregate": Command(
        "benchforge.stages.aggregate:run_aggregate",
        "recompute pass@k with bootstrap CIs from results.jsonl -> metrics.json",
        shard="score", usage="[key=value ...] [--exit-on-regression] [-m]",
        keys=(*_CELL_KEYS, ("aggregate.ks", "the k of pass@k, e.g. [1,10]"),
              ("aggregate.confidence", "interval level (default 0.95)"),
              ("aggregate.baseline", "a run to compare against (regression verdict)"))),
    "repair": Command(
        "benchforge.stages.repair:run_repair",
        "archive rows that no longer match their marker (kept in logs/) and redo them",
        shard="generate", keys=_CELL_KEYS),
    "status": Command(
        "benchforge.stages.status:run_status",
        "table of the run's cells: progress, markers, pass@1",
        scope="run", read_only=True, keys=_RUN_KEYS),
    "verify": Command(
        "benchforge.stages.status:run_verify",
        "check markers, row counts, duplicates and hashes; non-zero exit on problems",
        scope="run", read_only=True, keys=_RUN_KEYS),
    "stage": Command(
        "benchforge.hub:run_fetch",
        "login node: staging (download; not a pipeline stage) of the model and benchmark data",
        scope="run",
        keys=(("model=<name>", "the hub model to fetch at model.revision"),
              ("benchmark=<name>", "the data files of benchmark.version"),
              ("paths.hf_cache, data.root", "where they go"))),
    "pull-image": Command(
        "benchforge.images:run_pull_image",
        "login node: apptainer pull the vLLM image (and build the scorer image)",
        scope="run",
        keys=(("engine=vllm_apptainer", "pull engine.image from engine.image_source"),
              ("sandbox=apptainer sandbox.image=<sif>", "build the scorer image"),
              ("paths.images", "where images and their sha256 records go"))),
    "smoke": Command(
        "benchforge.smoke:run_smoke",
        "start the engine; check served name, prompt identity, greedy determinism; tokens/s",
        scope="run", shard="generate",
        keys=(("model=<name>", "the model to smoke"), ("engine=<name>", "how it is served"),
              ("smoke.prompts", "prompts checked"))),
    "compare": Command(
        "benchforge.compare:run_compare",
        "compare A B: paired bootstrap of pass@1 over shared problems, win/loss, verdict",
        scope="run", usage="A B [key=value ...]",
        keys=(("A, B", "two runs or cell dirs (compare.a, compare.b)"),
              ("aggregate.confidence", "interval level"))),
    "inspect": Command(
        "benchforge.inspect_cell:run_inspect",
        "inspect CELL [--failed] [--diff OTHER]: failure modes, failed samples, flips",
        scope="run", usage="CELL [--failed] [--diff OTHER] [key=value ...]",
        keys=(("CELL", "a cell dir (inspect.cell)"),
              ("--failed", "show the failed samples (inspect.failed=true)"),
              ("--diff OTHER", "samples that flipped against another cell (inspect.diff)"))),
    "publish": Command(
        "benchforge.publish:run_publish",
        "Hive-partitioned Parquet + leaderboard table; upload to HF Hub (dry run default)",
        scope="run",
        keys=(*_RUN_KEYS, ("publish.org, publish.results_repo", "where on the Hub it goes"),
              ("publish.dry_run=false", "really upload"))),
    "report": Command(
        "benchforge.report:run_report",
        "pass@1 with CI bars per model x benchmark (PNG) and a Markdown summary",
        scope="run", keys=_RUN_KEYS),
    "probe": Command(
        "benchforge.launch:run_probe",
        "ask SLURM (sinfo, sacctmgr, scontrol) for a compute profile's PLACEHOLDER_* values",
        scope="run", keys=(("compute=<profile>", "the compute profile to fill in"),)),
    "sandbox-check": Command(
        "benchforge.sandbox.conformance:run_sandbox_check",
        "hold a sandbox mode to the conformance suite on this host (e.g. a cluster node)",
        scope="run", read_only=True, usage="sandbox=<mode> [key=value ...]",
        keys=(("sandbox=<mode>", "auto, bwrap, apptainer, apptainer-setuid, userns, "
                                 "rlimit-only"),
              ("sandbox.image", "the scorer SIF for the apptainer modes"))),
}

# The public run_* functions, loaded from their stage module on first use.
_LAZY = {"run_plan": "plan", "run_generate": "generate", "run_score": "score",
         "run_aggregate": "aggregate", "run_run": "run", "run_status": "status",
         "run_verify": "status", "run_repair": "repair"}

__all__ = ["COMMANDS", "Command", "runner", *_LAZY]

# Names scripts imported from the former ``benchforge.stages`` module, where they live now
# (kept importable from here, lazily: ``from benchforge.stages import load_benchmark`` works).
_MOVED = {
    "Cell": ("benchforge.cell", "Cell"), "run_root": ("benchforge.cell", "run_root"),
    "cell_path": ("benchforge.cell", "cell_dir"),
    "relative_to_run": ("benchforge.cell", "relative_to_run"),
    "manifest_cell": ("benchforge.cell", "manifest_cell"),
    "chat_template_sha256": ("benchforge.cell", "chat_template_sha256"),
    "prepare_cell": ("benchforge.cell", "prepare_cell"),
    "mark_generate_done": ("benchforge.cell", "mark_generate_done"),
    "provenance_model": ("benchforge.cell", "provenance_model"),
    "load_benchmark": ("benchforge.benchmarks", "load_benchmark"),
    "thinking_kwargs": ("benchforge.client", "thinking_kwargs"),
    "request_max_tokens": ("benchforge.stages.generate", "request_max_tokens"),
    "read_samples_file": ("benchforge.stages.score", "read_samples_file"),
    "import_external_samples": ("benchforge.stages.score", "import_external_samples"),
    "default_workers": ("benchforge.stages.score", "default_workers"),
    "compute_metrics": ("benchforge.metrics", "compute_metrics"),
    "cell_cost": ("benchforge.metrics", "cell_cost"),
    "licence_tag": ("benchforge.metrics", "licence_tag"),
    "RegressionDetected": ("benchforge.errors", "RegressionDetected"),
    "verify_cell": ("benchforge.cellcheck", "verify_cell"),
    "run_pull_image": ("benchforge.images", "run_pull_image"),
}


def runner(name: str) -> Callable[[Any], Any]:
    """The function behind command ``name``, imported now.

    Raises:
        KeyError: no such command (the CLI checks the name first).
    """
    module, _, function = COMMANDS[name].target.partition(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in _MOVED:
        module, attribute = _MOVED[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
