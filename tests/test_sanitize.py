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
              "```python\ndef f():\n    '''doc\n```\n'''\n    return 1\n```",  # fence in a string
              # a lone CR is a line break to CPython: the line rules must not see one line
              "#\rif x:\n    pass", "a = 1\n# c\r(\n)", "    \rx = 1\ny = 2",
              # CRLF: a backslash before the CR continues the line (and a string)
              "s = 'hello \\\r\nbig world'\nt = 1", "s = 'a\\\r\n(b'\r\nt = 1\r",
              # a line that is only a backslash, joined with a blank line: no statement
              "  \\\n\nx = 1", "\t\\\n# c\nx = 1",
              # spans that end open: a continuation, a block header, a decorator
              "x = 1\ny = 1 + \\\nz = 2", "x = 1\nif x:  # c\n    y = 2",
              "@dec\ndef f():\n    return 1\n@dec", "m = (a\n@ b)\nx = 1"]
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


# Top-level statements and the clauses a statement above takes in (else/elif/except/finally at
# column 0, one-line compound statements, continuations), next to syntax errors of every kind
# the parser reports: a start's parse is carried to the starts above it only where the
# statement below begins on its own.
TOP_LEVEL = [
    "if x:", "    pass", "else:", "elif y:", "try:", "except E:", "except:", "finally:",
    "if x: pass", "else: pass", "for i in y: pass", "while x: y()", "@dec", "def h(): return 1",
    "def k():", "    return 2", "class C: pass", "x = 1; y = 2", "x = (1,", "2)", "a = \\", "  3",
    "", "# c", "    # c", "match x:", "    case 1:", "        pass", "case 2:", "with a as b:",
    "async def q():", "    await z", "s = '''", "'''", "return 1", "  else:", "else",
    "try: pass", "except: pass", "finally: pass", "\\", "elsewhere = 1", "x = [", "]",
]
ERRORS = [
    "x = = 1", "def oops(:", "def g(x)", "    return (1,", "    y = [1, 2", ")", "]", "    else",
    "print 'x'", "f(a for a in b, c)", "x = 0x", "s = 'abc", '"""', "  )", "class B", "x = 1 +",
    "    return 1 2", "foo(", "    x = {1: 2,", "}", "if x", "@", "x ==", ":", "try:",
    "a\\", "del 1", "x: int = ", "y = 1 + \\", "  \\", "x = 1\r", "if x:\r", "@dec", "@ b)",
    "def k():  # c", "d = {1:", "s = 'a\\\r", "#\rif y:", "  \rz = 3",
]


def compound_statements(rng: random.Random, count: int) -> list[str]:
    """Valid top-level statements, compound ones with the clauses they take in."""
    body = ["    pass", "    y = 1", "    return 2", "    if z:", "        z = 0"]
    shapes = [["if x:", "elif y:", "else:"], ["try:", "except E:", "else:", "finally:"],
              ["try:", "finally:"], ["for i in y:", "else:"], ["while x:", "else:"],
              ["def f():"], ["class C:"], ["with a as b:"], ["x = 1"], ["print(x)"],
              ["if x: pass", "else: y = 2"]]
    out: list[str] = []
    for _ in range(count):
        shape = rng.choice(shapes)
        for head in shape[:1] + [c for c in shape[1:] if rng.random() < 0.7]:
            out.append(head)
            if head.endswith(":"):
                out += rng.sample(body[:3], rng.randint(1, 2))
        if rng.random() < 0.3:
            out.append("")
    return out


def test_programs_with_syntax_errors_match_evalplus_live() -> None:
    from evalplus.sanitize import code_extract as official_extract
    from fixtures.make_sanitize_cases import program

    rng = random.Random(23)
    for case in range(450):
        if case % 3 == 1:
            lines = [rng.choice(TOP_LEVEL + ERRORS) for _ in range(rng.randint(2, 18))]
        elif case % 3 == 2:
            lines = compound_statements(rng, rng.randint(2, 8))
            for _ in range(rng.randint(0, 2)):
                k = rng.randrange(len(lines))
                lines[k:k + rng.randint(0, 1)] = [rng.choice(ERRORS)]
        else:
            lines = program(rng, rng.randint(12, 30), "solve")
            for _ in range(rng.randint(1, 3)):
                k = rng.randrange(len(lines))
                lines[k:k + rng.randint(0, 1)] = [rng.choice(ERRORS)]
        text = "\n".join(lines)
        assert code_extract(text) == official_extract(text), text
