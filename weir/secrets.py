"""Secrets: where their values come from, and how they are kept out of everything stored or shown.

``SecretResolver`` reads ``WEIR_SECRET_<NAME>`` environment variables and the ``--secrets-file``
once, at start-up; templates see it as ``secrets`` through ``scope()``. ``Masker`` replaces every
secret value, and its common encodings, with ``***`` in step inputs, outputs, logs and errors.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
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


_PERCENT_SAFE = ("", "/", "!*'()", "!$&'()*+,;=:@~", "!$&'()*+,;=:@/?~", "#$&+,/:;=?@!*'()")
"""The characters left as they are by the percent-encoders secrets meet: ``quote(v, safe="")``, ``quote(v)``
and Jinja's ``urlencode``, JavaScript's ``encodeURIComponent``, a path segment (RFC 3986 pchar), a query
or fragment as httpx and browsers write it, and JavaScript's ``encodeURI``."""
_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")
_HTML = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
_SHORT_ESCAPES = {"\n": "n", "\r": "r", "\t": "t", "\b": "b", "\f": "f"}
ESCAPE_DEPTH = 4
"""Levels of string-in-string nesting whose escaping the masker sees through (JSON in JSON in JSON in JSON)."""


def _base64_forms(data: bytes) -> set[str]:
    """Standard base64 of ``data``, padded and not, also where ``data`` sits inside a longer base64 text.

    A secret inside a longer blob (``base64("user:" + secret)``) is encoded differently depending on
    its byte offset mod 3, so each alignment contributes the characters that depend only on the
    secret (after the bits of the bytes before it, before the bits of those after it), and the rest
    of the encoding up to the padding, for a secret at the end of the blob.
    """
    full = base64.b64encode(data).decode("ascii")
    forms = {full, full.rstrip("=")}
    for shift in range(3):
        aligned = base64.b64encode(bytes(shift) + data).decode("ascii")
        start = -(-8 * shift // 6)  # the first character with no bits of the bytes before the secret
        tail = aligned[start:]  # exact when the secret ends the blob, as in basic auth
        forms |= {tail, tail.rstrip("="), aligned[start : 8 * (shift + len(data)) // 6]}
    return forms


def _percent_forms(value: str) -> set[str]:
    """``value`` percent-encoded as common encoders write it, with upper- and lower-case hex digits."""
    forms = {quote(value, safe=safe) for safe in _PERCENT_SAFE}
    forms |= {quote_plus(value, safe=safe) for safe in _PERCENT_SAFE}
    forms |= {_PERCENT_HEX.sub(lambda m: m.group(0).lower(), form) for form in forms}
    return forms


def _html_forms(value: str) -> set[str]:
    """``value`` HTML-escaped, as ``html.escape`` and markupsafe (Jinja's autoescape) write it."""
    html = value
    for raw, entity in _HTML:
        html = html.replace(raw, entity)
    return {
        html,
        html.replace('"', "&quot;").replace("'", "&#x27;"),
        html.replace('"', "&#34;").replace("'", "&#39;"),
    }


def encoded_forms(value: str) -> set[str]:
    """The literal forms of ``value``: as is, HTML-escaped, percent-encoded and base64.

    Base64 comes in its standard and URL-safe alphabets, padded and not. Escaped forms (JSON, Python)
    are matched by ``escaped_forms`` instead. Forms shorter than ``MIN_MASKED_LENGTH`` are left out.
    """
    encoded = _base64_forms(value.encode("utf-8"))
    encoded |= {form.translate(_URLSAFE) for form in encoded}
    forms = encoded | _percent_forms(value) | _html_forms(value) | {value}
    return {form for form in forms if len(form) >= MIN_MASKED_LENGTH}


def _hex(number: int, digits: int) -> str:
    """``number`` in hex as a regex that takes either case of the letters."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{digits}x}")


def _char_options(char: str) -> list[str]:
    r"""The regexes of a character that is not a letter or digit inside a JSON or Python string literal.

    Each starts with a literal character, so that the regex engine can rule it out at once.
    """
    code = ord(char)
    quoted = rf"\\\\{{0,{2**ESCAPE_DEPTH - 2}}}"  # `"` is `\"` in JSON, `\\\"` in JSON in JSON, ...
    escape = rf"\\\\{{0,{2 ** (ESCAPE_DEPTH - 1) - 1}}}"  # `\u00fc` is `\\u00fc` in JSON in JSON, ...
    options = [re.escape(char), quoted + re.escape(char)]
    if char in _SHORT_ESCAPES:
        options.append(escape + _SHORT_ESCAPES[char])
    if code <= 0xFF and not 0x20 <= code < 0x7F:
        options.append(escape + "x" + _hex(code, 2))
    if code <= 0xFFFF:
        options.append(escape + "u" + _hex(code, 4))
    else:  # JSON's surrogate pair, Python's \U escape
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        options += [escape + "u" + _hex(high, 4) + escape + "u" + _hex(low, 4), escape + "U" + _hex(code, 8)]
    return options


def escaped_forms(value: str) -> tuple[list[list[str]], int]:
    r"""``value`` inside a JSON or Python string literal, nested up to ``ESCAPE_DEPTH`` deep, as regexes.

    Letters and digits stand as they are. Any other character may be backslash-escaped (``\"``,
    ``\\``, ``\/``, ``\n``) or written as ``\u00fc``, ``\xfc``, ``\U0001f600`` or a surrogate pair,
    with the backslashes doubled once per level of nesting (JSON kept in a JSON string, as an HTTP
    echo of a JSON body gives it). The raw value matches too.

    Returns forms of one regex per character (a form per way of writing the first character, so that
    every form starts with a literal) and the length of the longest text they match.
    """
    tokens, longest = [], 0
    for char in value:
        if char.isascii() and char.isalnum():
            tokens.append(char)
            longest += 1
        else:
            tokens.append("(?:" + "|".join(_char_options(char)) + ")")
            longest += 2 * 2 ** (ESCAPE_DEPTH - 1) + 12 if ord(char) > 0xFFFF else 2**ESCAPE_DEPTH + 5
    first = value[:1]
    if first.isascii() and first.isalnum():
        return [tokens], longest
    return [[option, *tokens[1:]] for option in _char_options(first)], longest


def _trie_pattern(forms: Iterable[Sequence[str]]) -> str:
    """One regex of ``forms`` (each a sequence of one regex per character) built as a trie.

    A flat ``a|b|c`` tries every alternative at every position of the text; the trie shares the common
    prefixes of the forms (and the forms of one secret share many), so the regex engine follows one
    branch per character, which keeps masking fast with many secrets. Longer matches are preferred: a
    form that is a prefix of another ends in a greedy optional group. Escaped characters (groups) are
    tried before plain ones, as they match more text.
    """
    trie: dict[str, Any] = {}
    for form in forms:
        node = trie
        for token in form:
            node = node.setdefault(token, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        chain = []
        while len(node) == 1 and "" not in node:  # a run of single tokens needs no group (nor recursion)
            token, node = next(iter(node.items()))
            chain.append(token)
        order = sorted((token for token in node if token), key=lambda token: (not token.startswith("(?:"), token))
        branches = [token + build(node[token]) for token in order]
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")" if branches else ""
        if body and "" in node:
            body = f"(?:{body})?"  # greedy: the longer form is tried first
        return "".join(chain) + body

    return build(trie)


_ACTIVE: ContextVar[Masker | None] = ContextVar("weir_active_masker", default=None)


class Masker:
    r"""Replaces secret values, and their common encodings, with ``***`` in strings and JSON-like data.

    Values shorter than ``MIN_MASKED_LENGTH`` (4) characters are left alone. Besides the value itself
    it masks:

    - base64, standard and URL-safe, padded and not, also inside a longer base64 text such as HTTP
      basic auth (``base64("user:" + secret)``) at any byte offset;
    - percent-encoding as ``quote`` (with and without ``/`` kept), ``quote_plus``, Jinja's ``urlencode``,
      JavaScript's ``encodeURIComponent``/``encodeURI`` and a URL's path and query write it, hex digits
      in either case;
    - the inside of a JSON string (``tojson``, with or without ``\u`` escapes and ``\/``) and of a
      Python ``repr``/``ascii``, also nested up to four deep (JSON kept in a JSON string);
    - HTML-escaped text (``html.escape``, Jinja's autoescape).

    Not covered: other transformations (hex, reversed, split, upper-cased, MIME base64 broken into
    lines, an encoding of an encoding such as base64 of the JSON form), and a secret that was cut in
    two before it reached the masker (weir's own excerpts mask before they cut, see ``active``).

    All forms of all secrets are one regex, compiled once, shaped as a trie so that masking stays
    fast with many secrets. At each position the longest form wins.
    """

    def __init__(self, values: Iterable[str]) -> None:
        forms: list[Sequence[str]] = []
        self.longest = 0
        """The length of the longest text masked: a text cut at least this far from a secret keeps it whole."""
        masked = {value for value in values if len(value) >= MIN_MASKED_LENGTH}
        for value in masked:
            escaped, longest = escaped_forms(value)
            literal = encoded_forms(value) - {value}  # the escaped forms match the raw value
            forms += [*escaped, *([re.escape(char) for char in form] for form in literal)]
            self.longest = max(self.longest, longest, *map(len, literal))
        self._pattern = re.compile(_trie_pattern(forms)) if forms else None
        self._joinable = not any("\0" in value for value in masked)

    @classmethod
    def empty(cls) -> Masker:
        """A masker with no secrets; it returns every value unchanged."""
        return cls(())

    def mask_text(self, text: str) -> str:
        """``text`` with every secret form replaced by ``***``."""
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def mask(self, value: Any) -> Any:
        """A copy of ``value`` (dicts, lists, tuples, strings, scalars) with secrets masked in strings and keys.

        The input is never changed. When no secret is in it (the usual case, e.g. every webhook's
        payload) ``value`` itself is returned, without copying.
        Two keys that mask to the same text collapse into one, the later value winning.
        """
        if self._pattern is None or not self._found_in(value):
            return value
        return self._copy(value)

    def _found_in(self, value: Any) -> bool:
        pattern = self._pattern
        assert pattern is not None  # noqa: S101 - mask() checked
        texts: list[str] = []
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list | tuple):
                stack.extend(item)
        if self._joinable:  # one search over all the strings: no form crosses the NUL between two of them
            return pattern.search("\0".join(texts)) is not None
        return any(pattern.search(text) for text in texts)

    def logging_filter(self) -> logging.Filter:
        """A filter for log handlers that masks every record, its traceback included.

        Libraries log what they were given (httpx logs each request's URL, query string and all);
        installed on the handlers of the root logger, the filter masks whatever reaches the output.
        The traceback is folded into the message, so that every formatter shows it masked.
        """
        return _MaskingFilter(self)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make this the masker ``mask_active`` uses in the current task (and threads it starts) for a block.

        The engine wraps each action in it, so a connector can mask a text before it cuts it short:
        masking after the cut would miss a secret the cut split.
        """
        token = _ACTIVE.set(self)
        try:
            yield
        finally:
            _ACTIVE.reset(token)

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


class _MaskingFilter(logging.Filter):
    """See ``Masker.logging_filter``."""

    def __init__(self, masker: Masker) -> None:
        super().__init__()
        self.masker = masker
        self.formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatter.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        record.msg, record.args = self.masker.mask_text(text), ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def active_masker() -> Masker | None:
    """The masker of the action being run (see ``Masker.active``); None outside an action."""
    return _ACTIVE.get()


def mask_active(text: str) -> str:
    """``text`` masked by the masker of the action being run; unchanged outside an action.

    For connectors and helpers that shorten texts (excerpts of response bodies, the tail of stderr):
    mask first, then cut.
    """
    masker = _ACTIVE.get()
    return text if masker is None else masker.mask_text(text)
