"""Source positions in TOML text, for error messages.

:mod:`tomllib` gives no positions, so :func:`key_line` scans the text itself to find the line
where the value at a key path is defined. The scanner knows enough TOML for that: table
headers ``[a.b]``, arrays of tables ``[[a]]``, bare, quoted and dotted keys, inline tables and
arrays (also across lines), the four kinds of strings (multi-line ones included) and
comments. It does not validate: on text it cannot follow it skips to the next line and goes on.
"""

from __future__ import annotations

import bisect
from typing import Sequence

__all__ = ["key_line"]

KeyPath = tuple  # tuple[str | int, ...]: table keys and array indices

_BARE_STOP = set(" \t\r\n=.[]{}\"',#")
_SCALAR_STOP = set(",]}#\n")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", "e": "\x1b", '"': '"', "\\": "\\"}


def key_line(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line where the value at ``path`` is defined in the TOML source ``text``.

    ``path`` holds keys (str) and array indices (int), as in a pydantic error location:
    ``["finetune", "template", "name"]``, or ``["compress", 1, "method"]`` for the second
    ``[[compress]]`` table (negative indices count from the end). A table is found at its
    header (``[a.b]``, or the ``[[a]]`` of each element), at the first dotted key that makes
    it (``a.b.c = 1``), or at the key of its inline table; a key at the line where the key
    is written; an element of an array at the line where it begins. A table only implied by a
    deeper header (``[a]`` from ``[a.b]``) is found at the first such header, unless it has a
    header of its own.

    Args:
        text: TOML source.
        path: the key path.

    Returns:
        The line of ``path``, else of its longest prefix that is defined (so a missing key
        points at its table), else ``None`` (nothing of ``path`` is in the text, or ``path``
        is empty).
    """
    scan = _Scanner(text)
    scan.run()
    wanted = scan.normalize(tuple(path))
    for end in range(len(wanted), 0, -1):
        found = scan.lines.get(wanted[:end])
        if found is not None:
            return found[0]
    return None


class _Syntax(Exception):
    """Text the scanner cannot follow."""


class _Scanner:
    """One pass over TOML text recording the line of every table, key and array element."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        #: path -> (line, explicit); an explicit definition replaces an implied one
        self.lines: dict[KeyPath, tuple[int, bool]] = {}
        #: resolved path of an array of tables -> number of [[...]] elements seen so far
        self.aot: dict[KeyPath, int] = {}
        #: array value path -> number of elements
        self.lengths: dict[KeyPath, int] = {}

    # -- bookkeeping ---------------------------------------------------------------------

    def line_at(self, pos: int) -> int:
        """The 1-based line holding offset ``pos``."""
        return bisect.bisect_right(self.starts, pos)

    def record(self, path: KeyPath, pos: int, explicit: bool = True) -> None:
        """Note that ``path`` is defined at ``pos`` (the first definition wins)."""
        old = self.lines.get(path)
        if old is None or (explicit and not old[1]):
            self.lines[path] = (self.line_at(pos), explicit)

    def resolve(self, keys: Sequence[str], pos: int) -> KeyPath:
        """Header keys as a path: each array of tables on the way stands for its last element;
        the tables on the way are recorded as implied."""
        path: KeyPath = ()
        for key in keys:
            path += (key,)
            if path in self.aot:
                path += (self.aot[path] - 1,)
            self.record(path, pos, explicit=False)
        return path

    def normalize(self, path: KeyPath) -> KeyPath:
        """``path`` with negative array indices counted from the end."""
        out: KeyPath = ()
        for part in path:
            if isinstance(part, int) and not isinstance(part, bool) and part < 0:
                size = self.aot.get(out, self.lengths.get(out))
                if size is not None:
                    part += size
            out += (part,)
        return out

    # -- characters ----------------------------------------------------------------------

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def skip_space(self) -> None:
        """Skip spaces and tabs (and stray carriage returns)."""
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r":
            self.pos += 1

    def skip_comment(self) -> None:
        if self.peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end

    def skip_blank(self) -> None:
        """Skip whitespace, newlines and comments (inside arrays and inline tables)."""
        while self.pos < len(self.text):
            self.skip_space()
            self.skip_comment()
            if self.peek() == "\n":
                self.pos += 1
            else:
                return

    def skip_line(self) -> None:
        """Move past the end of the current line."""
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end + 1

    def end_of_line(self) -> None:
        """Expect only a comment before the end of the line, and move past it."""
        self.skip_space()
        self.skip_comment()
        if self.pos < len(self.text) and self.peek() != "\n":
            raise _Syntax(f"unexpected {self.peek()!r}")
        self.pos += 1

    # -- grammar -------------------------------------------------------------------------

    def run(self) -> None:
        """Scan the whole text."""
        table: KeyPath = ()
        while self.pos < len(self.text):
            start = self.pos
            try:
                self.skip_space()
                ch = self.peek()
                if ch in ("\n", "#", ""):
                    self.skip_comment()
                    self.pos += 1
                elif ch == "[":
                    table = self.header()
                    self.end_of_line()
                else:
                    self.key_value(table)
                    self.end_of_line()
            except _Syntax:
                self.pos = max(self.pos, start)
                self.skip_line()

    def header(self) -> KeyPath:
        """``[a.b]`` or ``[[a.b]]`` (up to its closing brackets): record it and return the
        table it opens."""
        at = self.pos
        many = self.peek(2) == "[["
        self.pos += 2 if many else 1
        keys = self.keys()
        close = "]]" if many else "]"
        if self.peek(len(close)) != close:
            raise _Syntax("unclosed table header")
        self.pos += len(close)
        path = self.resolve(keys[:-1], at) + (keys[-1],)
        if many:
            count = self.aot.get(path, 0)
            self.aot[path] = count + 1
            self.record(path, at)
            path += (count,)
        self.record(path, at)
        return path

    def key_value(self, table: KeyPath) -> None:
        """``key = value`` inside ``table`` (also a member of an inline table)."""
        at = self.pos
        keys = self.keys()
        for i in range(1, len(keys)):
            self.record(table + tuple(keys[:i]), at)
        path = table + tuple(keys)
        self.record(path, at)
        self.skip_space()
        if self.peek() != "=":
            raise _Syntax("expected '='")
        self.pos += 1
        self.skip_space()
        self.value(path)

    def keys(self) -> list[str]:
        """A dotted key: bare or quoted parts joined by dots (with optional spaces)."""
        parts = []
        while True:
            self.skip_space()
            ch = self.peek()
            if ch == '"':
                parts.append(self.basic_string())
            elif ch == "'":
                parts.append(self.literal_string())
            else:
                start = self.pos
                while self.pos < len(self.text) and self.text[self.pos] not in _BARE_STOP:
                    self.pos += 1
                if self.pos == start:
                    raise _Syntax("expected a key")
                parts.append(self.text[start : self.pos])
            self.skip_space()
            if self.peek() != ".":
                return parts
            self.pos += 1

    def value(self, path: KeyPath) -> None:
        """Skip one value, recording the elements of arrays and the keys of inline tables."""
        ch = self.peek()
        if ch == '"':
            if self.peek(3) == '"""':
                self.multiline_string('"""')
            else:
                self.basic_string()
        elif ch == "'":
            if self.peek(3) == "'''":
                self.multiline_string("'''")
            else:
                self.literal_string()
        elif ch == "[":
            self.pos += 1
            index = 0
            while True:
                self.skip_blank()
                if self.peek() == "]":
                    self.pos += 1
                    break
                if not self.peek():
                    raise _Syntax("unclosed array")
                self.record(path + (index,), self.pos)
                self.value(path + (index,))
                index += 1
                self.skip_blank()
                if self.peek() == ",":
                    self.pos += 1
                elif self.peek() != "]":
                    raise _Syntax("expected ',' or ']'")
            self.lengths[path] = index
        elif ch == "{":
            self.pos += 1
            while True:
                self.skip_blank()
                if self.peek() == "}":
                    self.pos += 1
                    break
                if not self.peek():
                    raise _Syntax("unclosed inline table")
                self.key_value(path)
                self.skip_blank()
                if self.peek() == ",":
                    self.pos += 1
                elif self.peek() != "}":
                    raise _Syntax("expected ',' or '}'")
        else:
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_STOP:
                self.pos += 1
            if not self.text[start : self.pos].strip():
                raise _Syntax("expected a value")

    def basic_string(self) -> str:
        """A one-line ``"..."`` string; returns its value (escapes decoded)."""
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch in ("", "\n"):
                raise _Syntax("unterminated string")
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch != "\\":
                out.append(ch)
                continue
            esc = self.peek()
            self.pos += 1
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
            elif esc in ("u", "U"):
                width = 4 if esc == "u" else 8
                digits = self.text[self.pos : self.pos + width]
                try:
                    out.append(chr(int(digits, 16)))
                except ValueError:
                    raise _Syntax("bad unicode escape") from None
                self.pos += width
            else:
                raise _Syntax("bad escape")

    def literal_string(self) -> str:
        """A one-line ``'...'`` string; returns its value."""
        end = self.text.find("'", self.pos + 1)
        newline = self.text.find("\n", self.pos + 1)
        if end < 0 or 0 <= newline < end:
            raise _Syntax("unterminated string")
        value = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return value

    def multiline_string(self, quote: str) -> None:
        """Skip a ``\"\"\"...\"\"\"`` or ``'''...'''`` string (up to two quotes may end its text)."""
        self.pos += 3
        while True:
            end = self.text.find(quote, self.pos)
            if end < 0:
                raise _Syntax("unterminated multi-line string")
            if quote == '"""':
                slashes = 0
                while end - 1 - slashes >= self.pos and self.text[end - 1 - slashes] == "\\":
                    slashes += 1
                if slashes % 2:  # an escaped quote: the closing one comes later
                    self.pos = end + 1
                    continue
            self.pos = end + 3
            for _ in range(2):
                if self.peek() == quote[0]:
                    self.pos += 1
            return
