"""Sample windows: a cell's (task, sample) grid cut into contiguous, deterministic parts.

A cell of ``n_tasks`` tasks × ``n_samples`` samples is the grid of keys
``(task_ids[i], s)`` for ``i < n_tasks``, ``s < n_samples``, taken task-major (every sample of
the first task, then the next task) in the benchmark's task order. A window is a half-open
range ``[start, stop)`` of that order; a cell planned with windows is generated (and scored)
by one shard per window, each writing its own part file, and read as the union of its parts.

Two ways to ask for windows (``compute`` keys):

- ``shards_per_cell=K``: K windows whose sizes differ by at most one key (never more windows
  than keys, so no shard is empty);
- ``tasks_per_shard=N``: windows of N whole tasks each (all their samples), the last shorter.

The windows depend only on those numbers and the grid's size, so the same plan gives the same
windows on every host. This module imports only the standard library and
:mod:`benchforge.errors`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from benchforge.errors import BenchforgeError


class WindowError(BenchforgeError):
    """A window request that cannot be planned (non-positive counts, both keys given)."""


@dataclass(frozen=True)
class Window:
    """One contiguous part of a cell's task-major (task, sample) grid.

    Attributes:
        index: 0-based position among the cell's windows.
        start: first key's position in the grid (inclusive).
        stop: one past the last key's position (exclusive).
    """

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        """Number of (task, sample) keys in the window."""
        return self.stop - self.start

    def keys(self, task_ids: Sequence[str], n_samples: int) -> Iterator[tuple[str, int]]:
        """The window's ``(task_id, sample_idx)`` keys in grid order.

        Args:
            task_ids: the cell's tasks in benchmark order (length ``n_tasks``).
            n_samples: samples per task (≥ 1).
        """
        for position in range(self.start, self.stop):
            yield task_ids[position // n_samples], position % n_samples

    def as_dict(self) -> dict[str, int]:
        """The manifest form: ``{"index", "start", "stop"}``."""
        return {"index": self.index, "start": self.start, "stop": self.stop}


def plan_windows(n_tasks: int, n_samples: int, *, shards_per_cell: int | None = None,
                 tasks_per_shard: int | None = None) -> list[Window]:
    """Cut a cell's grid into windows.

    Args:
        n_tasks: tasks in the cell (≥ 0).
        n_samples: samples per task (≥ 1).
        shards_per_cell: K windows of near-equal size (sizes differ by ≤ 1 key); capped at the
            number of keys. None or 1 with ``tasks_per_shard`` None: one window, the whole cell.
        tasks_per_shard: windows of this many whole tasks each (mutually exclusive with
            ``shards_per_cell`` > 1).

    Returns:
        The windows in order; they cover every key exactly once (an empty grid gives one
        empty window, so a cell always has at least one).

    Raises:
        WindowError: a count below 1, or both ways of asking given at once.
    """
    if n_samples < 1 or n_tasks < 0:
        raise WindowError(f"a cell needs n_samples >= 1 and n_tasks >= 0, got {n_tasks} x "
                          f"{n_samples}")
    if shards_per_cell is not None and shards_per_cell < 1:
        raise WindowError(f"compute.shards_per_cell must be >= 1, got {shards_per_cell}; "
                          "use 1 (one shard per cell, the default) or more")
    if tasks_per_shard is not None and tasks_per_shard < 1:
        raise WindowError(f"compute.tasks_per_shard must be >= 1, got {tasks_per_shard}; "
                          "use a number of tasks per shard, or null (shards_per_cell decides)")
    if tasks_per_shard is not None and shards_per_cell not in (None, 1):
        raise WindowError("set compute.shards_per_cell or compute.tasks_per_shard, not both")
    total = n_tasks * n_samples
    if total == 0:
        return [Window(0, 0, 0)]
    if tasks_per_shard is not None:
        step = tasks_per_shard * n_samples
        return [Window(i, start, min(start + step, total))
                for i, start in enumerate(range(0, total, step))]
    k = min(shards_per_cell or 1, total)
    base, extra = divmod(total, k)
    windows, start = [], 0
    for i in range(k):
        stop = start + base + (1 if i < extra else 0)
        windows.append(Window(i, start, stop))
        start = stop
    return windows
