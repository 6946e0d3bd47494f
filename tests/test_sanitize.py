"""benchforge.answers.sanitize gives evalplus 0.3.1's ``sanitize`` output exactly.

Long answers (120-400 lines: fenced, bare, truncated mid-line, with a ``__main__`` block, no
entry point) against values evalplus computed (``fixtures/evalplus_sanitize_cases.json``, made
by ``fixtures/make_sanitize_cases.py``: the official function is cubic, too slow to call here);
short seeded random answers built from lines that exercise every rule (fences, prose, triple
quotes, backslash-continued strings, form feeds, indented starts, duplicate and return-less
definitions) against the installed official function, live. Speed: bench/sanitize.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from benchforge.answers.sanitize import code_extract, sanitize

CASES = json.loads(Path(__file__).with_name("fixtures").joinpath(
    "evalplus_sanitize_cases.json").read_text())["cases"]

LINES = [
    "def f(x):", "    return x + 1", "    y = x", "", "   ", "Here is the code:", "```python",
    "```", "import math", "from os import path", "class A:", "    pass", "x = 1", "f(2)",
    "    if x:", "        return 2", "# comment", "    # indented comment", "print('hi')",
    "def g():", "    return f(1)", "The function `f` works.", "$ run", "? what", "'''", '"""',
    "s = '''", "abc\\", "  ```", "a.b = 3", "x, y = 1, 2", '    """Doc."""', 's = "a\\', 'b"',
    "t = ''' x", "``` '''", '# """', 'u = "\\"" + """', "r = r'\\''", "\fdef h():",
    "  \f  return 1", "```py", "def f(x):  # again", "        pass", "else:",
    "for i in range(3):", "\t return 1", "lambda: 0",
]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_long_answers_match_evalplus(case: dict) -> None:
    assert sanitize(case["text"], case["entry_point"]) == case["expected"]


def test_short_random_answers_match_evalplus_live() -> None:
    from evalplus.sanitize import code_extract as official_extract
    from evalplus.sanitize import sanitize as official

    rng = random.Random(17)
    for _ in range(150):
        text = "\n".join(rng.choice(LINES) for _ in range(rng.randint(1, 12)))
        assert code_extract(text) == official_extract(text), text
        for entry in ("f", None, "A"):
            assert sanitize(text, entry) == official(text, entry), (text, entry)


def test_edge_shapes_match_evalplus_live() -> None:
    from evalplus.sanitize import sanitize as official

    shapes = ["", "x = 1", "\n\n", "def f():\n  return 1\n\n\n", "```\n```",
              "a\x00b\ndef f():\n    return 1",  # a null byte: that span never parses
              "def f():\n    pass\ndef f():\n    return 2",  # a return-less def is skipped
              "```python\ndef f():\n    '''doc\n```\n'''\n    return 1\n```"]  # fence in a string
    for text in shapes:
        for entry in ("f", None):
            assert sanitize(text, entry) == official(text, entry), (text, entry)


# Lines with two names side by side (prose, Python 2) next to look-alikes that parse.
JUXTAPOSED = [
    "Here is the fixed code", "print x", "a.b c", "Voilà le code:", "This returns x + 1.",
    "  then we call it", "x = 1 y", "match x:", "    case _:", "        pass", "import a as b",
    "s = 'a b'  # c d", "x = y if z else w", "x = not y", "print(f'{a} b' rb'c')",
    "r = f'{x y}'", "type X = int", "async def g():", "    await h()", "1e5 x", "lambda x: x",
    "s = '''a b", "c d'''", "t = 'a \\", "b c'", "x is not None and y", '"""doc', 'more words"""',
]


def test_answers_with_prose_lines_match_evalplus_live() -> None:
    from evalplus.sanitize import code_extract as official_extract
    from evalplus.sanitize import sanitize as official

    rng = random.Random(19)
    pool = LINES + JUXTAPOSED * 2
    for _ in range(400):
        text = "\n".join(rng.choice(pool) for _ in range(rng.randint(1, 14)))
        assert code_extract(text) == official_extract(text), text
        assert sanitize(text, "f") == official(text, "f"), text
