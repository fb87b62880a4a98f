"""Read workflow files into documents, turning every malformed-file problem into a finding.

An automation directory is a ``SourceTree``: relative paths mapped to entries, read
from a directory on disk or from the objects of a Git commit. ``parse_document``
decodes and parses one file; broken syntax, bad encodings, duplicate keys, deep
nesting and oversized files become findings, never exceptions.
"""

from __future__ import annotations

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
from weir.workflows.locator import key_positions, locate

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
CONFIG_FILE = "weir.toml"

Format = Literal["toml", "json"]


@dataclass(frozen=True)
class Entry:
    """A path in the tree: a regular file whose bytes load on demand, or something that is not one."""

    size: int
    load: Callable[[], bytes]
    problem: str | None = None  # e.g. "is a symbolic link"


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
                entries[(base / name).relative_to(root).as_posix()] = Entry(0, bytes, "is a symbolic link")
        for name in filenames:
            if name.startswith("."):
                continue
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[rel] = Entry(0, bytes, "is a symbolic link")
            elif not path.is_file():
                entries[rel] = Entry(0, bytes, "is not a regular file")
            else:
                entries[rel] = Entry(path.stat().st_size, path.read_bytes)
    return SourceTree(entries, prefix)


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
            f"file is {len(raw)} bytes; workflow files may be at most {MAX_FILE_BYTES} bytes: "
            "split it into several workflows or move data out of it",
        )
    if b"\x00" in raw:
        return fail("W103", "file contains NUL bytes, so it is binary, not TOML or JSON text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return fail(
            "W103",
            f"file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): save it as UTF-8",
            line,
            column,
        )
    try:
        data = _parse_toml(text) if fmt == "toml" else _parse_json(text)
    except _SyntaxProblem as exc:
        return fail(exc.code, exc.message, exc.line, exc.column)
    if not isinstance(data, dict):
        return fail("W102", f"a workflow file holds one JSON object, not a {type(data).__name__}")
    depth = _depth(data)
    if depth > MAX_DEPTH:
        return fail("W105", f"document is nested {depth} levels deep; at most {MAX_DEPTH} levels are accepted")
    return Document(display_path, fmt, text, data), []


class _SyntaxProblem(Exception):
    def __init__(self, code: str, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.code, self.message, self.line, self.column = code, message, line, column


_TOML_POSITION = re.compile(r"^(.*?)\s*\(at line (\d+), column (\d+)\)$")


def _parse_toml(text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.match(message)
        line, column = (int(match.group(2)), int(match.group(3))) if match else (text.count("\n") + 1, 1)
        reason = match.group(1) if match else message.replace(" (at end of document)", " at the end of the file")
        if reason.startswith("Cannot overwrite a value") or "already" in reason.lower():
            raise _SyntaxProblem(
                "W104", f"a key is defined twice ({reason[0].lower()}{reason[1:]}); keep one definition", line, column
            ) from exc
        raise _SyntaxProblem("W101", f"TOML syntax error: {reason[0].lower()}{reason[1:]}", line, column) from exc
    except RecursionError as exc:
        raise _SyntaxProblem("W105", f"document is nested too deeply; at most {MAX_DEPTH} levels are accepted") from exc


def _parse_json(text: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise _DuplicateKey(key)
            result[key] = value
        return result

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except _DuplicateKey as exc:
        line, column = _second_occurrence(text, exc.key)
        raise _SyntaxProblem(
            "W104", f"key '{exc.key}' is defined twice in the same object; keep one", line, column
        ) from exc
    except json.JSONDecodeError as exc:
        raise _SyntaxProblem(
            "W102", f"JSON syntax error: {exc.msg[0].lower()}{exc.msg[1:]}", exc.lineno, exc.colno
        ) from exc
    except RecursionError as exc:
        raise _SyntaxProblem("W105", f"document is nested too deeply; at most {MAX_DEPTH} levels are accepted") from exc


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


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item if isinstance(v, dict | list))
    return deepest
