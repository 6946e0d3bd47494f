"""The readiness gate of tier-2 benchmarks: is the scoring toolchain complete, offline, inside
the scoring sandbox?

A tier-2 benchmark (``Benchmark.tier == 2``: MultiPL-E's languages, BigCodeBench, DS-1000)
lists what its scoring needs (``requirements()``: executables, files, Python distributions at
pinned versions, importable modules) and a
known-good program (``smoke_program()``). The gate runs a probe inside the same sandbox that
scores (same view, limits and sample uid), records each requirement's resolved version, then
compiles and runs the known-good program. ``benchforge smoke benchmark=<b>`` runs it alone;
``benchforge score`` runs it before any sample and refuses to score until it passes. The
result goes into the cell's ``provenance.json`` as ``readiness``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from benchforge.benchmarks import Benchmark
from benchforge.cell import run_root
from benchforge.config import slug
from benchforge.console import print_table
from benchforge.errors import BenchforgeError
from benchforge.provenance import update_provenance
from benchforge.rundir import utc_now, write_json_atomic
from benchforge.sandbox import make_sandbox
from benchforge.sandbox.types import CheckProgram, split_part

log = logging.getLogger("benchforge")

# Arguments that make each tool print its version (default: --version).
VERSION_ARGS = {"java": ["-version"], "javac": ["-version"], "go": ["version"]}
PROBE_WALL_S = 60.0
CONTAINER_HINT = ("or build the scorer container containers/{container} (apptainer build "
                  "scorer-{container_stem}.sif containers/{container}) and score with "
                  "sandbox=apptainer sandbox.image=scorer-{container_stem}.sif")

# Runs inside the sandbox (stdlib only); reports through the worker's WrongAnswer channel,
# whose text comes back verbatim as the verdict's detail.
PROBE = r'''
import json, os, shutil, subprocess
from importlib import metadata


class WrongAnswer(Exception):
    """The probe's report channel (its text is returned verbatim)."""


def _version(argv):
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    text = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    line = text.splitlines()[0] if text else ""
    if done.returncode != 0:
        return None, f"exit {done.returncode}: {line[:200]}"
    return line[:200], None


def pin_matches(installed, pinned):
    """PEP 440 ``==pinned``: a pin without a local label matches any (2.2.0+cpu is 2.2.0)."""
    return (installed if "+" in pinned else installed.split("+")[0]) == pinned


def probe(needs, version_args):
    report = []
    for need in needs:
        entry = {"kind": need["kind"], "name": need["name"], "found": False, "version": None,
                 "problem": None}
        if need["kind"] == "executable":
            path = need.get("path")
            exe = path if path and os.path.isfile(path) else shutil.which(need["name"])
            if exe is None:
                entry["problem"] = "not found in the sandbox"
            else:
                argv = [exe, *version_args.get(need["name"], ["--version"])]
                entry["version"], entry["problem"] = _version(argv)
                entry["found"] = entry["problem"] is None
        elif need["kind"] == "file":
            hits = [p for p in need["paths"] if os.path.isfile(p)]
            entry["found"] = bool(hits)
            entry["version"] = hits[0] if hits else None
            entry["problem"] = None if hits else "none of " + ", ".join(need["paths"])
        elif need["kind"] == "python":
            try:
                entry["version"] = metadata.version(need["name"])
            except metadata.PackageNotFoundError:
                entry["problem"] = "not installed"
            else:
                pinned = need.get("version")
                entry["found"] = pinned is None or pin_matches(entry["version"], pinned)
                if not entry["found"]:
                    entry["problem"] = f"version {entry['version']}, pinned {pinned}"
        elif need["kind"] == "module":
            from importlib import util

            try:
                spec = util.find_spec(need["name"])
            except (ImportError, ValueError):
                spec = None
            entry["found"] = spec is not None
            entry["version"] = getattr(spec, "origin", None) if spec else None
            entry["problem"] = None if spec else "not importable"
        else:
            entry["problem"] = f"unknown requirement kind {need['kind']!r}"
        report.append(entry)
    raise WrongAnswer(json.dumps(report))
'''


def probe_program(requirements: list[dict[str, Any]]) -> CheckProgram:
    """The sandbox program that checks ``requirements`` (executables, files, Python
    distributions and their versions); its verdict's detail carries the JSON report of what
    it found (raised as the failure message, read back by :func:`check_readiness`)."""
    call = f"\nprobe({requirements!r}, {VERSION_ARGS!r})\n"
    return CheckProgram(code="", test=PROBE + call, time_limit_s=PROBE_WALL_S)


def _parse_report(detail: str) -> list[dict[str, Any]] | None:
    _, text = split_part(detail)
    try:
        report = json.loads(text)
    except json.JSONDecodeError:
        return None
    return report if isinstance(report, list) else None


def check_readiness(benchmark: Benchmark, sandbox: Any, name: str) -> dict[str, Any]:
    """Probe ``benchmark``'s toolchain inside ``sandbox`` (a running sandbox pool).

    Returns the record kept in provenance: ``ok``, ``sandbox_mode``, ``requirements`` (each
    with ``found``, ``version``, ``problem``, ``install``), ``smoke`` (the known-good program's
    verdict) and ``missing`` (one line per problem, naming the fix).
    """

    needs: list[dict[str, Any]] = benchmark.requirements()  # type: ignore[attr-defined]
    result = sandbox.run(probe_program(needs))
    report = _parse_report(result.detail) if result.failure_mode == "wrong_answer" else None
    missing: list[str] = []
    if report is None:
        report = []
        missing.append(f"the readiness probe did not run in sandbox={sandbox.mode} "
                       f"({result.failure_mode}: {result.detail[-300:]})")
    for need, entry in zip(needs, report, strict=False):
        entry["install"] = need.get("install")
        if not entry["found"]:
            missing.append(f"{entry['name']}: {entry['problem']} (install: {need.get('install')})")
    smoke: dict[str, Any] = {"run": False}
    if not missing:
        verdict = sandbox.run(benchmark.smoke_program())  # type: ignore[attr-defined]
        smoke = {"run": True, "passed": verdict.passed, "failure_mode": verdict.failure_mode,
                 "duration_s": verdict.duration_s,
                 **({} if verdict.passed else {"detail": verdict.detail[-800:]})}
        if not verdict.passed:
            first = verdict.detail.strip().splitlines()[0][:300] if verdict.detail else ""
            missing.append(f"a known-good {name} program does not pass in sandbox="
                           f"{sandbox.mode} ({verdict.failure_mode}: {first})")
    container = getattr(benchmark, "container", None)
    return {"benchmark": name, "ok": not missing, "sandbox_mode": sandbox.mode,
            "checked_utc": utc_now(), "requirements": report, "smoke": smoke,
            "missing": missing, "container": container}


def refusal(record: dict[str, Any]) -> str:
    """The one-line error of a failed gate: every problem with its fix."""
    text = (f"benchmark={record['benchmark']} is not ready to score in sandbox="
            f"{record['sandbox_mode']}: " + "; ".join(record["missing"]))
    container = record.get("container")
    if container:
        text += "; " + CONTAINER_HINT.format(container=container,
                                              container_stem=container.rsplit(".", 1)[0])
    return text + "; check again with `benchforge smoke benchmark=" + record["benchmark"] + "`"


def gate_cell(benchmark: Benchmark, sandbox: Any, cell_dir: Any, name: str) -> dict[str, Any]:
    """Before scoring a tier-2 cell: check, record in provenance, refuse unless ready."""

    record = check_readiness(benchmark, sandbox, name)
    update_provenance(cell_dir, readiness=record)
    if not record["ok"]:
        raise BenchforgeError(refusal(record))
    log.info("readiness: benchmark=%s ready in sandbox=%s (%s)", name, sandbox.mode,
             ", ".join(f"{r['name']} {r['version']}" for r in record["requirements"]))
    return record


def run_gate(cfg: Any, benchmark: Benchmark) -> dict[str, Any]:
    """``benchforge smoke benchmark=<tier-2>``: the gate in a fresh scoring sandbox, printed as
    a table and kept in ``<run>/logs/readiness-<benchmark>.json``; raises if not ready."""

    name = str(cfg.benchmark.name)
    paths = tuple(getattr(benchmark, "sandbox_paths", list)())
    with make_sandbox(cfg.sandbox, 1, read_only=paths) as sandbox:
        record = check_readiness(benchmark, sandbox, name)
    logs = run_root(cfg) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    write_json_atomic(logs / f"readiness-{slug(name)}.json", record)
    rows = [[r["name"], "✓" if r["found"] else "✗", r["version"] or r["problem"] or "",
             "" if r["found"] else r.get("install") or ""] for r in record["requirements"]]
    if record["smoke"].get("run"):
        rows.append(["known-good program", "✓" if record["smoke"]["passed"] else "✗",
                     f"{record['smoke']['duration_s']:.2f}s", ""])
    print_table(f"readiness: {name} (sandbox={record['sandbox_mode']})",
                ["requirement", "ok", "version / problem", "install"], rows)
    if not record["ok"]:
        raise BenchforgeError(refusal(record))
    return record
