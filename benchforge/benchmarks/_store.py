"""The EvalPlus expected-output store's integrity: what ``index.json`` records about each
task's file (:func:`file_stamp`, written by ``benchmarks/_groundtruth.py`` when it builds the
store) and the check the scoring host runs before trusting a store (:func:`store_problem`).
A leaf (stdlib only), so that the builder and the host share it without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["file_stamp", "store_problem"]


def file_stamp(path: Path) -> dict[str, Any]:
    """``{"bytes", "sha256"}`` of one task's file, recorded in ``index.json`` at build time."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def store_problem(target: Path, index: Any, task_ids: list[str]) -> str | None:
    """What is wrong with a built store, or None: ``index`` (parsed ``index.json``) must name
    a file for every one of ``task_ids``, and each file must exist and, where the index
    recorded them (stores built since checksums were added), have its size and sha256.

    A damaged file would otherwise fail inside the sandbox and read as the *sample's* failure.
    """
    if not isinstance(index, dict):
        return "index.json is not a JSON object"
    for task_id in task_ids:
        entry = index.get(task_id)
        if not isinstance(entry, dict) or "file" not in entry or "times" not in entry:
            return f"index.json has no entry for {task_id}"
        path = target / str(entry["file"])
        if not path.is_file():
            return f"{entry['file']} is missing"
        size = path.stat().st_size
        if "bytes" in entry and size != entry["bytes"]:
            return f"{entry['file']} has {size} bytes, not {entry['bytes']}"
        if "bytes" not in entry:  # an older store: at least its trailer must point inside it
            with open(path, "rb") as fh:
                fh.seek(max(0, size - 8))
                start = int.from_bytes(fh.read(8), "big")
            if size < 9 or start >= size - 8:
                return f"{entry['file']} is truncated ({size} bytes)"
        if "sha256" in entry and file_stamp(path)["sha256"] != entry["sha256"]:
            return f"{entry['file']} does not match its sha256 in index.json"
    return None
