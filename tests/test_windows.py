"""Sample windows cover a cell's (task, sample) grid exactly once, deterministically."""

from __future__ import annotations

import itertools

import pytest

from benchforge.windows import Window, WindowError, plan_windows


def _keys(windows: list[Window], tasks: list[str], n_samples: int) -> list[tuple[str, int]]:
    return [key for w in windows for key in w.keys(tasks, n_samples)]


@pytest.mark.parametrize(("n_tasks", "n_samples", "k"), [
    (164, 1, 4), (7, 1, 3), (5, 3, 4), (3, 2, 10), (1, 1, 8), (13, 10, 7), (2, 5, 1)])
def test_shards_per_cell_cover_every_key_once(n_tasks: int, n_samples: int, k: int) -> None:
    tasks = [f"T/{i}" for i in range(n_tasks)]
    windows = plan_windows(n_tasks, n_samples, shards_per_cell=k)
    grid = list(itertools.product(tasks, range(n_samples)))
    assert _keys(windows, tasks, n_samples) == grid  # every key once, in grid order
    assert len(windows) == min(k, n_tasks * n_samples)  # K > keys: no empty shard
    sizes = [w.size for w in windows]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert [w.index for w in windows] == list(range(len(windows)))
    assert windows == plan_windows(n_tasks, n_samples, shards_per_cell=k)  # deterministic


@pytest.mark.parametrize(("n_tasks", "n_samples", "per"), [(10, 3, 4), (4, 1, 4), (4, 2, 9)])
def test_tasks_per_shard_keeps_whole_tasks(n_tasks: int, n_samples: int, per: int) -> None:
    tasks = [f"T/{i}" for i in range(n_tasks)]
    windows = plan_windows(n_tasks, n_samples, tasks_per_shard=per)
    assert _keys(windows, tasks, n_samples) == list(itertools.product(tasks, range(n_samples)))
    for w in windows:
        assert w.start % n_samples == 0 and (w.stop % n_samples == 0)
        assert len({t for t, _ in w.keys(tasks, n_samples)}) <= per
    assert len(windows) == -(-n_tasks // per)


def test_default_is_one_window_and_empty_grid_has_one() -> None:
    assert plan_windows(5, 2) == [Window(0, 0, 10)]
    assert plan_windows(0, 3, shards_per_cell=4) == [Window(0, 0, 0)]
    assert Window(2, 3, 7).as_dict() == {"index": 2, "start": 3, "stop": 7}


@pytest.mark.parametrize("kwargs", [{"shards_per_cell": 0}, {"tasks_per_shard": 0},
                                    {"shards_per_cell": 2, "tasks_per_shard": 3}])
def test_bad_requests_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(WindowError):
        plan_windows(4, 1, **kwargs)
