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


ORPHAN_SCRIPT = """
import os, sys, time
from benchforge.answers.offload import extraction_worker
from benchforge.benchmarks import Task

class B:
    def extract_code(self, task, answer, mode):
        return str(os.getpid())

tasks = {"t/0": Task("t/0", {})}
with extraction_worker(B(), tasks) as extract:
    print(extract(tasks["t/0"], "", "chat"), flush=True)
    time.sleep(60)
"""


def test_the_worker_ends_when_its_parent_is_killed_outright() -> None:
    """SIGKILL of the generating process (no shutdown) must not leave the worker behind."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE,
                            text=True)
    try:
        worker = int(proc.stdout.readline())
        assert worker != proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            # an orphan re-parented to a subreaper (not init) can linger as a zombie
            with open(f"/proc/{worker}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the extraction worker outlived its SIGKILLed parent")
    finally:
        if proc.poll() is None:
            proc.kill()
