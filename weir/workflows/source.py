"""Read workflow files into documents, turning every malformed-file problem into a finding.

An automation directory is a ``SourceTree``: relative paths mapped to entries, read
from a directory on disk or from the objects of a Git commit. ``parse_document``
decodes and parses one file; broken syntax, bad encodings, duplicate keys, deep
nesting and oversized files become findings, never exceptions.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from weir.types import SourceLocation
from weir.workflows.findings import Finding, Severity
from weir.workflows.locator import Duplicate, duplicate_keys, key_positions, locate

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
TOO_DEEP = f"document is nested more than {MAX_DEPTH} levels deep; flatten the data or move it into a separate file"
CONFIG_FILE = "weir.toml"
SYMLINK = "is a symbolic link"

Format = Literal["toml", "json"]


@dataclass(frozen=True)
class Entry:
    """A path in the tree: a regular file whose bytes load on demand, or something that is not one."""

    size: int
    load: Callable[[], bytes]
    problem: str | None = None  # e.g. SYMLINK
    key: str | None = None
    """Names the bytes without reading them: equal keys mean equal bytes (a Git blob's sha). None when
    the source has no such name (files on disk); whoever needs one then hashes the bytes (``content_key``)."""

    @property
    def is_link(self) -> bool:
        return self.problem == SYMLINK


@dataclass(frozen=True)
class SourceTree:
    """The files of an automation directory, by path relative to it (POSIX separators).

    ``prefix`` is prepended to paths in findings, so they read as the user sees them
    (``workflows/alerts.toml`` when checking from the repository root).
    """

    entries: Mapping[str, Entry]
    prefix: str = ""

    def display(self, relpath: str) -> str:
        return f"{self.prefix}{relpath}" if self.prefix else relpath

    def documents(self) -> Iterator[str]:
        """Paths of workflow and config files: every ``*.toml`` and ``*.json``, sorted."""
        for path in sorted(self.entries):
            if path.endswith((".toml", ".json")):
                yield path

    def contains(self, relpath: str) -> bool:
        return relpath in self.entries and self.entries[relpath].problem is None

    def files(self) -> dict[str, bytes]:
        """The bytes of every regular file (what a stored revision keeps)."""
        return {path: entry.load() for path, entry in sorted(self.entries.items()) if entry.problem is None}


def content_key(data: bytes) -> str:
    """A name for ``data`` that changes whenever the bytes do (for files that have no Git blob sha)."""
    return "sha1:" + hashlib.sha1(data, usedforsecurity=False).hexdigest()


def files_digest(files: Mapping[str, bytes]) -> str:
    """A hash of every path and its bytes: equal sets of files have equal digests."""
    hasher = hashlib.sha1(usedforsecurity=False)
    for path, data in sorted(files.items()):
        hasher.update(f"{path}\0{len(data)}\0".encode())
        hasher.update(data)
    return hasher.hexdigest()


def tree_from_files(files: Mapping[str, bytes], prefix: str = "") -> SourceTree:
    """A SourceTree over files held in memory (a stored revision)."""
    return SourceTree({path: Entry(len(data), _constant(data)) for path, data in files.items()}, prefix)


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def display_prefix(path: str) -> str:
    """What findings put before paths inside the automation directory ``path`` of a repository."""
    directory = path.strip("/") or "."
    return "" if directory == "." else f"{directory}/"


def read_directory(root: Path, *, prefix: str = "") -> SourceTree:
    """A SourceTree of every file below ``root``, skipping hidden files and folders.

    Symbolic links are listed with a problem instead of being followed, so a link
    cannot pull files from outside the automation directory.
    """
    entries: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in list(dirnames):
            if name.startswith("."):
                dirnames.remove(name)
            elif (base / name).is_symlink():
                dirnames.remove(name)
                entries[(base / name).relative_to(root).as_posix()] = Entry(0, bytes, SYMLINK)
        for name in filenames:
            if name.startswith("."):
                continue
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[rel] = Entry(0, bytes, SYMLINK)
            elif not path.is_file():
                entries[rel] = Entry(0, bytes, "is not a regular file")
            else:
                entries[rel] = Entry(path.stat().st_size, _read_once(path))
    return SourceTree(entries, prefix)


def _read_once(path: Path) -> Callable[[], bytes]:
    """A loader that reads the file on its first call and returns those bytes from then on.

    Validation and storing a revision both load a file; reading it once makes the stored bytes
    the validated ones even when the file is saved again in between (``--dev`` watches files
    that an editor is writing).
    """
    read: list[bytes] = []

    def load() -> bytes:
        if not read:
            read.append(path.read_bytes())
        return read[0]

    return load


def is_inside(relpath: str) -> bool:
    """True when a relative path stays inside the directory it is relative to."""
    if relpath.startswith("/") or re.match(r"^[A-Za-z]:", relpath):
        return False
    depth = 0
    for part in PurePosixPath(relpath.replace("\\", "/")).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


@dataclass
class Document:
    """A parsed TOML or JSON file. Positions of keys are computed only when a finding needs one."""

    path: str  # as shown to the user
    fmt: Format
    text: str
    data: dict[str, Any]
    _positions: dict[tuple[str | int, ...], tuple[int, int]] | None = field(default=None, repr=False)

    def locate(self, keypath: tuple[str | int, ...] | list[str | int] = ()) -> SourceLocation:
        """Where ``keypath`` (or its nearest ancestor) is written in the file."""
        if self._positions is None:
            try:
                self._positions = key_positions(self.text, self.fmt)
            except (IndexError, RecursionError):  # a scanner bug must never break a check
                self._positions = {}
        line, column = locate(self._positions, keypath) if keypath else (1, 1)
        return SourceLocation(self.path, line, column)

    def finding(
        self,
        code: str,
        message: str,
        keypath: tuple[str | int, ...] | list[str | int] = (),
        severity: Severity = Severity.ERROR,
    ) -> Finding:
        return Finding(code, severity, self.locate(keypath), message)


def parse_document(display_path: str, raw: bytes) -> tuple[Document | None, list[Finding]]:
    """Decode and parse one file; on failure return findings that say what is wrong and where."""
    fmt: Format = "json" if display_path.endswith(".json") else "toml"

    def fail(code: str, message: str, line: int = 1, column: int = 1) -> tuple[None, list[Finding]]:
        return None, [Finding(code, Severity.ERROR, SourceLocation(display_path, line, column), message)]

    if len(raw) > MAX_FILE_BYTES:
        return fail(
            "W100",
            f"file is {len(raw) / 1024 / 1024:.1f} MiB ({len(raw)} bytes); workflow files may be at most "
            f"{MAX_FILE_BYTES // 1024 // 1024} MiB: "
            "split it into several workflows or move data out of it",
        )
    for bom, encoding in _UNICODE_BOMS:
        if raw.startswith(bom):
            return fail(
                "W103", f"file is {encoding} text (it starts with a {encoding} byte order mark): save it as UTF-8"
            )
    body = raw.removeprefix(codecs.BOM_UTF8)  # editors hide the BOM, so positions are counted after it
    if b"\x00" in body:
        return fail(
            "W103",
            "file contains NUL bytes, so it is binary, not TOML or JSON text (UTF-16 text must be saved as UTF-8)",
            *_byte_position(body, body.index(b"\x00")),
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return fail(
            "W103",
            f"file is not UTF-8 text (byte 0x{body[exc.start]:02x} at offset {exc.start}): save it as UTF-8",
            *_byte_position(body, exc.start),
        )
    try:
        data = _parse_toml(text) if fmt == "toml" else _parse_json(text)
    except _SyntaxProblem as exc:
        return fail(exc.code, exc.message, exc.line, exc.column)
    if not isinstance(data, dict):
        return fail("W102", f"a workflow file holds one JSON object ({{...}}), not a {_json_type(data)}")
    document = Document(display_path, fmt, text, data)
    deep = _too_deep(data)
    if deep is not None:
        location = _safe_locate(document, deep)
        return fail(
            "W105",
            TOO_DEEP,
            location.line,
            location.column,
        )
    if fmt == "json" and _SURROGATE_ESCAPE.search(text):
        bad = _lone_surrogate(data)
        if bad is not None:
            location = _safe_locate(document, bad)
            return fail(
                "W102",
                "a JSON string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not valid Unicode; "
                "write the character itself or a complete surrogate pair",
                location.line,
                location.column,
            )
    return document, []


_UNICODE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),  # before UTF-16: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _byte_position(raw: bytes, offset: int) -> tuple[int, int]:
    """Line and column (in characters, as editors count them) of a byte offset."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, len(raw[line_start:offset].decode("utf-8", "replace")) + 1


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _safe_locate(document: Document, keypath: tuple[str | int, ...]) -> SourceLocation:
    try:
        return document.locate(keypath)
    except RecursionError:  # pragma: no cover - locate guards itself; this is belt and braces
        return SourceLocation(document.path, 1, 1)


class _SyntaxProblem(Exception):
    def __init__(self, code: str, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.code, self.message, self.line, self.column = code, message, line, column


_TOML_POSITION = re.compile(r"^(.*?)\s*\(at line (\d+), column (\d+)\)$")
_TOML_DUPLICATES = (
    "Cannot overwrite a value",
    "Cannot declare",
    "Duplicate inline table key",
    "Cannot mutate immutable namespace",
    "Cannot redefine namespace",
)
_TOML_HINTS = {
    "Unclosed inline table": "an inline table is not closed: separate its pairs with ',' and end it with '}' "
    "on the same line",
    "Unclosed array": "an array is not closed: separate its items with ',' and end it with ']'",
    "Invalid value": 'invalid value: write text in quotes ("..."), numbers, true/false, [arrays] or {tables}',
    "Expected '=' after a key in a key/value pair": "expected '=' after the key: write key = value",
    "Invalid statement": "invalid statement: each line is key = value, a [table] or an [[array]] header",
    "Unterminated string": "a string is not closed: end it with the same quote on the same line "
    '(use """ for text over several lines)',
    "Illegal character '\\n'": "a string is not closed before the end of the line: end it with the same quote "
    '(use """ for text over several lines)',
}
_NUMBER_TOO_LONG = re.compile(r"\d{4300,}")


def _parse_toml(text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.match(message)
        line, column = (int(match.group(2)), int(match.group(3))) if match else (text.count("\n") + 1, 1)
        reason = match.group(1) if match else message.replace(" (at end of document)", " at the end of the file")
        if reason.startswith(_TOML_DUPLICATES):
            raise _duplicate_problem(text, "toml", line, column, reason) from exc
        reason = _TOML_HINTS.get(reason, f"{reason[0].lower()}{reason[1:]}")
        raise _SyntaxProblem("W101", f"TOML syntax error: {reason}", line, column) from exc
    except RecursionError as exc:
        raise _SyntaxProblem("W105", TOO_DEEP) from exc
    except ValueError as exc:  # Python refuses to convert integers of more than 4300 digits
        raise _number_too_long(text) from exc


def _duplicate_problem(text: str, fmt: Format, line: int, column: int, reason: str) -> _SyntaxProblem:
    """The first key or table defined twice, named and pointed at; the parser's position when it cannot be found."""
    try:
        found = [d for d in duplicate_keys(text, fmt) if fmt == "json" or d.position[0] <= line]
    except (IndexError, RecursionError):  # a scanner bug must never break a check
        found = []
    if not found:
        return _SyntaxProblem(
            "W104", f"a key or table is defined twice ({reason.lower()}); keep one definition", line, column
        )
    return _SyntaxProblem("W104", _describe_duplicate(found[0]), *found[0].position)


def _describe_duplicate(duplicate: Duplicate) -> str:
    names = [str(part) for part in duplicate.path if isinstance(part, str)]
    first = duplicate.first[0]
    if duplicate.table:
        return f"table [{'.'.join(names)}] is already defined on line {first}; merge the two into one table"
    return f"key '{names[-1]}' is already defined on line {first}; keep one of the two definitions"


def _number_too_long(text: str) -> _SyntaxProblem:
    match = _NUMBER_TOO_LONG.search(text)
    line, column = _byte_position(text.encode(), len(text[: match.start()].encode())) if match else (1, 1)
    return _SyntaxProblem(
        "W201", "a number has more than 4300 digits, more than weir reads; write it as a string", line, column
    )


_JSON_HINTS = {
    "Expecting property name enclosed in double quotes": 'expected a key in double quotes ("key")',
    "Expecting value": "expected a value: text in double quotes, a number, true, false, null, [ or {",
    "Extra data": "extra text after the end of the top-level object; a file holds one JSON object",
    "Expecting ',' delimiter": "expected ',' between two items, or the '}' or ']' that ends them",
    "Expecting ':' delimiter": "expected ':' after the key",
    "Invalid control character at": "a string holds a raw control character such as a line break; "
    "write it as an escape (\\n, \\t)",
}


def _parse_json(text: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise _DuplicateKey(key)
            result[key] = value
        return result

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        line, column = _second_occurrence(text, exc.key)
        raise _duplicate_problem(text, "json", line, column, f"key '{exc.key}'") from exc
    except json.JSONDecodeError as exc:
        if not text.strip():
            raise _SyntaxProblem(
                "W102", "JSON syntax error: the file is empty; a workflow file holds one JSON object"
            ) from exc
        comma = _trailing_comma(text, exc.pos)
        if comma is not None:
            line, column = _byte_position(text.encode(), len(text[:comma].encode()))
            raise _SyntaxProblem(
                "W102",
                "JSON syntax error: a comma after the last item; remove it (JSON allows no trailing comma)",
                line,
                column,
            ) from exc
        reason = _JSON_HINTS.get(exc.msg, f"{exc.msg[0].lower()}{exc.msg[1:]}")
        raise _SyntaxProblem("W102", f"JSON syntax error: {reason}", exc.lineno, exc.colno) from exc
    except RecursionError as exc:
        raise _SyntaxProblem("W105", TOO_DEEP) from exc
    except _JsonConstant as exc:
        found = next((m.start() for m in re.finditer(rf"(?<![\w\"]){exc.name}(?![\w\"])", text)), -1)
        line, column = _byte_position(text.encode(), len(text[:found].encode())) if found >= 0 else (1, 1)
        raise _SyntaxProblem(
            "W102", f"JSON syntax error: {exc.name} is not a JSON value; write null or a number", line, column
        ) from exc
    except ValueError as exc:  # Python refuses to convert integers of more than 4300 digits
        raise _number_too_long(text) from exc


class _JsonConstant(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _no_constant(name: str) -> Any:
    raise _JsonConstant(name)  # NaN, Infinity and -Infinity are Python's extension, not JSON


def _trailing_comma(text: str, pos: int) -> int | None:
    """The index of a ',' that is followed only by whitespace and then ``}`` or ``]`` at ``pos``."""
    if pos >= len(text) or text[pos] not in "}]":
        return None
    before = text[:pos].rstrip()
    return len(before) - 1 if before.endswith(",") else None


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _second_occurrence(text: str, key: str) -> tuple[int, int]:
    matches = list(re.finditer(re.escape(json.dumps(key)) + r"\s*:", text))
    if len(matches) < 2:
        return 1, 1
    index = matches[1].start()
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def _too_deep(value: Any) -> tuple[str | int, ...] | None:
    """The key path of the first value nested more than MAX_DEPTH levels deep, or None."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) >= MAX_DEPTH:  # the top-level table is level 1
            return path
        children = item.items() if isinstance(item, dict) else enumerate(item)
        stack.extend((v, (*path, k)) for k, v in children if isinstance(v, dict | list))
    return None


def _lone_surrogate(value: Any) -> tuple[str | int, ...] | None:
    """The key path of the first string (key or value) holding an unpaired UTF-16 surrogate, or None."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                return path
            continue
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in children:
            if isinstance(key, str) and not key.isascii() and _has_surrogate(key):
                return (*path, key)
            stack.append((child, (*path, key)))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
