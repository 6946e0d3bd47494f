"""What the GPU did during generation: a once-a-second power/memory/utilisation trace.

:class:`GpuMonitor` samples the GPUs a generate attempt owns (``CUDA_VISIBLE_DEVICES``, which
SLURM sets per job, else every GPU) from a background thread and appends one row per GPU per
sample to the cell's ``logs/gpu.jsonl``::

    {"run": "<attempt uuid>", "t": <unix s>, "gpu": "<index or UUID>",
     "memory_used_mib": <MiB>, "power_w": <W>, "utilization_pct": <%>}

:func:`summarize` turns such a trace into the cell's ``cost.gpu`` (peak memory, average and
peak power, energy, mean utilisation). Energy is the trapezoidal integral of each GPU's power
over time within one attempt (``run``), summed over GPUs and attempts; a gap of more than
:data:`GAP_S` between two samples (a suspended or preempted job) is not integrated over.

Sources, in order: NVML through ``nvidia-ml-py`` (``pynvml``, which vLLM installs), else
``nvidia-smi --query-gpu=index,memory.used,power.draw,utilization.gpu
--format=csv,noheader,nounits`` (the fields and units ``nvidia-smi --help-query-gpu``
documents). With neither, or no GPU, the monitor records nothing and every ``cost.gpu``
field is null, never zero.

This module imports only the standard library (``pynvml`` lazily).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

TRACE_NAME = "gpu.jsonl"
INTERVAL_S = 1.0
GAP_S = 10.0  # samples further apart than this are not integrated over (a suspended job)
_SMI_FIELDS = "index,memory.used,power.draw,utilization.gpu"

Reading = dict[str, Any]  # {"gpu", "memory_used_mib", "power_w", "utilization_pct"}


def _number(text: str) -> float | None:
    """One nvidia-smi CSV field as a float; ``[N/A]``, ``[Not Supported]`` and blanks → None."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_smi_csv(text: str) -> list[Reading]:
    """Parse ``nvidia-smi --query-gpu=index,memory.used,power.draw,utilization.gpu
    --format=csv,noheader,nounits`` output.

    Args:
        text: the command's stdout, one line per GPU, e.g. ``"0, 40536, 287.41, 97"``.

    Returns:
        One reading per well-formed line: ``gpu`` (the index as printed), ``memory_used_mib``
        (MiB), ``power_w`` (W), ``utilization_pct`` (0-100); a field nvidia-smi reports as
        ``[N/A]`` is None. Lines with fewer than four fields are skipped.
    """
    readings: list[Reading] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0]:
            continue
        readings.append({"gpu": parts[0], "memory_used_mib": _number(parts[1]),
                         "power_w": _number(parts[2]), "utilization_pct": _number(parts[3])})
    return readings


def visible_gpus(environ: dict[str, str] | None = None) -> list[str] | None:
    """The GPUs this process may use, from ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs, as
    CUDA and SLURM write it); None when unset (every GPU), ``[]`` when set empty (none)."""
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [p.strip() for p in value.split(",") if p.strip() and p.strip() != "-1"]


class SmiSource:
    """Readings from the ``nvidia-smi`` executable (one call per sample)."""

    name = "nvidia-smi"

    def __init__(self, executable: str, gpus: list[str] | None) -> None:
        self.command = [executable, f"--query-gpu={_SMI_FIELDS}",
                        "--format=csv,noheader,nounits"]
        if gpus:
            self.command.append(f"--id={','.join(gpus)}")

    def read(self) -> list[Reading]:
        """One reading per GPU; ``[]`` when nvidia-smi fails (driver gone, GPU lost)."""
        try:
            done = subprocess.run(self.command, capture_output=True, text=True, timeout=10,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired):
            return []
        return parse_smi_csv(done.stdout) if done.returncode == 0 else []


class NvmlSource:
    """Readings through NVML (``pynvml`` from the ``nvidia-ml-py`` package)."""

    name = "nvml"

    def __init__(self, nvml: Any, gpus: list[str] | None) -> None:
        self.nvml = nvml
        nvml.nvmlInit()
        if gpus is None:
            gpus = [str(i) for i in range(nvml.nvmlDeviceGetCount())]
        self.handles: list[tuple[str, Any]] = []
        for gpu in gpus:
            handle = (nvml.nvmlDeviceGetHandleByIndex(int(gpu)) if gpu.isdigit()
                      else nvml.nvmlDeviceGetHandleByUUID(gpu))
            self.handles.append((gpu, handle))

    def _safe(self, call: Callable[[], float]) -> float | None:
        try:
            return float(call())
        except Exception:  # NVMLError_NotSupported and friends: a missing field
            return None

    def read(self) -> list[Reading]:
        """One reading per GPU (memory in MiB, power in W, utilisation in %)."""
        nvml = self.nvml
        readings = []
        for gpu, h in self.handles:
            memory = self._safe(lambda h=h: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20)
            power = self._safe(lambda h=h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)
            util = self._safe(lambda h=h: nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            readings.append({"gpu": gpu, "memory_used_mib": memory, "power_w": power,
                             "utilization_pct": util})
        return readings


def open_source(environ: dict[str, str] | None = None) -> SmiSource | NvmlSource | None:
    """The first source that answers for the visible GPUs: NVML, else nvidia-smi; None when
    there is no GPU to watch (no driver, no tool, or ``CUDA_VISIBLE_DEVICES`` empty)."""
    gpus = visible_gpus(environ)
    if gpus == []:
        return None
    try:
        import pynvml  # type: ignore[import-not-found]

        source: SmiSource | NvmlSource = NvmlSource(pynvml, gpus)
        if source.read():
            return source
    except Exception:  # no package, no driver, or a GPU NVML cannot open
        pass
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    source = SmiSource(executable, gpus)
    return source if source.read() else None


class GpuMonitor:
    """Sample the visible GPUs every ``interval_s`` into ``trace`` while the ``with`` block
    runs (a daemon thread; rows are appended and flushed one sample at a time, so a killed
    attempt keeps what it measured).

    Args:
        trace: the cell's ``logs/gpu.jsonl`` (created with its folder if needed).
        interval_s: seconds between samples (1.0 by default).
        source: where readings come from; :func:`open_source` when omitted.

    Attributes:
        active: False when no source answered (no GPU): nothing is written.
    """

    def __init__(self, trace: Path, interval_s: float = INTERVAL_S,
                 source: SmiSource | NvmlSource | None = None) -> None:
        self.trace = trace
        self.interval_s = interval_s
        self.source = source if source is not None else open_source()
        self.active = self.source is not None
        self.run_id = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample_once(self, out: Any) -> None:
        assert self.source is not None
        readings = self.source.read()
        now = time.time()  # when the reading returned: nvidia-smi measures at its end
        for reading in readings:
            out.write(json.dumps({"run": self.run_id, "t": round(now, 3), **reading}) + "\n")
        out.flush()

    def _loop(self) -> None:
        self.trace.parent.mkdir(parents=True, exist_ok=True)
        with open(self.trace, "a", encoding="utf-8") as out:
            next_at = time.monotonic()
            while True:
                self._sample_once(out)
                next_at += self.interval_s
                if self._stop.wait(max(0.0, next_at - time.monotonic())):
                    self._sample_once(out)  # the end of the window, so energy covers it
                    return

    def __enter__(self) -> GpuMonitor:
        if self.active:
            self._thread = threading.Thread(target=self._loop, name="benchforge-gpumon",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=15)


def read_trace(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every well-formed row of the given traces (a torn last line is skipped)."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("t"), int | float):
                rows.append(row)
    return rows


EMPTY_SUMMARY: dict[str, Any] = {
    "gpus": None, "samples": 0, "seconds": None, "peak_memory_gb": None,
    "avg_power_w": None, "peak_power_w": None, "energy_wh": None, "mean_utilization_pct": None,
}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Reduce a GPU trace to what a cell's ``cost.gpu`` reports.

    Args:
        rows: trace rows (see the module docstring), any order, any number of attempts.

    Returns:
        ``gpus`` (distinct GPUs seen), ``samples`` (rows), ``seconds`` (GPU-seconds covered
        by integrated intervals), ``peak_memory_gb`` (max over GPUs and time of used memory,
        GB = 10^9 bytes), ``avg_power_w`` (energy / seconds, i.e. the time-weighted mean per
        GPU), ``peak_power_w``, ``energy_wh`` (trapezoidal integral of power, summed over
        GPUs and attempts, watt-hours), ``mean_utilization_pct`` (time-weighted). A field no
        sample carried is None; with no rows every field is None and ``samples`` is 0.
    """
    if not rows:
        return dict(EMPTY_SUMMARY)
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault((str(row.get("run")), str(row.get("gpu"))), []).append(row)
    energy_j = util_s = power_s = util_weight_s = 0.0
    for points in series.values():
        points.sort(key=lambda r: r["t"])
        for a, b in itertools.pairwise(points):
            dt = b["t"] - a["t"]
            if dt <= 0 or dt > GAP_S:
                continue
            if a.get("power_w") is not None and b.get("power_w") is not None:
                energy_j += (a["power_w"] + b["power_w"]) / 2 * dt
                power_s += dt
            if a.get("utilization_pct") is not None and b.get("utilization_pct") is not None:
                util_s += (a["utilization_pct"] + b["utilization_pct"]) / 2 * dt
                util_weight_s += dt

    def peak(field: str) -> float | None:
        values = [r[field] for r in rows if isinstance(r.get(field), int | float)]
        return max(values) if values else None

    peak_mib = peak("memory_used_mib")
    peak_w = peak("power_w")
    return {
        "gpus": len({str(r.get("gpu")) for r in rows}),
        "samples": len(rows),
        "seconds": round(power_s, 3) if power_s else None,
        "peak_memory_gb": round(peak_mib * 2**20 / 1e9, 3) if peak_mib is not None else None,
        "avg_power_w": round(energy_j / power_s, 2) if power_s else None,
        "peak_power_w": round(peak_w, 2) if peak_w is not None else None,
        "energy_wh": round(energy_j / 3600, 6) if power_s else None,
        "mean_utilization_pct": round(util_s / util_weight_s, 1) if util_weight_s else None,
    }
