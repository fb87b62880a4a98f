"""Find where a key path sits in TOML or JSON text.

``tomllib`` and ``json`` give values but no positions. These scanners walk the
text once, after it parsed, and record the line and column of every key and array
element as a path such as ``("steps", 2, "with", "channel")``. Findings use it to
point at the offending key. They are only run for files that have findings, so a
clean repository never pays for them.

The scanners also notice keys and tables defined twice, so a duplicate-key error
can point at the second definition and name the first (``duplicate_keys``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Path = tuple[str | int, ...]
Position = tuple[int, int]


@dataclass(frozen=True)
class Duplicate:
    """A key (or TOML table) defined a second time in the same table or object."""

    path: Path
    position: Position  # of the second definition
    first: Position  # of the first definition
    table: bool = False  # a TOML [table] or [[array]] header rather than a key


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.positions: dict[Path, Position] = {}
        self.duplicates: list[Duplicate] = []
        self.line_starts = [0]
        for n, ch in enumerate(text):
            if ch == "\n":
                self.line_starts.append(n + 1)

    def pos(self, index: int) -> Position:
        lo, hi = 0, len(self.line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.line_starts[mid] <= index:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, index - self.line_starts[lo] + 1

    def peek(self, n: int = 0) -> str:
        j = self.i + n
        return self.text[j] if j < len(self.text) else ""

    def record(self, path: Path, index: int) -> None:
        self.positions.setdefault(path, self.pos(index))


class _TomlScanner(_Scanner):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.defined: dict[Path, Position] = {}  # keys with a value, and [table] headers
        self.dotted: dict[Path, Position] = {}  # tables made by dotted keys (a.b = 1 makes a)

    def define(self, path: Path, index: int, *, table: bool) -> None:
        first = self.defined.get(path) or self.dotted.get(path)
        if first is not None:
            self.duplicates.append(Duplicate(path, self.pos(index), first, table))
        else:
            self.defined[path] = self.pos(index)

    def skip_ws(self, newlines: bool) -> None:
        while self.i < len(self.text):
            ch = self.text[self.i]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.i += 1
            elif ch == "#":
                while self.i < len(self.text) and self.text[self.i] != "\n":
                    self.i += 1
            else:
                return

    def string(self) -> str:
        text, i = self.text, self.i
        if i >= len(text):  # peek() gives "" at the end, and "" is in every string of characters
            self.i = len(text)
            return ""
        for quote in ('"""', "'''"):
            if text.startswith(quote, i):
                end = i + 3
                while True:
                    end = text.find(quote, end)
                    if end < 0:
                        self.i = len(text)
                        return ""
                    if quote == '"""' and _escaped(text, end):
                        end += 1
                        continue
                    while text.startswith(quote[0], end + 3):  # up to two quotes may close the content
                        end += 1
                    self.i = end + 3
                    return text[i + 3 : end]
        quote = text[i]
        j = i + 1
        while j < len(text) and text[j] != quote and text[j] != "\n":
            j += 2 if quote == '"' and text[j] == "\\" else 1
        self.i = j + 1
        raw = text[i + 1 : j]
        if quote == '"' and "\\" in raw:
            try:
                import json

                return str(json.loads('"' + raw + '"'))
            except ValueError:
                return raw
        return raw

    def key(self) -> list[tuple[str, int]]:
        parts: list[tuple[str, int]] = []
        while True:
            self.skip_ws(False)
            start = self.i
            if self.peek() in "\"'":
                parts.append((self.string(), start))
            else:
                j = self.i
                while j < len(self.text) and (self.text[j].isalnum() or self.text[j] in "_-"):
                    j += 1
                parts.append((self.text[self.i : j], start))
                self.i = j
            self.skip_ws(False)
            if self.peek() != ".":
                return parts
            self.i += 1

    def value(self, path: Path) -> None:
        self.skip_ws(False)
        ch = self.peek()
        if ch in "\"'":
            self.string()
        elif ch == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws(True)
                if self.peek() in ("]", ""):
                    self.i += 1
                    return
                start = self.i
                self.record((*path, index), start)
                self.value((*path, index))
                index += 1
                self.skip_ws(True)
                # Past the comma, or past a character no rule here reads: the scan always moves on.
                if self.peek() == "," or self.i == start:
                    self.i += 1
        elif ch == "{":
            self.i += 1
            while True:
                self.skip_ws(True)
                if self.peek() in ("}", ""):
                    self.i += 1
                    return
                start = self.i
                self.keyval(path)
                self.skip_ws(True)
                # Past the comma, or past a character no rule here reads: the scan always moves on.
                if self.peek() == "," or self.i == start:
                    self.i += 1
        else:
            while self.i < len(self.text) and self.text[self.i] not in ",]}\n#":
                self.i += 1

    def keyval(self, table: Path) -> None:
        parts = self.key()
        path = table
        for n, (name, start) in enumerate(parts):
            path = (*path, name)
            self.record(path, start)
            if n == len(parts) - 1:
                self.define(path, start, table=False)
            elif path in self.defined:  # a dotted key reaching into a value or a [table]
                self.duplicates.append(Duplicate(path, self.pos(start), self.defined[path]))
            else:
                self.dotted.setdefault(path, self.pos(start))
        self.skip_ws(False)
        if self.peek() == "=":
            self.i += 1
        self.value(path)

    def scan(self) -> dict[Path, Position]:
        table: Path = ()
        arrays: dict[tuple[str, ...], int] = {}
        while True:
            self.skip_ws(True)
            if self.i >= len(self.text):
                return self.positions
            if self.peek() == "[":
                is_array = self.peek(1) == "["
                start = self.i
                self.i += 2 if is_array else 1
                names = tuple(name for name, _ in self.key())
                self.i += 2 if is_array else 1
                if is_array:
                    arrays[names] = arrays.get(names, -1) + 1
                    for nested in [a for a in arrays if len(a) > len(names) and a[: len(names)] == names]:
                        del arrays[nested]  # a new element starts its own nested arrays from 0
                table = ()
                for n in range(1, len(names) + 1):
                    table = (*table, names[n - 1])
                    self.record(table, start)
                    if n == len(names) and (not is_array or table in self.defined or table in self.dotted):
                        self.define(table, start, table=True)
                    index = arrays.get(names[:n])
                    if index is not None:
                        if n == len(names) and not is_array:  # [steps] after [[steps]]
                            self.duplicates.append(Duplicate(table, self.pos(start), self.positions[table], True))
                        table = (*table, index)
                        self.record(table, start)
            else:
                before = self.i
                self.keyval(table)
                if self.i == before:  # nothing this scanner reads as a key (tomllib decides what the error is)
                    self.i += 1


def _escaped(text: str, index: int) -> bool:
    backslashes = 0
    while index - 1 - backslashes >= 0 and text[index - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


class _JsonScanner(_Scanner):
    def skip_ws(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in " \t\r\n":
            self.i += 1

    def string(self) -> str:
        j = self.i + 1
        while j < len(self.text) and self.text[j] != '"':
            j += 2 if self.text[j] == "\\" else 1
        raw = self.text[self.i + 1 : j]
        self.i = j + 1
        if "\\" in raw:
            import json

            try:
                return str(json.loads('"' + raw + '"'))
            except ValueError:
                return raw
        return raw

    def value(self, path: Path) -> None:
        self.skip_ws()
        ch = self.peek()
        if ch == "{":
            self.i += 1
            while True:
                self.skip_ws()
                if self.peek() in ("}", ""):
                    self.i += 1
                    return
                start = self.i
                key = self.string()
                if (*path, key) in self.positions:
                    self.duplicates.append(Duplicate((*path, key), self.pos(start), self.positions[(*path, key)]))
                self.record((*path, key), start)
                self.skip_ws()
                self.i += 1  # the colon
                self.value((*path, key))
                self.skip_ws()
                # Past the comma, or past a character no rule here reads: the scan always moves on.
                if self.peek() == "," or self.i == start:
                    self.i += 1
        elif ch == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws()
                if self.peek() in ("]", ""):
                    self.i += 1
                    return
                start = self.i
                self.record((*path, index), start)
                self.value((*path, index))
                index += 1
                self.skip_ws()
                # Past the comma, or past a character no rule here reads: the scan always moves on.
                if self.peek() == "," or self.i == start:
                    self.i += 1
        elif ch == '"':
            self.string()
        else:
            while self.i < len(self.text) and self.text[self.i] not in ",]}":
                self.i += 1

    def scan(self) -> dict[Path, Position]:
        self.value(())
        return self.positions


def key_positions(text: str, fmt: str) -> dict[Path, Position]:
    """Map every key path and array element of a parsed TOML or JSON document to (line, column)."""
    scanner: _TomlScanner | _JsonScanner = _TomlScanner(text) if fmt == "toml" else _JsonScanner(text)
    return scanner.scan()


def duplicate_keys(text: str, fmt: str) -> list[Duplicate]:
    """Keys and TOML tables defined twice, in the order of their second definition."""
    scanner: _TomlScanner | _JsonScanner = _TomlScanner(text) if fmt == "toml" else _JsonScanner(text)
    scanner.scan()
    return scanner.duplicates


def locate(positions: dict[Path, Position], path: Sequence[str | int]) -> Position:
    """The position of ``path``, or of its nearest ancestor that has one; (1, 1) for the file itself."""
    path = tuple(path)
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return (1, 1)
