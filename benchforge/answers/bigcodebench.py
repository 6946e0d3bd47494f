"""BigCodeBench protocols (bigcodebench 0.2.5): prompts, stop strings and ``sanitize``.

- Chat (``provider/openai.py`` with ``make_raw_chat_prompt(..., tokenizer=None)``): one user
  message, ``instruction_prefix`` then, for the complete split, the prompt stripped inside a
  bare ````` fence, for the instruct split the prompt stripped as is. The answer becomes
  ``sanitize(answer, entry_point)`` (``generate.py``).
- Completion (``direct_completion``, complete split only): the raw ``complete_prompt``, cut at
  ``EOS + extra_eos_for_direct_completion("bigcodebench")`` (``provider/utility.py``); the
  solution is ``sanitize(prompt + completion, entry_point)``.
- ``sanitize`` (``sanitize.py``) is EvalPlus's tree-sitter sanitizer with three changes:
  the input is stripped first, functions are kept whether or not they return, and trailing
  top-level lines naming the entry point are dropped. It is rebuilt here on evalplus 0.3.1's
  tree-sitter helpers (evalplus is a dependency; bigcodebench, with vLLM and e2b among its
  requirements, is not).
- Evaluation (``evaluate.py``, ``calibrated=True``): the program is ``code_prompt +
  "\\n    pass\\n" + solution``; a rescored ``completion`` is ``complete_prompt + completion``.

Leaf module: imports nothing from benchforge above :mod:`benchforge.answers`.
"""

from __future__ import annotations

from benchforge.answers.stops import stop_at_stop_token
from benchforge.answers.thinking import split_thinking

INSTRUCTION_PREFIX = ("Please provide a self-contained Python script that solves the following "
                      "problem in a markdown code block:")
EOS = ["<|endoftext|>", "<|endofmask|>", "</s>", "\nif __name__", "\ndef main(", "\nprint("]
EXTRA_EOS = ["\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\nassert "]
CALIBRATION = "\n    pass\n"


def chat_prompt(task_prompt: str, split: str) -> str:
    """The user message of ``make_raw_chat_prompt`` for ``split`` (complete | instruct)."""
    if split == "complete":
        return f"{INSTRUCTION_PREFIX}\n```\n{task_prompt.strip()}\n```\n"
    return f"{INSTRUCTION_PREFIX}\n{task_prompt.strip()}\n"


def completion_stops() -> list[str]:
    """Stop strings of a base model (the dataset's own first: the first 4 are the ones sent)."""
    return [*EXTRA_EOS, *EOS[3:], *EOS[:3]]


def sanitize(code: str, entry_point: str | None) -> str:
    """bigcodebench's ``sanitize``: the longest parseable span, then its imports and the
    definitions the entry point reaches; that span itself where nothing is left."""
    from evalplus.sanitize import code_extract

    sanitized = _target_code(code, entry_point).strip()
    return sanitized if sanitized else code_extract(code)


def _target_code(code: str, entry_point: str | None) -> str:
    import tree_sitter_python
    from evalplus.sanitize import (
        ASSIGNMENT_TYPE,
        CLASS_TYPE,
        EXPRESSION_TYPE,
        FUNCTION_TYPE,
        IMPORT_TYPE,
        code_extract,
        get_definition_name,
        get_deps,
        get_function_dependency,
    )
    from tree_sitter import Language, Parser

    code = code_extract(code.strip())
    raw = code.encode("utf8")
    root = Parser(Language(tree_sitter_python.language())).parse(raw).root_node
    names: set[str] = set()
    imports, definitions = [], []
    for child in root.children:
        if child.type in IMPORT_TYPE:
            imports.append(child)
            continue
        node = None
        if child.type in (CLASS_TYPE, FUNCTION_TYPE):
            node = child
        elif child.type == EXPRESSION_TYPE and child.children[0].type == ASSIGNMENT_TYPE:
            node = child.children[0]
        if node is not None:
            name = get_definition_name(node)
            if name not in names:
                definitions.append((name, node))
                names.add(name)
    reachable = (get_function_dependency(entry_point, get_deps(definitions)) if entry_point
                 else None)
    out = b"".join(raw[n.start_byte:n.end_byte] + b"\n" for n in imports)
    out += b"".join(raw[n.start_byte:n.end_byte] + b"\n" for name, n in definitions
                    if reachable is None or name in reachable)
    text = out[:-1].decode("utf8")
    lines = text.splitlines()
    outer = []
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(" "):
            break
        if entry_point in lines[i]:  # type: ignore[operator]  # as the official (None raises)
            outer.append(i)
    return "\n".join(lines[: outer[-1]]) if outer else text


def chat_solution(answer: str, entry_point: str) -> str:
    """The solution bigcodebench keeps of a chat answer (its reasoning removed first)."""
    return sanitize(split_thinking(answer)[0], entry_point)


def completion_solution(prompt: str, completion: str, entry_point: str) -> str:
    """The solution of a base model's completion of ``prompt`` (cut at the stop strings)."""
    return sanitize(prompt + stop_at_stop_token(completion, completion_stops()), entry_point)


def program(code_prompt: str, solution: str) -> str:
    """What ``evaluate.py`` runs (``calibrated=True``)."""
    return code_prompt + CALIBRATION + solution
