"""Chat-answer extraction speed, and generation throughput while long answers are extracted.

    python bench/sanitize.py [--lines 2000] [--official 100,200] [--requests 320] [--delay-s 0.3]

1. Times ``benchforge.answers.evalplus.chat_solution`` (EvalPlus's ``sanitize`` output) on
   answers of ``--lines`` lines: a fenced program between prose, the bare program, the bare
   program with a prose line mid-way or another syntax error mid-way (``x = = 1``, an
   unclosed bracket, a missing colon, a Python 2 print, a line continued into the next
   statement), the answer cut mid-line
   (``max_tokens``), a program with a ``__main__`` block and prose after it.
   Target (issue 17): < 0.5 s each. ``--official`` also times evalplus 0.3.1's own
   ``sanitize`` on the fenced shape at those sizes (it is cubic: keep them small).
2. Generation throughput with answers extracted off the event loop: the mock server (a fixed
   ``--delay-s`` per request, 16 in flight) answers ``--requests`` requests, every 10th with a
   ``--lines``-line answer, three times each way, alternating: answers kept as they are, and
   answers extracted in ``on_completion`` as ``benchforge generate`` does (on the client's
   answer thread, through the forked extraction worker of ``benchforge.answers.offload``).
   Requests/s should be the same (the issue: "generation throughput unchanged while it
   runs").
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))

from make_sanitize_cases import program  # seeded program builder

from benchforge.answers.evalplus import chat_solution


def shapes(n_lines: int) -> dict[str, str]:
    code = program(random.Random(n_lines), n_lines, "solve")
    fenced = ["Here is the solution:", "", "```python", *code, "```", "",
              "It sums the helpers. Example:", "", "```python", "print(solve(3))", "```"]
    truncated = ["Sure.", "```python", *code]
    truncated[-1] = truncated[-1][: len(truncated[-1]) // 2]
    main = [*code, "", "if __name__ == '__main__':", "    assert solve(2) >= 0", "",
            "Explanation follows here."]
    prose = [*code[: n_lines // 2], "Now we handle the edge case:", *code[n_lines // 2:]]
    broken = {}  # other syntax errors mid-way through the bare program
    for name, bad in (("bare-x==", "x = = 1"), ("bare-unclosed", "    total = (1,"),
                      ("bare-nocolon", "    if total > 2"), ("bare-py2", "print 'x'"),
                      ("bare-contin", "    y = 1 + \\")):
        lines = list(code)
        lines[n_lines // 2] = bad
        broken[name] = "\n".join(lines)
    return {"fenced": "\n".join(fenced), "bare": "\n".join(code),
            "bare-prose": "\n".join(prose), **broken,
            "truncated": "\n".join(truncated), "main-block": "\n".join(main)}


def time_extraction(n_lines: int, official_sizes: list[int]) -> None:
    chat_solution("```python\ndef solve():\n    return 1\n```", "solve")  # imports, parser
    for name, text in shapes(n_lines).items():
        started = time.perf_counter()
        chat_solution(text, "solve")
        spent = time.perf_counter() - started
        verdict = "ok" if spent < 0.5 else "MISSED (target < 0.5 s)"
        print(f"benchforge  {name:<13} {len(text.splitlines()):>5} lines  {spent:7.3f} s  "
              f"{verdict}")
    if official_sizes:
        from evalplus.sanitize import sanitize

        for size in official_sizes:
            text = shapes(size)["fenced"]
            started = time.perf_counter()
            sanitize(text, "solve")
            print(f"evalplus    fenced        {len(text.splitlines()):>5} lines  "
                  f"{time.perf_counter() - started:7.3f} s")


class LongAnswers:
    """The benchmark seam: EvalPlus chat extraction for the bench's entry point."""

    def extract_code(self, task: object, answer: str, mode: str) -> str:
        return chat_solution(answer, "solve")


def throughput(n_requests: int, n_lines: int, delay_s: float) -> None:
    from benchforge.answers.offload import extraction_worker
    from benchforge.benchmarks import Task
    from benchforge.client import ClientSettings, Request, generate
    from benchforge.engine import free_port, launch_server
    from benchforge.mock_server import write_answers
    from benchforge.prompts import Prompt

    long_answer = shapes(n_lines)["fenced"]
    prompts = [Prompt(messages=(("user", f"write function number {i}"),))
               for i in range(n_requests)]
    with tempfile.TemporaryDirectory(prefix="benchforge-bench-sanitize-") as tmp:
        answers = Path(tmp) / "answers.jsonl"
        write_answers(answers, [{
            "prompt_sha256": p.sha256,
            "completion": long_answer if i % 10 == 0 else
            f"```python\ndef solve():\n    return {i}\n```"} for i, p in enumerate(prompts)])
        port = free_port()
        cmd = [sys.executable, "-m", "benchforge.mock_server", "--port", str(port),
               "--answers", str(answers), "--served-model-name", "bench", "--delay-s", str(delay_s)]
        with launch_server(cmd, port, Path(tmp) / "server.log", 30) as url:
            settings = ClientSettings(base_url=url, served_name="bench", concurrency=16,
                                      max_retries=0, mode="chat")
            requests = [Request(f"t{i}", 0, p) for i, p in enumerate(prompts)]
            generate(requests[:16], settings, lambda r, c: None)  # warm-up
            rates: dict[str, list[float]] = {"kept as is": [], "extracted": []}
            with extraction_worker(LongAnswers(), {"t": Task("t", {})}) as extract:
                for _ in range(3):  # alternating, so drift on a shared machine hits both
                    for label in rates:
                        kept: list[str] = []
                        run = label == "extracted"
                        started = time.monotonic()
                        generate(requests, settings, lambda r, c, kept=kept, run=run: kept.append(
                            extract(Task("t", {}), c.text, "chat") if run else c.text))
                        rates[label].append(n_requests / (time.monotonic() - started))
    for label, values in rates.items():
        print(f"throughput  answers {label:<11} {statistics.median(values):7.1f} requests/s "
              f"(median of 3; every 10th answer {n_lines} lines)")
    ratio = statistics.median(rates["extracted"]) / statistics.median(rates["kept as is"])
    print(f"throughput ratio (extracted / kept as is): {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--official", default="100,200",
                        help="sizes to time evalplus's own sanitize at ('' for none)")
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--delay-s", type=float, default=0.3, help="server time per request")
    args = parser.parse_args()
    time_extraction(args.lines, [int(s) for s in args.official.split(",") if s])
    throughput(args.requests, args.lines, args.delay_s)


if __name__ == "__main__":
    main()
