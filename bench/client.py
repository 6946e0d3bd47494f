"""The generation client against the loopback fake server: requests/s and client overhead.

    python bench/client.py [--requests 3000] [--concurrency 64] [--record]

Starts benchforge's OpenAI-compatible mock server (the `vllm serve` stand-in) on 127.0.0.1 with
an answer per prompt, sends every request through `benchforge.client.generate` at the given
concurrency, and prints requests/s and the client's own CPU time per request (the server runs
in another process, so this is benchforge's overhead per request) side by side with
bench/anchor_client.json (ratio > 1 means better than the anchor). The issue's target is
>= 2000 requests/s on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _anchor  # bench/_anchor.py, next to this script

from benchforge.client import ClientSettings, Request, generate
from benchforge.engine import free_port, launch_server, write_answers
from benchforge.prompts import Prompt

ANCHOR = Path(__file__).with_name("anchor_client.json")


def measure(n_requests: int, concurrency: int) -> dict[str, float]:
    prompts = [Prompt(messages=(("user", f"write function number {i}"),))
               for i in range(n_requests)]
    with tempfile.TemporaryDirectory(prefix="benchforge-bench-client-") as tmp:
        answers = Path(tmp) / "answers.jsonl"
        write_answers(answers, [{"prompt_sha256": p.sha256,
                                 "completion": f"```python\ndef f{i}():\n    return {i}\n```"}
                                for i, p in enumerate(prompts)])
        port = free_port()
        cmd = [sys.executable, "-m", "benchforge.mock_server", "--port", str(port),
               "--answers", str(answers), "--served-model-name", "bench"]
        with launch_server(cmd, port, Path(tmp) / "server.log", 30) as url:
            settings = ClientSettings(base_url=url, served_name="bench",
                                      concurrency=concurrency, max_retries=0)
            requests = [Request(f"t{i}", 0, p) for i, p in enumerate(prompts)]
            done: list[str] = []
            # One-off costs (importing openai, ~0.4 s; the first connections) are not
            # per-request overhead: a short warm-up generate pays them, then the timed one.
            started = time.monotonic()
            generate(requests[:concurrency], settings, lambda r, c: None)
            first_call = time.monotonic() - started
            cpu, wall = time.process_time(), time.monotonic()
            generate(requests, settings, lambda r, c: done.append(c.text))
            wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert len(done) == n_requests
    print(f"first generate call ({concurrency} requests, imports included): {first_call:.2f} s")
    return {"requests_per_s": n_requests / wall, "client_cpu_ms_per_request":
            1000 * cpu / n_requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    now = measure(args.requests, args.concurrency)
    print(f"client: {args.requests} requests at concurrency {args.concurrency} (loopback)")
    _anchor.report(ANCHOR, "client", now, args.record)


if __name__ == "__main__":
    main()
