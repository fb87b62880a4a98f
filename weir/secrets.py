"""Secrets: where their values come from, and how they are kept out of everything stored or shown.

``SecretResolver`` reads ``WEIR_SECRET_<NAME>`` environment variables and the ``--secrets-file``
once, at start-up; templates see it as ``secrets`` through ``scope()``. ``Masker`` replaces every
secret value, and its common encodings, with ``***`` in step inputs, outputs, logs and errors.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from weir.errors import ConfigError, SecretMissing

ENV_PREFIX = "WEIR_SECRET_"
MASK = "***"
MIN_MASKED_LENGTH = 4
"""Values shorter than this are not masked: masking ``a`` or ``42`` would destroy every text."""

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOUBLE_RE = re.compile(r'"((?:[^"\\]|\\.)*)"\s*(?:#.*)?')
_SINGLE_RE = re.compile(r"'([^']*)'\s*(?:#.*)?")
_ESCAPE_RE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}
_URLSAFE = str.maketrans("+/", "-_")


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"the secrets file {file} does not exist; check --secrets-file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the secrets file {file} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the secrets file {file}: {exc.strerror or exc}") from None


def _parse_toml(text: str, file: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the secrets file {file} is not valid TOML: {exc}") from None
    for key, value in data.items():
        if not isinstance(value, str):
            raise ConfigError(
                f"secret '{key}' in {file} must be a string, not {type(value).__name__}: write {key} = \"...\""
            )
    return data


def _parse_dotenv(text: str, file: Path) -> dict[str, str]:
    """``NAME=value`` lines; values are never echoed in errors, since the line may be half a secret."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, equals, rest = line.partition("=")
        name, rest = name.strip(), rest.strip()
        where = f"{file}:{number}"
        if not equals:
            raise ConfigError(
                f"{where}: expected NAME=value but the line has no '='; fix it or comment it out with '#'"
            )
        if not _ENV_NAME_RE.fullmatch(name):
            raise ConfigError(f"{where}: '{name}' is not a secret name; use letters, digits and '_' before the '='")
        if rest[:1] in ("'", '"'):
            match = (_DOUBLE_RE if rest[0] == '"' else _SINGLE_RE).fullmatch(rest)
            if match is None:
                raise ConfigError(f"{where}: the quoted value of {name} is not closed, or has text after the quote")
            value = match.group(1)
            if rest[0] == '"':
                value = _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0]  # `a#b` is a value, `a #b` a comment
        found[name] = value
    return found


class SecretScope:
    """The ``secrets`` variable of templates: ``secrets.NAME`` and ``secrets['NAME']`` give a value.

    An unknown name raises ``SecretMissing`` instead of rendering as undefined. The scope cannot be
    listed: iterating it (``secrets|list``, ``for``) raises TypeError, ``str()`` is ``<secrets>``,
    and it has no ``keys``/``items`` (those are read as secret names). ``'NAME' in secrets`` tells
    whether a secret is set.
    """

    __slots__ = ("_values", "_where")

    def __init__(self, values: Mapping[str, str], where: str) -> None:
        self._values = values
        self._where = where

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):  # dunder probes (copy, pickle, Jinja) keep their usual meaning
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except (KeyError, TypeError):
            raise SecretMissing(str(name), self._where) from None

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        raise TypeError("the secrets cannot be listed; name the one you need, as secrets.NAME")

    def __repr__(self) -> str:
        return "<secrets>"


class SecretResolver:
    """The secrets of this process, from ``WEIR_SECRET_<NAME>`` variables and the secrets file.

    The file is TOML (``NAME = "value"``) when its name ends in ``.toml``, else a .env file
    (``NAME=value`` lines, an optional ``export``, ``#`` comments, values in single quotes taken
    as written or in double quotes with ``\\n \\t \\r \\" \\\\ \\$`` escapes; one value per line).
    When both set a name, the environment wins, so one secret can be overridden for one process.
    A missing or malformed file raises ``ConfigError`` naming the file (and line).
    """

    def __init__(self, environ: Mapping[str, str], file: Path | None = None) -> None:
        values: dict[str, str] = {}
        self._warnings: list[str] = []
        if file is not None:
            text = _read(file)
            values = _parse_toml(text, file) if file.name.lower().endswith(".toml") else _parse_dotenv(text, file)
            mode = file.stat().st_mode
            if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                self._warnings.append(
                    f"the secrets file {file} is open to group or others (mode {stat.S_IMODE(mode):04o}); "
                    f"run: chmod 600 {file}"
                )
        for key, value in environ.items():
            if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
                values[key[len(ENV_PREFIX) :]] = value
        self._values = values

    def get(self, name: str, where: str = "") -> str:
        """The value of secret ``name``; raises ``SecretMissing`` (naming ``where`` it was used) when unset."""
        try:
            return self._values[name]
        except KeyError:
            raise SecretMissing(name, where) from None

    def scope(self, where: str = "") -> SecretScope:
        """The ``secrets`` template variable; a missing secret's error says it was used by ``where``."""
        return SecretScope(self._values, where)

    def values(self) -> set[str]:
        """Every secret value, to build the ``Masker`` from."""
        return set(self._values.values())

    def file_warnings(self) -> list[str]:
        """Problems with the secrets file worth logging at start-up, such as loose permissions."""
        return list(self._warnings)

    def __contains__(self, name: object) -> bool:
        return name in self._values


def _encoded_forms(value: str) -> set[str]:
    """``value`` as it may appear in text: as is, JSON-escaped, percent-encoded and base64-encoded.

    A secret inside a longer base64 blob (``base64("user:" + secret)``) is encoded differently
    depending on its byte offset mod 3, so each alignment contributes the characters that depend
    only on the secret (after the bits of the bytes before it, before the bits of those after it),
    and the rest of the encoding up to the padding, for a secret at the end of the blob.
    """
    data = value.encode("utf-8")
    full = base64.b64encode(data).decode("ascii")
    encoded = {full, full.rstrip("=")}
    for shift in range(3):
        aligned = base64.b64encode(bytes(shift) + data).decode("ascii")
        start = -(-8 * shift // 6)  # the first character with no bits of the bytes before the secret
        tail = aligned[start:]  # exact when the secret ends the blob, as in basic auth
        encoded |= {tail, tail.rstrip("="), aligned[start : 8 * (shift + len(data)) // 6]}
    encoded |= {form.translate(_URLSAFE) for form in encoded}
    escaped = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}  # as `tojson` writes it
    return encoded | escaped | {value, quote(value, safe=""), quote_plus(value)}


class Masker:
    """Replaces secret values, and their common encodings, with ``***`` in strings and JSON-like data.

    Values shorter than ``MIN_MASKED_LENGTH`` (4) characters are ignored. Besides the value itself it
    masks its JSON-escaped, percent-encoded (``quote``/``quote_plus``) and standard and URL-safe
    base64 forms, also inside a longer base64 blob such as HTTP basic auth. The longest match wins;
    all forms share one compiled regex.
    """

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in values:
            if len(value) >= MIN_MASKED_LENGTH:
                forms |= _encoded_forms(value)
        ordered = sorted(forms, key=lambda form: (-len(form), form))  # alternation is leftmost-first
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def empty(cls) -> Masker:
        """A masker with no secrets; it returns every value unchanged."""
        return cls(())

    def mask_text(self, text: str) -> str:
        """``text`` with every secret form replaced by ``***``."""
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def mask(self, value: Any) -> Any:
        """A copy of ``value`` (dicts, lists, tuples, strings, scalars) with secrets masked in strings and keys.

        The input is never changed. A masker with no secrets returns ``value`` itself, without copying.
        Two keys that mask to the same text collapse into one, the later value winning.
        """
        if self._pattern is None:
            return value
        return self._copy(value)

    def _copy(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, dict):
            return {self._copy(key): self._copy(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._copy(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self._copy(item) for item in value)
        return value
