"""Shared by the bench scripts: compare a measurement with its anchor, side by side."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    """The anchor measurements stored at ``path`` ({} when there is none yet)."""
    return json.loads(path.read_text()) if path.exists() else {}


def record(path: Path, data: dict[str, Any]) -> None:
    """Make ``data`` the anchor (floats rounded to 3 decimals)."""
    def rounded(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return round(value, 3) if isinstance(value, float) else value

    path.write_text(json.dumps(rounded(data), indent=2) + "\n")


def ratio(key: str, value: float, ref: float | None) -> float:
    """> 1 always means better than the anchor: rates (``*_per_s``) and speed-ups (``*_x``)
    up, times down."""
    if not ref:
        return float("nan")
    return value / ref if key.endswith(("_per_s", "_x")) else ref / value


def row(label: str, key: str, value: float, ref: float | None) -> str:
    """One line under :data:`HEADER`: the anchor's value, the current one and their ratio."""
    shown = ref if ref else float("nan")
    return f"{label:<16}{key:<22}{shown:>12.2f} {value:>12.2f}{ratio(key, value, ref):>8.2f}"


HEADER = f"{'':<16}{'metric':<22}{'anchor':>12} {'now':>12}{'ratio':>8}"


def report(path: Path, label: str, now: dict[str, float], record_it: bool) -> None:
    """Print a flat measurement next to its anchor (and make it the anchor with --record)."""
    table(label, now, load(path))
    if record_it:
        record(path, now)


def table(label: str, now: dict[str, float], anchor: dict[str, Any]) -> None:
    """Print :data:`HEADER` and one :func:`row` per metric of ``now`` (``anchor``: the
    anchor's metrics under the same label)."""
    print(HEADER)
    for key, value in now.items():
        print(row(label, key, value, anchor.get(key)))


def spread(values: Sequence[float], unit: str = " s") -> str:
    """``median (min-max)`` of repeated measurements, one decimal."""
    return (f"{statistics.median(values):.1f}{unit} "
            f"({min(values):.1f}-{max(values):.1f})")
