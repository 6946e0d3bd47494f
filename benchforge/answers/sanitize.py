"""EvalPlus 0.3.1's ``sanitize`` with the same output at a cost that grows with the answer.

``evalplus/sanitize.py`` (evalplus 0.3.1, ``sanitize``) does two things:

1. ``code_extract``: of all spans of two or more consecutive lines (``text.split("\\n")``) that
   ``ast.parse`` accepts, the one with the most non-blank lines, the first such in (start, end)
   order; the first line when none has a non-blank line. It tries every span, each parsed
   whole: cubic in the answer's length (100/200/400 lines took 0.35/1.85/15.9 s).
2. With tree-sitter, it keeps from that span the imports, then the first class, function
   (only one with a ``return`` somewhere in it) and top-level assignment of each name, and,
   given an entry point, only the definitions the entry point reaches through identifiers;
   if that leaves nothing, the extracted span itself (step 1 again).

Here step 1 gives the same span by trying spans from the heaviest down (so the first span that
parses is the answer and nothing lighter is tried) and by never parsing a span that cannot
parse: one holding a line that starts with a character Python rejects outside a string
(a backtick, ``$``, ``?``: a Markdown fence) or that holds two names side by side (prose:
``Now we test it``; Python's grammar never allows it) where no start line above can leave that
line inside a string (a one-pass lexer over line-start states), one that ends inside a string
(same lexer), or one whose first statement line is indented. The lexer follows Python 3.11's
strings; on 3.12+ (nested f-string quotes) only the indentation rule is used. A chat answer
(prose, fenced blocks, prose) then costs a few parses of its code;
a long bare program with a prose line mid-way costs the same (2,000 lines: 0.04 s). What
stays expensive is any other syntax error mid-way through a long program with no fence around
it (``x = = 1``: every heavier span holding it is parsed up to it; 120 lines 0.2 s, 400 lines
6 s).
Step 2 is linear; this module writes it anew on the same tree-sitter grammar.
"""

from __future__ import annotations

import ast
import keyword
import re
import sys
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

_REJECTED_FIRST = ("`", "$", "?")  # invalid characters outside strings and comments
CODE = "code"  # line-start lexer state outside any string
_QUOTES = ("'", '"')
_WORD = re.compile(r"[^\W\d]\w*")  # an identifier (or keyword) token
_NUMBER = re.compile(r"[\w.]+")  # a number token, loosely: it only has to be skipped whole
# Names that may stand next to another name: keywords (``is not``, ``import x as y``) and soft
# keywords (``match x:``, ``case _:``, 3.12's ``type X = ...``).
_MAY_JUXTAPOSE = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {"type"}
_STRING_PREFIXES = frozenset({"r", "u", "b", "f", "br", "rb", "fr", "rf"})


def _parses(source: str) -> bool:
    """evalplus.syncheck.syntax_check: ``ast.parse`` accepts it."""
    try:
        ast.parse(source)
    except (SyntaxError, MemoryError):
        return False
    return True


def _after(line: str, state: str) -> str:
    """The lexer state after ``line`` entered in ``state``: ``CODE``, a triple quote (inside
    a triple-quoted string) or a single quote (inside a one-line string continued by a
    backslash). A line Python rejects may end in any state: no parsable span holds it."""
    k, n = 0, len(line)
    while k < n:
        char = line[k]
        if state == CODE:
            if char == "#":
                return CODE
            if char in _QUOTES:
                state = char * 3 if line.startswith(char * 3, k) else char
                k += len(state)
            else:
                k += 1
        elif char == "\\":  # an escaped character (raw strings too) never closes a string
            k += 2
        elif line.startswith(state, k):
            k += len(state)
            state = CODE
        else:
            k += 1
    if state in _QUOTES and not line.endswith("\\"):
        return CODE  # an unterminated one-line string: an error that the line ends
    return state


def _skip_string(line: str, k: int) -> int | None:
    """The index after the string literal that opens at ``line[k]`` (a quote), or None when
    it does not close on this line (a triple-quoted string going on, or an error)."""
    quote = line[k] * 3 if line.startswith(line[k] * 3, k) else line[k]
    k += len(quote)
    while k < len(line):
        if line[k] == "\\":  # an escaped character (raw strings too) never closes it
            k += 2
        elif line.startswith(quote, k):
            return k + len(quote)
        else:
            k += 1
    return None


def _juxtaposed_names(line: str) -> bool:
    """Whether ``line``, entered outside any string, holds two names side by side (``Here is
    the code``, ``print x``) outside strings and comments, neither a keyword or soft keyword.

    Python's grammar never puts a NAME token right after another NAME token except where one is
    a (soft) keyword, so such a line fails to parse in every span that holds it. A string
    prefix before a quote (``f"..."``) is part of the string; a string that does not close on
    the line stops the scan (what follows is string, or the line is an error anyway)."""
    k, n, after_name = 0, len(line), False
    while k < n:
        char = line[k]
        if char in " \t\f":
            k += 1
        elif char == "#":
            return False
        elif char in _QUOTES:
            end = _skip_string(line, k)
            if end is None:
                return False
            k, after_name = end, False
        elif char.isdigit():
            k, after_name = _NUMBER.match(line, k).end(), False  # type: ignore[union-attr]
        else:
            word = _WORD.match(line, k)
            if word is None:
                k, after_name = k + 1, False  # an operator, a bracket, a dot
                continue
            name, k = word.group(), word.end()
            if k < n and line[k] in _QUOTES and name.lower() in _STRING_PREFIXES:
                continue  # the prefix of the string that follows
            if name in _MAY_JUXTAPOSE:
                after_name = False
            elif after_name:
                return True
            else:
                after_name = True
    return False


class _Strings:
    """Lexer state after line j for a span starting at line i (entered in ``CODE``).

    One pass from line 0 gives every line's state; a start that this pass enters in ``CODE``
    shares it from there on, and any other start is walked on its own until it enters a line
    in the same state as the pass, from where they are the same.
    """

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.enter: list[str] = []
        self.leave: list[str] = []
        state = CODE
        for line in lines:
            self.enter.append(state)
            state = _after(line, state)
            self.leave.append(state)
        self.own: dict[int, tuple[list[str], list[int]]] = {}

    def after(self, i: int, j: int) -> str:
        if self.enter[i] == CODE:
            return self.leave[j]
        out, merged = self.own.setdefault(i, ([], []))
        while not merged and len(out) <= j - i:
            k = i + len(out)
            entering = out[-1] if out else CODE
            if out and entering == self.enter[k]:
                merged.append(k)
                break
            out.append(_after(self.lines[k], entering))
        if merged and j >= merged[0]:
            return self.leave[j]
        return out[j - i]


def _segments(lines: list[str]) -> list[tuple[int, int]]:
    """Runs of lines (first, last) that a parsable span can lie in: the text split at lines
    that start with a character Python rejects outside a string, or hold two names side by
    side (prose: :func:`_juxtaposed_names`), where no start line above can leave that line
    inside a string (the set of states each line can be entered in, over every start line, is
    carried down: at most five states, one pass)."""
    segments, start = [], 0
    reachable = {CODE}  # states line k can be entered in, over every start i <= k
    for k, line in enumerate(lines):
        if reachable == {CODE} and (line.lstrip(" \t\f").startswith(_REJECTED_FIRST)
                                    or _juxtaposed_names(line)):
            if k > start:
                segments.append((start, k - 1))
            start = k + 1
        reachable = {_after(line, state) for state in reachable} | {CODE}
    if start < len(lines):
        segments.append((start, len(lines) - 1))
    return segments


def _first_statement_lines(lines: list[str]) -> list[int]:
    """Per line k: the index of the first line at or after k that is neither blank nor a
    comment where that line is indented (a span from k through it cannot parse: "unexpected
    indent"; a form feed in the indentation resets it, so such a line is not counted), else
    ``len(lines)``."""
    n = len(lines)
    found = [n] * n
    below = n  # the next statement line below, if indented
    for k in range(n - 1, -1, -1):
        line = lines[k]
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lead = line[:len(line) - len(line.lstrip(" \t\f"))]
            below = k if lead and "\f" not in lead else n
        found[k] = below
    return found


def code_extract(text: str) -> str:
    """``evalplus.sanitize.code_extract(text)``, same result (see the module docstring).

    Args:
        text: a model's answer (any length).

    Returns:
        The longest parsable run of lines (by non-blank lines, first on ties), or the first
        line when none.
    """
    lines = text.split("\n")
    n = len(lines)
    nonblank = [0] * (n + 1)  # nonblank[k]: non-blank lines among lines[:k]
    for k, line in enumerate(lines):
        nonblank[k + 1] = nonblank[k] + (1 if line.strip() else 0)
    offsets = [0] * (n + 1)  # lines[i:j+1] joined is text[offsets[i]:offsets[j+1]-1]
    for k, line in enumerate(lines):
        offsets[k + 1] = offsets[k] + len(line) + 1
    indented = _first_statement_lines(lines)
    # the line-start lexer knows Python 3.11's strings (3.12 f-strings nest quotes)
    lexer = sys.version_info < (3, 12)
    strings = _Strings(lines) if lexer else None
    best: tuple[int, int, int] | None = None  # (weight, i, j)
    for first, last in _segments(lines) if lexer else [(0, n - 1)]:
        floor = best[0] if best else 0  # a later segment must be strictly heavier
        found = _heaviest_in(text, nonblank, offsets, indented, strings, first, last, floor)
        if found is not None:
            best = found
    if best is None:
        return "\n".join(lines[0:1])
    return text[offsets[best[1]]:offsets[best[2] + 1] - 1]


def _heaviest_in(text: str, nonblank: list[int], offsets: list[int], indented: list[int],
                 strings: _Strings | None, first: int, last: int,
                 floor: int) -> tuple[int, int, int] | None:
    """The first (start, end) in order among the heaviest parsable spans of two or more lines
    within lines first..last, if heavier than ``floor``."""
    for weight in range(nonblank[last + 1] - nonblank[first], floor, -1):
        for i, j in _spans_of_weight(nonblank, first, last, weight):
            if indented[i] <= j:  # its first statement line is indented
                continue
            if strings is not None and strings.after(i, j) != CODE:  # ends inside a string
                continue
            if _parses(text[offsets[i]:offsets[j + 1] - 1]):
                return weight, i, j
    return None


def _spans_of_weight(nonblank: list[int], first: int, last: int,
                     weight: int) -> Iterator[tuple[int, int]]:
    """Spans (i, j), first <= i < j <= last, with ``weight`` non-blank lines, in (i, j)
    order."""
    import bisect

    for i in range(first, last):
        target = nonblank[i] + weight  # nonblank[j + 1] == target
        if target > nonblank[last + 1]:
            break
        lo = bisect.bisect_left(nonblank, target, i + 2, last + 2)  # j + 1 >= i + 2
        for end in range(lo, last + 2):
            if nonblank[end] != target:
                break
            yield i, end - 1


@lru_cache(maxsize=1)
def _parser() -> Any:
    import tree_sitter_python
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_python.language()))


def _name(node: Any) -> str | None:
    """The first identifier child's text (a definition's or an assignment's name)."""
    for child in node.children:
        if child.type == "identifier":
            return child.text.decode("utf8")
    return None


def _has_return(node: Any) -> bool:
    """Whether evalplus's pre-order cursor walk (``traverse_tree``) meets a return statement.
    That walk counts leaves down and parent steps up and stops once it climbs with the count
    at zero, so it can end before the last children of a deeply nested node; the same walk
    is kept here, since it decides which functions are kept."""
    cursor = node.walk()
    depth, descend = 0, True
    while True:
        if descend:
            if cursor.node.type == "return_statement":
                return True
            if cursor.goto_first_child():
                continue
            depth, descend = depth + 1, False
        elif cursor.goto_next_sibling():
            descend = True
        elif not cursor.goto_parent() or depth == 0:
            return False
        else:
            depth -= 1


def _identifiers(node: Any) -> set[str]:
    """Identifier texts below ``node`` (an identifier's own children are not descended)."""
    found: set[str] = set()
    stack = list(node.children)
    while stack:
        current = stack.pop()
        if current.type == "identifier":
            found.add(current.text.decode("utf8"))
        else:
            stack.extend(current.children)
    return found


def _definitions(code: bytes, entry_point: str | None) -> str:
    """evalplus's ``extract_target_code_or_empty`` after its ``code_extract``: imports, then
    first definitions of each name (functions only with a return), reachable ones only."""
    root = _parser().parse(code).root_node
    imports, definitions, seen = [], [], set()
    for child in root.children:
        if child.type in ("import_statement", "import_from_statement"):
            imports.append(child)
            continue
        node = child
        if child.type == "function_definition":
            name = _name(child)
            if name in seen or not _has_return(child):
                continue
        elif child.type == "class_definition":
            name = _name(child)
            if name in seen:
                continue
        elif child.type == "expression_statement" and child.children[0].type == "assignment":
            node = child.children[0]
            name = _name(node)
            if name in seen:
                continue
        else:
            continue
        definitions.append((name, node))
        seen.add(name)
    keep = {name for name, _ in definitions}
    if entry_point:
        deps = {}
        for name, node in definitions:
            deps.setdefault(name, _identifiers(node))  # the first of a name wins, as a dict
        keep, queue = {entry_point}, [entry_point]
        while queue:
            for neighbour in deps.get(queue.pop(), ()):
                if neighbour not in keep:
                    keep.add(neighbour)
                    queue.append(neighbour)
    parts = [code[node.start_byte:node.end_byte] for node in imports]
    parts += [code[node.start_byte:node.end_byte] for name, node in definitions if name in keep]
    return b"\n".join(parts).decode("utf8")


def sanitize(code: str, entry_point: str | None = None) -> str:
    """``evalplus.sanitize.sanitize(code, entry_point)`` (evalplus 0.3.1), same output.

    Args:
        code: the answer (chat) or prompt + completion (base model).
        entry_point: the function the task calls; None keeps every definition.

    Returns:
        The program EvalPlus grades.
    """
    extracted = code_extract(code)
    kept = _definitions(extracted.encode("utf8"), entry_point).strip()
    return kept if kept else extracted
