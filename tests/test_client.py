"""The client against the real mock server executable: answers, retries, clear failures."""

from __future__ import annotations

import time

import pytest

from benchforge.client import ClientSettings, Request, generate
from benchforge.engine import free_port
from benchforge.errors import BenchforgeError


def collect(requests, settings):
    got = {}
    generate(requests, settings, lambda r, c: got.__setitem__((r.task_id, r.sample_idx), c))
    return got


def requests_for(humaneval, n: int, mode: str = "chat") -> list[Request]:
    bench, dataset = humaneval
    return [Request(t.task_id, 0, bench.prompt(t, mode)) for t in dataset.tasks[:n]]


def test_chat_answers_are_the_served_solutions(mock_server, humaneval) -> None:
    url = mock_server(wrong={"HumanEval/1"})
    got = collect(requests_for(humaneval, 5), ClientSettings(url, "mock-model", concurrency=3))
    bench, dataset = humaneval
    assert len(got) == 5
    task0 = dataset.tasks[0]
    assert got[("HumanEval/0", 0)].text == bench.reference_completion(task0, "chat")
    assert "return None" in got[("HumanEval/1", 0)].text
    assert got[("HumanEval/0", 0)].completion_tokens > 0
    assert got[("HumanEval/0", 0)].finish_reason == "stop"


def test_completion_mode_applies_stop_words(mock_server, humaneval) -> None:
    bench, dataset = humaneval
    url = mock_server(mode="completion")
    settings = ClientSettings(url, "mock-model", mode="completion",
                              stop=bench.stop_sequences("completion"))
    got = collect(requests_for(humaneval, 3, "completion"), settings)
    assert got[("HumanEval/0", 0)].text == dataset.tasks[0].data["canonical_solution"]


def test_transient_5xx_are_retried(mock_server, humaneval) -> None:
    url = mock_server(fail_first=3)
    got = collect(requests_for(humaneval, 4), ClientSettings(url, "mock-model", max_retries=4,
                                                             concurrency=1))
    assert len(got) == 4


def test_persistent_5xx_fail_clearly(mock_server, humaneval) -> None:
    url = mock_server(fail_first=1000)
    with pytest.raises(BenchforgeError, match=r"HTTP 503 .*after up to 2 attempts"):
        collect(requests_for(humaneval, 2), ClientSettings(url, "mock-model", max_retries=1))


def test_unknown_served_name_lists_what_is_served(mock_server, humaneval) -> None:
    url = mock_server()
    with pytest.raises(BenchforgeError, match=r"served_name=other .* it serves: mock-model"):
        collect(requests_for(humaneval, 1), ClientSettings(url, "other"))


def test_endpoint_down_fails_after_retries(humaneval) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(BenchforgeError, match=r"unreachable after 3 attempts"):
        collect(requests_for(humaneval, 1), ClientSettings(url, "m", max_retries=2))
    assert time.monotonic() - started < 30


def test_answers_are_handled_off_the_event_loop_in_arrival_order(mock_server, humaneval) -> None:
    """A slow on_completion (answer extraction) runs on a worker thread: the requests keep
    going meanwhile, every answer is handed over in arrival order, and its failure is raised."""
    import threading

    url = mock_server()
    requests = requests_for(humaneval, 8)
    seen: list[tuple[str, bool]] = []

    def slow(request: Request, completion) -> None:
        seen.append((request.task_id, threading.current_thread() is threading.main_thread()))
        if len(seen) == 1:
            time.sleep(0.5)

    started = time.monotonic()
    generate(requests, ClientSettings(url, "mock-model", concurrency=1), slow)
    assert sorted(t for t, _ in seen) == sorted(r.task_id for r in requests)
    assert [t for t, _ in seen] == [r.task_id for r in requests]  # concurrency 1: in order
    assert not any(on_main for _, on_main in seen)
    assert time.monotonic() - started < 5

    def failing(request: Request, completion) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        generate(requests, ClientSettings(url, "mock-model", concurrency=2), failing)
