"""Shared by the bench scripts: compare a measurement with its anchor, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def record(path: Path, data: dict[str, Any]) -> None:
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
    shown = ref if ref else float("nan")
    return f"{label:<16}{key:<22}{shown:>12.2f} {value:>12.2f}{ratio(key, value, ref):>8.2f}"


HEADER = f"{'':<16}{'metric':<22}{'anchor':>12} {'now':>12}{'ratio':>8}"


def report(path: Path, label: str, now: dict[str, float], record_it: bool) -> None:
    """Print a flat measurement next to its anchor (and make it the anchor with --record)."""
    anchor = load(path)
    print(HEADER)
    for key, value in now.items():
        print(row(label, key, value, anchor.get(key)))
    if record_it:
        record(path, now)
