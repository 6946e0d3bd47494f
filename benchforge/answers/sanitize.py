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
parses is the answer and nothing lighter is tried) and by never parsing a span that is known
not to parse:

* one holding a line that starts with a character Python rejects outside a string (a
  backtick, ``$``, ``?``: a Markdown fence) or that holds two names side by side (prose:
  ``Now we test it``; Python's grammar never allows it) where no start line above can leave
  that line inside a string (a one-pass lexer over line-start states);
* one that ends inside a string, with brackets unpaired, or open: on a line continuation, a
  block header (``if x:``) or a decorator (same lexer); or whose first statement line is
  indented;
* one that runs past where an earlier parse of the same start failed for good: a parse that
  fails before the tokenizer reaches the end of the span (CPython's "incomplete input" test,
  ``PyCF_ALLOW_INCOMPLETE_INPUT``) fails for every longer span from that start, and the span
  cut at the error's line is tried once to bring the bound up to the error;
* one from a start whose first statement parses alone and runs past where the spans from the
  next statement's line stop parsing (a module is read statement by statement; the next line
  must begin a statement of its own: column 0, not ``else``/``elif``/``except``/``finally``,
  no line continuation before it). Starts are settled from the bottom, one statement's parse
  each, so a syntax error mid-way through a long bare program is not parsed again from every
  start above it.

The lexer follows Python 3.11's strings (one pass from the first line, and a new pass from the
first start no pass enters outside a string, as after a stray triple quote); on 3.12+ (nested
f-string quotes) the rules that need it are left out. Spans are ``text.split("\\n")`` lines as
in evalplus, but the line rules read physical lines as CPython's tokenizer does: a lone CR
ends one, a CRLF's CR is part of the line end. A chat answer (prose, fenced blocks,
prose) costs a few parses of its code; a 2,000-line bare program with a prose line,
``x = = 1``, an unclosed bracket or a missing colon mid-way 0.03-0.1 s (``bench/sanitize.py``).
This is measured, not proven linear for every input: 2,000 lines drawn at random from code,
compound statements, prose and broken lines (continuations, lone CRs, stray quotes) took at
most 0.25 s.
Two differences, both where evalplus crashes: an expression nested deeply enough makes
``ast.parse`` raise RecursionError, and a lone surrogate (``"\\ud800"``) UnicodeEncodeError,
neither of which evalplus catches; it tries every span, so such an answer crashes its
``sanitize``, while here the heaviest span that parses may be found without parsing that one.
A text that needs more than :data:`_PASSES` lexer passes (five stray triple quotes, each put
back in step by a comment) leaves the starts below the fourth without the lexer's rules:
correct, but slow (a reviewer's 419-line construction took 5 s).
Step 2 is linear; this module writes it anew on the same tree-sitter grammar.
"""

from __future__ import annotations

import ast
import keyword
import re
import sys
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
# Clauses a compound statement above takes in (if/for/while/try): a line beginning with one
# does not begin a statement of its own.
_CLAUSE = re.compile(r"(else|elif|except|finally)\b")


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
    return _lex(line, state)[0]


def _lex(line: str, state: str) -> tuple[str, int, str]:
    """:func:`_after`; the brackets ``([{`` opened less those ``)]}`` closed on the line
    outside strings and comments (a Python 3.11 f-string is one string token); and how the
    line ends when it ends outside strings: ``"\\"`` (a line continuation), ``":"`` (its
    last character outside a comment: a block header when no bracket is open) or ``""``."""
    if line.endswith("\r"):  # the CR of a CRLF line ending
        line = line[:-1]
    if "\r" in line:  # a lone CR ends a physical line for CPython's tokenizer
        depth, tail = 0, ""
        for part in line.split("\r"):
            state, opened, tail = _lex(part, state)
            depth += opened
        return state, depth, tail
    k, n, depth, last = 0, len(line), 0, ""
    while k < n:
        char = line[k]
        if state == CODE:
            if char == "#":
                return CODE, depth, ":" if last == ":" else ""
            if char in _QUOTES:
                state = char * 3 if line.startswith(char * 3, k) else char
                k += len(state)
                last = ""
                continue
            if char in "([{":
                depth += 1
            elif char in ")]}":
                depth -= 1
            if not char.isspace():
                last = char
            k += 1
        elif char == "\\":  # an escaped character (raw strings too) never closes a string
            k += 2
        elif line.startswith(state, k):
            k += len(state)
            state = CODE
        else:
            k += 1
    if state in _QUOTES and not line.endswith("\\"):
        return CODE, depth, ""  # an unterminated one-line string: an error that the line ends
    if state != CODE:
        return state, depth, ""
    if line.endswith("\\"):
        return CODE, depth, "\\"
    return CODE, depth, ":" if last == ":" else ""


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


class _Pass:
    """One pass of the line-start lexer from line ``start`` entered in ``CODE``: per line, the
    state it is entered in and left in, the net brackets opened before it, and the next line
    that begins a top-level statement (:meth:`_Strings.follows`)."""

    def __init__(self, lines: list[str], start: int) -> None:
        n = len(lines)
        self.enter: list[str | None] = [None] * n
        self.leave: list[str | None] = [None] * n
        self.depth = [0] * (n + 1)  # depth[k]: net brackets of lines[start:k]
        self.tail = [""] * n  # how each line ends (_lex)
        self.decorator = [False] * n  # a line entered outside strings that begins with @
        state = CODE
        for k in range(start, n):
            self.enter[k] = state
            self.decorator[k] = (state == CODE and "\r" not in lines[k].rstrip("\r")
                                 and lines[k].lstrip(" \t\f").startswith("@"))
            state, opened, self.tail[k] = _lex(lines[k], state)
            self.leave[k] = state
            self.depth[k + 1] = self.depth[k] + opened
        # last_end[v]: the last line a span entered at bracket depth v can end at: its
        # brackets paired, outside strings, not left open (:meth:`_Strings.left_open`)
        self.last_end: dict[int, int] = {}
        for k in range(start, n):
            if self.leave[k] == CODE and not self.tail[k] and not (
                    self.decorator[k] and self.depth[k] == self.depth[k + 1]
                    and (k == start or self.tail[k - 1] != "\\")):
                self.last_end[self.depth[k + 1]] = k
        # boundary[k]: the first line after k that begins a top-level statement no statement
        # above can take in (column 0, entered outside strings, not else/elif/except/finally)
        self.boundary = [n] * (n + 1)
        for k in range(n - 2, start - 1, -1):
            line = lines[k + 1]
            starts = (line[:1] and not line[0].isspace() and line[0] not in "#\\"
                      and self.enter[k + 1] == CODE and not _CLAUSE.match(line))
            self.boundary[k] = k + 1 if starts else self.boundary[k + 1]


_PASSES = 4  # lexer passes at most (a stray triple quote needs a second one)


class _Strings:
    """What the line-start lexer knows of a span from line i (entered in ``CODE``) to line j.

    One pass from line 0 covers every start it enters in ``CODE`` (from there on the span is
    lexed as the pass lexes it); a new pass starts at the first start no pass covers (after a
    stray triple quote, every start below), up to :data:`_PASSES`. A start no pass covers is
    walked on its own for :meth:`after` until it enters a line in the same state as the first
    pass, and gets no bracket or statement rules.
    """

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        n = len(lines)
        self.passes: list[_Pass] = []
        self.pass_of = [-1] * n  # the pass that covers each start
        start = 0
        while start < n and len(self.passes) < _PASSES:
            lexed = _Pass(lines, start)
            for k in range(start, n):
                if self.pass_of[k] < 0 and lexed.enter[k] == CODE:
                    self.pass_of[k] = len(self.passes)
            self.passes.append(lexed)
            while start < n and self.pass_of[start] >= 0:
                start += 1
        self.own: dict[int, tuple[list[str], list[int]]] = {}
        # continued[k]: lines among lines[:k] that end in a backslash (a line continuation)
        self.continued = [0]
        for line in lines:
            self.continued.append(self.continued[-1] + line.rstrip("\r").endswith("\\"))

    def _covering(self, i: int) -> _Pass | None:
        return self.passes[self.pass_of[i]] if self.pass_of[i] >= 0 else None

    def balanced(self, i: int, j: int) -> bool:
        """Whether lines i..j may close every bracket they open: False only when the span
        ends with brackets open or closes more than it opens, which no parsable span does (its
        tokens pair every bracket)."""
        lexed = self._covering(i)
        return lexed is None or lexed.depth[j + 1] == lexed.depth[i]

    def left_open(self, i: int, j: int) -> bool:
        """Whether span (i, j) (its brackets paired: :meth:`balanced`) ends in a way no module
        can end: a line continuation, a block header (``if x:``, ``def f():``) or a decorator
        line with nothing after it (tokens that must be followed by more)."""
        lexed = self._covering(i)
        if lexed is None:
            return False
        if lexed.tail[j]:
            return True
        return (lexed.decorator[j] and lexed.depth[j] == lexed.depth[i]
                and (j == i or lexed.tail[j - 1] != "\\"))

    def balanced_reach(self, i: int) -> int:
        """The last line a span from line i can end at with its brackets paired, outside
        strings and not left open (``i`` when none can; the last line when no pass covers
        i)."""
        lexed = self._covering(i)
        if lexed is None:
            return len(self.lines) - 1
        return max(i, lexed.last_end.get(lexed.depth[i], i))

    def follows(self, i: int) -> int:
        """The line where the statement that a span from line i begins with ends, when every
        span from i through a later line reads that statement first: the next top-level
        statement line (:attr:`_Pass.boundary`), with no line continuation on the way; else
        -1."""
        lexed = self._covering(i)
        if lexed is None:
            return -1
        k = lexed.boundary[i]
        if k >= len(self.lines) or self.continued[k] != self.continued[i]:
            return -1
        return k

    def after(self, i: int, j: int) -> str:
        """The lexer state after line j for a span from line i."""
        lexed = self._covering(i)
        if lexed is not None:
            return lexed.leave[j]  # type: ignore[return-value]
        first = self.passes[0]
        out, merged = self.own.setdefault(i, ([], []))
        while not merged and len(out) <= j - i:
            k = i + len(out)
            entering = out[-1] if out else CODE
            if out and entering == first.enter[k]:
                merged.append(k)
                break
            out.append(_after(self.lines[k], entering))
        if merged and j >= merged[0]:
            return first.leave[j]  # type: ignore[return-value]
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
    ``len(lines)``. A line that is only a backslash is not counted either: joined with blank
    lines below, it is no statement at all. A lone CR ends a physical line, as CPython's
    tokenizer reads it."""
    n = len(lines)
    found = [n] * n
    below = n  # the next statement line below, if indented
    for k in range(n - 1, -1, -1):
        line = lines[k][:-1] if lines[k].endswith("\r") else lines[k]
        for part in reversed(line.split("\r")):  # a lone CR ends a physical line
            stripped = part.strip()
            if stripped == "\\":  # a bare continuation: it may join blank lines into one
                below = n
            elif stripped and not stripped.startswith("#"):
                lead = part[:len(part) - len(part.lstrip(" \t\f"))]
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
    within lines first..last, if heavier than ``floor``.

    Weights go down from the heaviest; within a weight, starts in order, each start's spans in
    order. ``reach[i]`` is the last line a parsable span from line i can end at: the line
    above its first indented statement line or the last line that closes its brackets, then
    lowered by what failed parses teach (:class:`_Reach`). A start whose reach is too short
    for the weight at hand waits in ``waiting`` (by the heaviest weight it can still reach)
    and is not looked at again until the weights come down to it, so pruned spans cost
    nothing.
    """
    import bisect

    reach = _Reach(text, offsets, strings, last)
    waiting: dict[int, list[int]] = {}  # heaviest reachable weight -> starts
    for i in range(first, last):
        reach[i] = min(last, indented[i] - 1)
        if strings is not None:
            reach[i] = min(reach[i], strings.balanced_reach(i))
        if reach[i] > i:
            waiting.setdefault(nonblank[reach[i] + 1] - nonblank[i], []).append(i)
    active: list[int] = []  # starts that can still reach the weight at hand, in order
    for weight in range(nonblank[last + 1] - nonblank[first], floor, -1):
        for i in waiting.pop(weight, ()):
            bisect.insort(active, i)
        k = 0
        while k < len(active):
            i = active[k]
            reach.settle(i)
            target = nonblank[i] + weight  # a span (i, j) of this weight: nonblank[j + 1]
            end = bisect.bisect_left(nonblank, target, i + 2, reach[i] + 2)
            while end <= reach[i] + 1 and nonblank[end] == target:
                j, end = end - 1, end + 1
                if strings is not None and (strings.after(i, j) != CODE  # ends in a string
                                            or not strings.balanced(i, j)
                                            or strings.left_open(i, j)):
                    continue
                line = _failure(text[offsets[i]:offsets[j + 1] - 1])
                if line == _PARSES:
                    return weight, i, j
                reach.learn(i, j, line)
            can = nonblank[reach[i] + 1] - nonblank[i] if reach[i] > i else 0
            if can < weight:  # none of its spans this heavy can parse: wait for lighter ones
                del active[k]
                if can > floor:
                    waiting.setdefault(can, []).append(i)
            else:
                k += 1
    return None


class _Reach:
    """``reach[i]``: the last line a parsable span from line i can end at (every span from i
    through a later line is known not to parse).

    Learnt from a start's own failed parses (:meth:`learn`) and, for a start whose first
    statement parses on its own, from the start where the next statement begins
    (:meth:`settle`): CPython's parser reads a module as ``statements: statement+`` then
    ``ENDMARKER`` (Grammar/python.gram), each statement from its first token on alone, so
    when lines i..k-1 parse and line k begins a statement nothing above takes in
    (:meth:`_Strings.follows`), lines i..j parse only if lines k..j do. A long program is then
    settled from the bottom, one statement's parse per start, instead of each start being
    parsed down to the same error.
    """

    def __init__(self, text: str, offsets: list[int], strings: _Strings | None,
                 last: int) -> None:
        self.text, self.offsets, self.strings = text, offsets, strings
        self.reach = [0] * (last + 1)
        self.settled = bytearray(last + 1)

    def __getitem__(self, i: int) -> int:
        return self.reach[i]

    def __setitem__(self, i: int, value: int) -> None:
        self.reach[i] = value

    def _span(self, i: int, j: int) -> str:
        return self.text[self.offsets[i]:self.offsets[j + 1] - 1]

    def _continues(self, k: int) -> bool:
        """Whether line k ends in a backslash (it may continue into the next line)."""
        end = self.offsets[k + 1] - 1
        if end > self.offsets[k] and self.text[end - 1] == "\r":
            end -= 1
        return end > self.offsets[k] and self.text[end - 1] == "\\"

    def learn(self, i: int, j: int, line: int) -> None:
        """Lower ``reach[i]`` after span (i, j) failed with ``line`` (:func:`_failure`).

        A hard failure: ``j - 1``. Then the span cut at the error's line (its logical line:
        through the lines a backslash joins to it, and one more after a joined blank line) is
        tried, and a hard failure there too brings the reach above it (the same error, almost
        always), so one or two parses settle a start. An error on the last line of the span
        may be one the tokenizer found there after the parser had stopped higher up (CPython
        replaces a generic error with a tokenizer error found anywhere in the source,
        ``_PyPegen_tokenize_full_source_to_check_for_errors``): the span without that line is
        tried instead, twice at most."""
        if line < 0:
            return
        reach, above = min(self.reach[i], j - 1), 2
        while line >= 0 and reach >= i:
            cut = i + line
            while cut < reach and (self._continues(cut) or (
                    cut > i and self._continues(cut - 1)
                    and not self.text[self.offsets[cut]:self.offsets[cut + 1] - 1].strip())):
                cut += 1
            if cut > reach:  # the error is on the last line of the span just tried
                if not above:
                    break
                cut, above = reach, above - 1
            line = _failure(self._span(i, cut))
            if line < 0:  # parses (a lighter span, tried in its turn) or a soft failure
                break
            reach = cut - 1
        self.reach[i] = reach

    def settle(self, i: int) -> None:
        """Carry reach up from the following statements: walk i -> the next statement's
        line -> ... while each statement parses alone, learn the last one's reach from its
        heaviest span, then bring each start above no lower than the one below it."""
        if self.strings is None or self.settled[i]:
            return
        chain, k = [], i
        while not self.settled[k]:
            self.settled[k] = 1
            nxt = self.strings.follows(k)
            if 0 <= nxt <= self.reach[k]:
                first = _failure(self._span(k, nxt - 1))  # its first statement alone
                if first == _PARSES:
                    chain.append((k, nxt))
                    k = nxt
                    continue
                if first >= 0:  # a hard failure: so does every span through a later line
                    self.learn(k, nxt - 1, first)
                    break
                # cut short (a try: without its except): with the next line it may fail hard
                first = _failure(self._span(k, nxt))
                if first >= 0:
                    self.learn(k, nxt, first)
                    break
            if self.reach[k] > k:  # the last of the walk learns from its heaviest span
                self.learn(k, self.reach[k], _failure(self._span(k, self.reach[k])))
            break
        for start, nxt in reversed(chain):
            below = max(self.reach[nxt], nxt)  # spans from start through a later line fail
            if below < self.reach[start]:
                self.reach[start] = below
                if below == nxt:  # nothing from nxt on parses: try through nxt itself
                    self.learn(start, nxt, _failure(self._span(start, nxt)))


# compile() flag (codeop.PyCF_ALLOW_INCOMPLETE_INPUT, Python 3.11+): a failed parse whose
# tokenizer reached the end of the source reports "incomplete input" instead of its error.
_INCOMPLETE_FLAG = 0x4000 if sys.version_info >= (3, 11) else 0
_PARSES = -1  # _failure's answer for a source that parses
_SOFT = -2  # _failure's answer for a failure that says nothing about longer spans


def _failure(source: str) -> int:
    """Whether ``source`` parses (``_PARSES``, as ``ast.parse`` decides); else the 0-based line
    of the error when the parse failed before the tokenizer reached the end of the source (a
    hard failure), else ``_SOFT``.

    CPython's parser (``_PyPegen_run_parser``, Parser/pegen.c 3.11-3.13) consults
    ``PyCF_ALLOW_INCOMPLETE_INPUT`` only after its first pass has failed, and then reports
    "incomplete input" exactly when the tokenizer had reached the end of the source
    (``_is_end_of_source``); a source parses with the flag exactly when it parses without.
    After a hard failure every token the parser read lies before the end of the source, and
    the same tokens begin every longer span from the same start line: all of them fail too.
    Before 3.11 there is no flag and every failure is soft.
    """
    if not _INCOMPLETE_FLAG:
        return _PARSES if _parses(source) else _SOFT
    try:
        compile(source, "<unknown>", "exec", ast.PyCF_ONLY_AST | _INCOMPLETE_FLAG,
                dont_inherit=True)
    except SyntaxError as error:  # evalplus.syncheck.syntax_check: SyntaxError, MemoryError
        if error.msg == "incomplete input" or type(error).__name__ == "_IncompleteInputError":
            return _SOFT
        return max(0, (error.lineno or 1) - 1)
    except MemoryError:
        return _SOFT
    return _PARSES


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
