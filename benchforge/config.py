"""Structured-config schema: the shape, types and defaults of every config group.

Each default lives here once; the YAML files under ``conf/`` hold only what a group option
changes (as hydra's ``structured_configs/5.1_structured_config_schema_same_config_group``
example does). A wrong type (``model.temperature=abc``) or a value outside a fixed set
(``model.provider``, ``model.mode``, ``engine.launch``, ``compute.launcher``: enums) fails at
composition with the offending key named; so does ``model.thinking`` (:class:`Thinking`,
checked by :func:`check_choices` on every composed config, and again where it is used).
Behaviour lives elsewhere; this module only describes and composes configs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from benchforge.errors import BenchforgeError

CONFIG_MODULE = "benchforge.conf"
CONFIG_NAME = "config"


class Choice(str, Enum):
    """A fixed set of config strings. Members are named as their values (OmegaConf converts a
    YAML or command-line string by member name) and behave as those strings: compared,
    hashed, formatted and serialised (JSON, ``config.yaml``) as the value, so cell ids and
    on-disk files are the same as with plain strings."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Provider(Choice):
    """``model.provider``: who serves the model."""

    oracle = "oracle"  # the built-in mock server answering with reference solutions
    endpoint = "endpoint"  # an OpenAI-compatible server already running at model.base_url
    hf = "hf"  # a Hugging Face model the engine serves
    gguf = "gguf"  # a GGUF file engine=llamacpp serves


class Mode(Choice):
    """``model.mode``: how the model is asked."""

    chat = "chat"  # instruct models: /v1/chat/completions
    completion = "completion"  # base models: /v1/completions


class Launch(Choice):
    """``engine.launch``: how benchforge starts the model server."""

    none = "none"  # it does not: the server already runs at model.base_url
    native = "native"  # `vllm serve` in this environment
    apptainer = "apptainer"  # vLLM in its Apptainer image
    llamacpp = "llamacpp"  # llama-cpp-python's server


class Thinking(Choice):
    """``model.thinking``: the chat template's thinking switch (Qwen3-style
    ``enable_thinking``); null for models without one.

    The schema field stays ``str | None`` so that a value set after composition
    (``OmegaConf.update`` in a notebook or test) reaches :func:`thinking_choice` and fails there
    with the same one-line error as at composition, instead of an OmegaConf traceback."""

    on = "on"  # enable_thinking=True: the model reasons in <think>...</think> first
    off = "off"  # enable_thinking=False


def thinking_choice(model: Any) -> Thinking | None:
    """``model.thinking`` as a :class:`Thinking` member, None when it is null.

    The one validator of the field: :func:`check_choices` calls it at composition, and
    :func:`benchforge.client.thinking_kwargs` / :func:`benchforge.serving.total_max_tokens`
    at run time.

    Args:
        model: the ``model`` config node (any mapping with ``get``).

    Raises:
        BenchforgeError: any other value (``model.thinking=maybe: expected on, off or null``).
    """
    value = model.get("thinking")
    if value is None:
        return None
    try:
        return Thinking(str(value))
    except ValueError:
        choices = ", ".join(member.value for member in Thinking)
        raise BenchforgeError(f"model.thinking={value}: expected {choices} or null") from None


def check_choices(cfg: Any) -> None:
    """Check the fixed-choice fields the schema cannot type as enums (``model.thinking``) on a
    freshly composed config: :func:`compose` and the CLI's Hydra task call it before any
    command runs, so a bad value fails in one line (exit 2) before anything is written.

    Raises:
        BenchforgeError: the first bad field, named with its value and the allowed ones.
    """
    model = cfg.get("model") if hasattr(cfg, "get") else None
    if model is not None:
        thinking_choice(model)


class Launcher(Choice):
    """``compute.launcher``: where the cells run."""

    local = "local"  # in this process
    slurm = "slurm"  # SLURM jobs (hydra-submitit-launcher)


@dataclass
class ModelConfig:
    """``model``: which model, who serves it, and how it is sampled (``conf/model/``)."""

    name: str = MISSING  # directory-safe name of the model in the run dir
    provider: Provider = MISSING  # oracle | endpoint | hf | gguf (see Provider)
    # gguf: a path, or pkg:<distribution>/<file> for a model shipped in a Python package
    gguf: str | None = None
    hf_repo: str | None = None  # hf: the repo id (or a local snapshot dir)
    revision: str | None = None  # hf: the pinned commit of hf_repo
    trust_remote_code: bool = False  # hf: pass --trust-remote-code (only if the model needs it)
    license: str | None = None  # SPDX id, or the name of the model's custom licence
    osi_approved: bool | None = None  # false: tagged non-OSI in provenance and metrics
    # on | off for models with a thinking switch (Qwen3); else null. str, not Thinking: see
    # Thinking (checked at composition by check_choices and again where it is used)
    thinking: str | None = None
    served_name: str = MISSING  # the `model` field sent to the OpenAI-compatible server
    # MISSING, not None, so endpoint.yaml's `???` is enforced (merging ??? keeps a default).
    base_url: str | None = MISSING  # e.g. http://gpu-node:8000/v1 (endpoint only)
    api_key_env: str | None = None  # name of the env var holding the key; never the key
    mode: Mode = Mode.chat  # chat (instruct models) | completion (base models)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    n_samples: int = 1
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    chat_template: str | None = None  # file whose sha256 goes into provenance and rows
    release_date: str | None = None  # training cutoff / release (YYYY-MM-DD): LCB window
    concurrency: int | None = None  # requests in flight; null = engine.max_num_seqs (or 16)
    # null: scaled from the endpoint's decode speed, measured by a one-shot probe (recorded)
    request_timeout_s: float | None = None
    # request: send temperature/top_p/seed (canonical); server: send none, the server's
    # configured defaults apply (recorded where the server reports them; non-canonical)
    sampling: str = "request"
    thinking_max_tokens: int | None = None  # added to max_tokens when thinking is on
    max_retries: int = 4
    startup_timeout_s: float = 120.0
    # oracle only: seconds the built-in server waits per request, like a real model's latency
    # (rehearses preemption and requeue of a generate shard on a cluster without a GPU)
    oracle_latency_s: float = 0.0


@dataclass
class EngineConfig:
    """How a model server is run for provider=hf models (see conf/engine/)."""

    name: str = MISSING  # vllm_apptainer | vllm_native | llamacpp | endpoint
    launch: Launch = Launch.none  # apptainer | native | llamacpp | none (see Launch)
    # `vllm` (native) or `apptainer`; llamacpp: null = `<this python> -m llama_cpp.server`
    executable: str | None = "vllm"
    image: str | None = None  # the vLLM SIF (apptainer)
    image_source: str | None = None  # what pull-image pulls into image (docker://...)
    apptainer_args: list[str] = field(default_factory=lambda: ["--nv"])
    # the seed's pinned server flags
    max_model_len: int = 16384
    gpu_memory_utilization: float = 0.90
    max_num_seqs: int = 64
    extra_args: list[str] = field(default_factory=list)
    startup_timeout_s: float = 900.0  # weights loading + CUDA graphs on a cold node
    # llamacpp: CPU threads (null = the CPUs this process may use) and layers on the GPU
    threads: int | None = None
    gpu_layers: int = 0


@dataclass
class BenchmarkConfig:
    """``benchmark``: which benchmark, its pinned version and data, and its limits
    (``conf/benchmark/``)."""

    name: str = MISSING
    loader: str = MISSING  # module name under benchforge.benchmarks
    version: str = MISSING
    path: str | None = None  # explicit data file; null = the loader's default
    limit: int | None = None  # first N tasks only (smoke runs)
    variant: str | None = None  # prompt variant where a benchmark has several (e.g. cot)
    min_time_limit_s: float | None = None  # per-test limits (EvalPlus): max(min, factor x ref)
    time_factor: float | None = None
    cutoff: str | None = None  # LiveCodeBench: problems before this date are contaminated
    lcb_fixes: bool = False  # LiveCodeBench: correct lcb_runner's harness bugs (README)
    # max_tokens of each request; null = the official harness's where it fixes one (CRUXEval:
    # chat 100 direct / 1000 CoT, completion 1024 / 2048), else model.max_tokens
    max_tokens: int | None = None
    language: str | None = None  # MultiPL-E: the language (cpp, java, js, go, rs, py)
    subset: str | None = None  # BigCodeBench: full | hard
    timeout_s: float | None = None  # BigCodeBench / DS-1000: the official per-sample limit
    # tier 2 (BigCodeBench, DS-1000): distribution -> pinned version the readiness gate
    # requires in the scoring sandbox (null: any version); part of the cell id
    pins: dict[str, Any] | None = None


@dataclass
class ShardShape:
    """Resources of one SLURM shard (one cell of one stage)."""

    gpus: int = 0
    cpus: int = 1
    mem_gb: int = 4


@dataclass
class ComputeConfig:
    """``compute``: where cells run, local or SLURM, with the shard shapes (``conf/compute/``)."""

    name: str = MISSING
    launcher: Launcher = Launcher.local  # local (in-process) | slurm (hydra-submitit-launcher)
    # SLURM fields (compute/slurm.yaml); PLACEHOLDER_* values must be resolved before a sweep.
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "04:00:00"  # [D-]HH:MM:SS per attempt
    nice: int = 0
    requeue: bool = True
    signal: str = "USR2"  # pre-timeout / preemption signal submitit catches
    signal_delay_s: int = 120  # sent this long before the time limit
    headroom: int = 2  # idle GPUs left to others when sizing the job array
    array_parallelism: int | None = None  # null = idle GPUs - headroom (at least 1)
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load)
    generate: ShardShape = field(default_factory=lambda: ShardShape(gpus=1, cpus=4, mem_gb=32))
    score: ShardShape = field(default_factory=lambda: ShardShape(gpus=0, cpus=8, mem_gb=16))
    shard: str = "generate"  # which shape this launch uses; set by the CLI from the command
    max_requeue_per_shard: int = 5
    gpu_hour_budget: float = 2000.0
    # Sample windows (benchforge.windows): split each cell's (task, sample) grid into shards.
    shards_per_cell: int = 1  # K windows of near-equal size; fixed per cell at plan time
    tasks_per_shard: int | None = None  # or: windows of N whole tasks each
    window: int | None = None  # the one window this command works on (set by a SLURM sweep)


@dataclass
class SandboxConfig:
    """``sandbox``: the outer isolation mode and the per-sample limits of every mode
    (``conf/sandbox/``; the limits are :class:`benchforge.sandbox.types.Limits`)."""

    name: str = MISSING  # auto | bwrap | apptainer | apptainer-setuid | userns | rlimit-only
    image: str | None = None  # scorer SIF for the apptainer modes
    timeout_s: float = 10.0  # wall clock per sample when no reference time is known
    min_time_limit_s: float = 3.0  # EvalPlus-style: max(min_time_limit_s, factor x reference)
    time_factor: float = 4.0  # 0 disables reference timing (timeout_s for every sample)
    memory_mb: int = 4096  # RLIMIT_AS / RLIMIT_DATA
    stack_mb: int = 256
    cpu_s: int = 60  # RLIMIT_CPU
    nofile: int = 256
    nproc: int = 64  # RLIMIT_NPROC (the sample runs as a dedicated uid when benchforge is root)
    fsize_mb: int = 64
    max_output_bytes: int = 65536


@dataclass
class RunConfig:
    """``run``: where a run's cells go (``<root>/<name>/<model>/<benchmark>``)."""

    root: str = "runs"
    name: str = "default"
    dir: str = MISSING  # the cell dir; derived from root/name/model/benchmark unless set
    wait_for_lock: bool = False  # another process writes this cell+stage: wait (else refuse)


@dataclass
class PathsConfig:
    """``paths``: staged model snapshots and images, and whether the hub may be contacted."""

    hf_cache: str = MISSING  # staged model snapshots (shared filesystem)
    images: str = MISSING  # pulled Apptainer images
    offline: str = "auto"  # never contact the hub: true | false | auto (= inside a SLURM job)


@dataclass
class DataConfig:
    """``data``: benchmark data files (staged), derived data (per host), the pinned mirror."""

    root: str = MISSING
    cache: str = MISSING  # expected outputs and other derived data, per host
    mirror: str = "https://raw.githubusercontent.com"  # where `stage` fetches pinned data files


@dataclass
class GenerateConfig:
    """``generate``: display of the generate stage."""

    progress: bool = True


@dataclass
class SmokeConfig:
    """``smoke``: the smoke test of a served model."""

    prompts: int = 3  # benchmark prompts sent (twice, greedy) by `benchforge smoke`
    gate: bool = False  # `run -m`: smoke every model first; a failure stops the sweep


@dataclass
class ScoreConfig:
    """``score``: what is scored (the cell's samples, a file, the references) and how."""

    samples: str | None = None  # external EvalPlus-style samples file to score
    force: bool = False
    workers: int = 0  # 0 = one per CPU core
    audit_timeouts: bool = True  # rerun what timed out with doubled limits (verdicts kept)
    full_suites: bool = False  # run dependent suites (EvalPlus plus) even after base failed
    reference: bool = False  # self-check: score the benchmark's own reference solutions
    aggregate: bool = False  # also aggregate once scored (the score shards of `run -m`)


@dataclass
class AggregateConfig:
    """``aggregate``: pass@k, its bootstrap (resamples over problems, seed, interval level) and the
    regression check."""

    bootstrap: int = 1000
    seed: int = 1234
    confidence: float = 0.95
    ks: list[int] = field(default_factory=lambda: [1])
    exclude_contaminated: bool = True  # headline without problems older than the model
    baseline: str | None = None  # cell dir(s), comma-separated: flag a significant drop
    exit_on_regression: bool = False  # ... and exit non-zero (CI use)


@dataclass
class CompareConfig:
    """``compare``: the two runs or cells of ``benchforge compare A B``."""

    a: str | None = None  # run or cell dir (`benchforge compare A B`)
    b: str | None = None


@dataclass
class PublishConfig:
    """``publish``: where the Parquet tables go and the Hub repos they are uploaded to."""

    dir: str | None = None  # null: <run>/publish
    dry_run: bool = True  # write the folders only; false uploads them to the Hub
    org: str | None = None  # Hub organisation or user owning the datasets
    results_repo: str = "benchforge-results"
    leaderboard_repo: str = "benchforge-leaderboard"
    space_repo: str | None = "benchforge-leaderboard-space"  # the Gradio Space (null: none)


@dataclass
class InspectConfig:
    """``inspect``: the cell ``benchforge inspect`` looks at and what it shows."""

    cell: str | None = None  # `benchforge inspect <cell> [--failed] [--diff <other cell>]`
    failed: bool = False
    diff: str | None = None
    limit: int = 20  # failed samples shown


@dataclass
class BenchforgeConfig:
    """The whole config: one group per swappable part, one section per command's settings."""

    stage: str = "run"  # the command being run (a pipeline stage or any other command)
    model: ModelConfig = MISSING
    benchmark: BenchmarkConfig = MISSING
    compute: ComputeConfig = MISSING
    engine: EngineConfig = MISSING
    sandbox: SandboxConfig = MISSING
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    inspect: InspectConfig = field(default_factory=InspectConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)


def slug(value: str) -> str:
    """A directory-safe form of a model/benchmark name (``Qwen/Qwen2.5`` -> ``Qwen--Qwen2.5``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(value).replace("/", "--")).strip("-") or "unnamed"


def register_configs() -> None:
    """Register the schema and resolvers. Idempotent, so repeated Hydra runs don't clash."""
    cs = ConfigStore.instance()
    cs.store(name="benchforge_schema", node=BenchforgeConfig)
    if not OmegaConf.has_resolver("slug"):
        OmegaConf.register_new_resolver("slug", slug)
    if not OmegaConf.has_resolver("slurm_minutes"):
        OmegaConf.register_new_resolver("slurm_minutes", slurm_minutes)
    if not OmegaConf.has_resolver("gres"):
        OmegaConf.register_new_resolver("gres", lambda gpus: f"gpu:{gpus}" if gpus else None)


def slurm_minutes(time: str) -> int:
    """SLURM's ``[D-]HH:MM:SS`` / ``HH:MM`` / ``MM`` time limit in whole minutes (rounded up)."""
    text = str(time).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise BenchforgeError(f"compute.time={text!r}: expected [D-]HH:MM:SS")
    days, first, second, third = match.groups()
    if second is None:  # "MM"
        hours, minutes, seconds = 0, int(first), 0
    elif third is None:  # "HH:MM" (with a day) or "MM:SS" (SLURM's reading without one)
        hours, minutes, seconds = ((int(first), int(second), 0) if days
                                   else (0, int(first), int(second)))
    else:
        hours, minutes, seconds = int(first), int(second), int(third)
    total = int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    return max(total, 1)


def compose(overrides: Sequence[str] = (), stage: str = "run") -> DictConfig:
    """Compose the benchforge config outside a Hydra app (tests, notebooks, the Python API).

    Args:
        overrides: Hydra overrides, as on the command line (``["model=oracle", "k=v"]``).
        stage: the command the config is for (the ``stage`` key: a pipeline stage or any
            other command).

    Returns:
        the composed config, structured (typed) by the schema.

    Raises:
        hydra/OmegaConf errors: an unknown group option, a wrong type, a value outside an enum.
        BenchforgeError: a bad ``model.thinking`` (see :func:`check_choices`).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=[*overrides, f"stage={stage}"])
    GlobalHydra.instance().clear()
    check_choices(cfg)
    return cfg
