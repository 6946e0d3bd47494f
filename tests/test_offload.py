"""Answer extraction in a forked worker process (benchforge.answers.offload)."""

from __future__ import annotations

import os

import pytest

from benchforge.answers.offload import extraction_worker
from benchforge.benchmarks import Task

PARENT = os.getpid()


class PidBenchmark:
    """extract_code returns the answer and the pid it ran in (a fake at the benchmark seam)."""

    def extract_code(self, task: Task, answer: str, mode: str) -> str:
        if answer == "boom":
            raise ValueError(f"{task.task_id}: cannot extract")
        if answer == "die" and os.getpid() != PARENT:
            os._exit(9)  # the worker dies (an OOM kill)
        return f"{task.task_id}|{answer}|{mode}|{os.getpid()}"


def test_extraction_runs_in_a_worker_process_and_falls_back_when_it_dies(caplog) -> None:
    tasks = {"t/0": Task("t/0", {}), "t/1": Task("t/1", {})}
    with extraction_worker(PidBenchmark(), tasks) as extract:
        task_id, answer, mode, pid = extract(tasks["t/1"], "x = 1", "chat").split("|")
        assert (task_id, answer, mode) == ("t/1", "x = 1", "chat")
        assert int(pid) != PARENT  # another process
        with pytest.raises(ValueError, match="t/0: cannot extract"):
            extract(tasks["t/0"], "boom", "chat")
        assert extract(tasks["t/0"], "y", "completion").split("|")[3] == pid  # same worker
        with caplog.at_level("WARNING", logger="benchforge"):
            code = extract(tasks["t/0"], "die", "chat")
        assert code == f"t/0|die|chat|{PARENT}"  # extracted here once the worker died
        assert "answer-extraction worker died" in caplog.text
        assert extract(tasks["t/1"], "z", "chat").endswith(f"|{PARENT}")
