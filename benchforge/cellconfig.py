"""The plan-time ``config.yaml`` of a cell and how a later command may differ from it.

``config.yaml`` is written once, when the cell is planned, and its sha256 goes into
``provenance.json`` (``config_sha256``), so an edit is visible to ``verify``. A later command
is compared with it key by key:

- keys that change results (the cell identity: model sampling and benchmark; the sandbox's
  limits, which decide timeouts and memory verdicts; ``score.audit_timeouts``) must match, or
  the command is refused — except a ``score.force=true`` rescore, which archives the old
  ``config.yaml`` with the old verdicts and writes the new one;
- every other key (workers, sandbox mode, progress, endpoint URL, paths, ...) is an execution
  setting: it is recorded in the attempt (``logs/attempts.jsonl``), never in ``config.yaml``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from benchforge.errors import BenchforgeError
from benchforge.provenance import update_provenance
from benchforge.rundir import write_atomic

# Model keys that change how a cell is executed but not what it computes; kept out of the cell
# id (benchforge.cell) so that e.g. raising concurrency does not orphan a half-finished cell.
OPERATIONAL_MODEL_KEYS = frozenset(
    {"base_url", "api_key_env", "concurrency", "request_timeout_s", "max_retries",
     "startup_timeout_s", "oracle_latency_s"}
)

# Keys of the sandbox that change a verdict (timeouts, memory, output size), not just speed.
RESULT_SANDBOX_KEYS = ("timeout_s", "min_time_limit_s", "time_factor", "memory_mb", "stack_mb",
                       "cpu_s", "nofile", "nproc", "fsize_mb", "max_output_bytes")
IGNORED = ("stage", "compute.shard", "compute.window")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _resolved(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return flatten(OmegaConf.to_container(cfg, resolve=True))


def _planned(path: Path) -> dict[str, Any] | None:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return flatten(data) if isinstance(data, dict) else None


def result_changing(key: str, external: bool) -> bool:
    """Whether a differing ``key`` changes what the cell's rows would be."""
    section, _, name = key.partition(".")
    if section == "benchmark":
        return True
    if section == "model":
        return not external and name.split(".")[0] not in OPERATIONAL_MODEL_KEYS
    if section == "sandbox":
        return name in RESULT_SANDBOX_KEYS
    return key in ("score.audit_timeouts",)


def diff(path: Path, cfg: Any) -> dict[str, tuple[Any, Any]]:
    """``{key: (planned, now)}`` for every key where this command differs from ``path``."""
    planned = _planned(path)
    if planned is None:
        return {}
    now = _resolved(cfg)
    return {k: (planned.get(k), now.get(k)) for k in sorted(set(planned) | set(now))
            if k not in IGNORED and planned.get(k) != now.get(k)}


def execution_diff(path: Path, cfg: Any) -> dict[str, list[Any]]:
    """The execution settings of this command that differ from the plan (for the attempt)."""
    external = bool(cfg.score.samples)
    try:
        found = diff(path, cfg)
    except Exception:
        return {}
    return {k: [a, b] for k, (a, b) in found.items() if not result_changing(k, external)}


def config_text(cfg: Any) -> str:
    """The resolved config as YAML: what ``config.yaml`` holds (written once, at plan time)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def sha256_text(text: str) -> str:
    """Hex sha256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_plan(path: Path, recorded_sha: str | None, cfg: Any) -> None:
    """Refuse a command whose result-changing settings differ from the plan-time config.

    Raises:
        BenchforgeError: ``config.yaml`` changed since it was planned (sha256 differs from
            ``provenance.json``), or a result-changing key differs (unless ``score.force``).
    """
    if not path.exists():
        return
    if recorded_sha and sha256_text(path.read_text(encoding="utf-8", errors="replace")) \
            != recorded_sha:
        raise BenchforgeError(
            f"{path}: changed after the cell was planned (sha256 differs from provenance.json "
            "config_sha256); run `benchforge verify`, then restore it or run `benchforge repair` "
            "with this cell's overrides")
    external = bool(cfg.score.samples)
    changing = {k: v for k, v in diff(path, cfg).items() if result_changing(k, external)}
    if not changing:
        return
    if bool(cfg.score.force) and all(k.split(".")[0] in ("sandbox", "score") for k in changing):
        return  # a full rescore with new limits: run_score archives the old config.yaml
    shown = ", ".join(f"{k} (planned {a!r}, now {b!r})" for k, (a, b) in
                      list(changing.items())[:4])
    raise BenchforgeError(
        f"{path.parent}: this command changes settings that decide the results: {shown}; "
        "drop those overrides, rescore with score.force=true (sandbox limits only), or use "
        "another run.name")


def rescore_config(cell: Any, cfg: Any, stamp: str) -> None:
    """``score.force=true``: the old ``config.yaml`` goes to ``logs/`` with the old verdicts and
    this command's config becomes the cell's (its sha256 into provenance.json)."""
    import os

    text = config_text(cfg)
    if cell.config.exists():
        external = bool(cfg.score.samples)
        if not any(result_changing(k, external) for k in diff(cell.config, cfg)):
            return
        os.replace(cell.config, cell.logs / f"config.{stamp}.yaml")
    write_atomic(cell.config, text)
    update_provenance(cell, config_sha256=sha256_text(text))
