"""Check a webhook request's credentials and turn its body into the run's ``payload``.

Both are pure functions of what arrived (the header pairs as received, the raw body, the time),
so they behave the same under Starlette, in a benchmark or in a test. A request that cannot be
accepted raises :class:`HookRejected`; its ``status``, ``code`` and ``message`` become the
``{"error": {"code", "message"}}`` answer. Messages say what was wrong and in what form it is
expected; they never contain the secret, the expected token or the expected signature, nor echo
the credentials that were sent.

Decisions:

- Every comparison is constant time (``hmac.compare_digest`` over bytes). Tokens are compared
  through their SHA-256 digests, so not even their length leaks.
- Signatures are compared as decoded bytes, so upper- and lower-case hex are both accepted
  (GitHub and Slack send lower case). Base64 is the standard alphabet (RFC 4648 §4) with its
  padding: 44 characters for the 32 bytes of HMAC-SHA256, in canonical form (the unused low bits
  of the last character are zero, RFC 4648 §3.5), so exactly one header value passes. ``prefix``
  is matched exactly (case-sensitive); the ``Bearer`` scheme case-insensitively, as HTTP defines
  auth schemes.
- A credential header sent more than once is rejected (401), instead of picking one: a proxy and
  weir could otherwise disagree about which one counts.
- A secret or token that rendered empty is the server's fault, not the caller's, and an empty
  HMAC key would let anyone sign: such a request is answered 503 ``unavailable`` before the
  request is even looked at, and the message tells the operator what to set.
- Slack timestamps more than 300 s before or after ``now`` are rejected; exactly 300 s is
  accepted, as in Slack's own sample code.
- JSON bodies are strict: invalid UTF-8 or JSON (with line and column), a key repeated in one
  object, ``NaN``/``Infinity``, numbers beyond a float's range, integers over 4300 digits,
  nesting deeper than 64 levels and unpaired surrogate escapes (``"\\ud800"``: not Unicode, so the
  run could be stored but never shown) are all 400. A ``charset`` parameter is ignored: JSON is UTF-8.
- Form bodies become a dict; a repeated key becomes a list, blank values are kept. Slack's
  interactive requests send ``payload=<json>``; it stays a string (decode it in the workflow with
  ``{{ payload.payload | fromjson }}``).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import hmac
import json
import math
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import parse_qs

from weir.errors import WeirError
from weir.schemas.workflow import GithubAuth, HmacAuth, NoAuth, SlackAuth, TokenAuth, WebhookAuth

MAX_JSON_DEPTH = 64
"""Arrays and objects nested deeper than this are rejected (Python's parser would recurse)."""
SLACK_WINDOW = 300
"""Seconds a Slack request timestamp may be away from the server's clock, either way."""

_SHA256_HEX = re.compile(r"[0-9A-Fa-f]{64}")
_SHA256_B64 = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
"""32 bytes in canonical base64: the last character before '=' carries 4 bits, its 2 unused bits are zero."""
_DIGITS = re.compile(r"[0-9]{1,15}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_TO_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')


class HookRejected(WeirError):
    """Raised when a webhook request is not accepted; ``status`` and ``code`` are the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _unauthorized(message: str) -> NoReturn:
    raise HookRejected(401, "unauthorized", message)


def _bad_request(message: str) -> NoReturn:
    raise HookRejected(400, "bad_request", message)


def header_value(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    """The value of header ``name`` (any case) without surrounding blanks, or None when absent.

    Raises HookRejected (401) when the header was sent more than once.
    """
    wanted = name.lower()
    found = [value for key, value in headers if key.lower() == wanted]
    if len(found) > 1:
        _unauthorized(f"header {name} was sent {len(found)} times; send it exactly once")
    return found[0].strip(" \t") if found else None


def _required(headers: Sequence[tuple[str, str]], name: str, form: str) -> str:
    value = header_value(headers, name)
    if value is None:
        _unauthorized(f"header {name} is missing; it must be {form}")
    if not value:
        _unauthorized(f"header {name} is empty; it must be {form}")
    return value


def _configured(value: str | None, field: str) -> bytes:
    if not value:
        raise HookRejected(
            503,
            "unavailable",
            f"this webhook's auth.{field} is empty on the server; set the secret it refers to "
            "(WEIR_SECRET_<NAME> or the --secrets-file) and retry",
        )
    return value.encode("utf-8", "surrogatepass")


def _signature(headers: Sequence[tuple[str, str]], name: str, prefix: str, encoding: str) -> bytes:
    if encoding == "hex":
        digits, pattern = "64 hex digits", _SHA256_HEX
    else:
        digits, pattern = "44 base64 characters (32 bytes, padded with '=')", _SHA256_B64
    form = f"'{prefix}' followed by {digits}" if prefix else digits
    value = _required(headers, name, form)
    if not value.startswith(prefix) or not pattern.fullmatch(value, len(prefix)):
        _unauthorized(f"header {name} must be {form}")
    encoded = value[len(prefix) :]
    return bytes.fromhex(encoded) if encoding == "hex" else base64.b64decode(encoded, validate=True)


def _check_mac(key: bytes, message: bytes, sent: bytes) -> None:
    expected = hmac.digest(key, message, "sha256")
    if not hmac.compare_digest(expected, sent):
        _unauthorized("signature does not match the body; check the secret configured for this webhook and its sender")


def _check_token(auth: TokenAuth, token: str | None, headers: Sequence[tuple[str, str]]) -> None:
    expected = _configured(token, "token")
    if auth.header.lower() == "authorization":
        form = "'Bearer ' followed by the webhook token"
        value = _required(headers, auth.header, form)
        scheme, _, credentials = value.partition(" ")
        credentials = credentials.lstrip(" ")
        if scheme.lower() != "bearer" or not credentials:
            _unauthorized(f"header {auth.header} must be {form}")
    else:
        credentials = _required(headers, auth.header, "the webhook token")
    sent = hashlib.sha256(credentials.encode("utf-8", "surrogatepass")).digest()
    if not hmac.compare_digest(hashlib.sha256(expected).digest(), sent):
        _unauthorized(f"the token in header {auth.header} is wrong; check the token configured for this webhook")


def _check_slack(key: bytes, headers: Sequence[tuple[str, str]], body: bytes, now: float) -> None:
    stamp_header = "X-Slack-Request-Timestamp"
    form = "the request time in whole Unix seconds"
    stamp = _required(headers, stamp_header, form)
    if not _DIGITS.fullmatch(stamp):
        _unauthorized(f"header {stamp_header} must be {form}")
    sent = _signature(headers, "X-Slack-Signature", "v0=", "hex")
    skew = int(stamp) - now
    if abs(skew) > SLACK_WINDOW:
        when = "behind" if skew < 0 else "ahead of"
        _unauthorized(
            f"header {stamp_header} is {math.ceil(abs(skew))} s {when} the server's clock; Slack requests are accepted "
            f"within {SLACK_WINDOW} s (replay protection), so check the clocks or resend"
        )
    _check_mac(key, b"v0:" + stamp.encode("ascii") + b":" + body, sent)


def verify(auth: WebhookAuth, secret: str | None, headers: Sequence[tuple[str, str]], body: bytes, now: float) -> None:
    """Return when the request proves what ``auth`` asks for; raise HookRejected otherwise.

    ``secret`` is the rendered ``auth.secret`` (``auth.token`` for token auth), ``headers`` the
    pairs as received (names in any case, duplicates kept), ``body`` the raw bytes and ``now``
    Unix time. Failures are 401 ``unauthorized``; an empty secret is 503 ``unavailable``.
    """
    if isinstance(auth, NoAuth):
        return
    if isinstance(auth, TokenAuth):
        _check_token(auth, secret, headers)
    elif isinstance(auth, HmacAuth):
        key = _configured(secret, "secret")
        _check_mac(key, body, _signature(headers, auth.header, auth.prefix, auth.encoding))
    elif isinstance(auth, GithubAuth):
        key = _configured(secret, "secret")
        _check_mac(key, body, _signature(headers, "X-Hub-Signature-256", "sha256=", "hex"))
    elif isinstance(auth, SlackAuth):
        _check_slack(_configured(secret, "secret"), headers, body, now)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def _text(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        _bad_request(f"the body is not valid UTF-8 (bad byte at offset {exc.start}); {what}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:  # pragma: no branch - a duplicate is always found
            if key in seen:
                shown = key if len(key) <= 60 else key[:60] + "..."
                _bad_request(f"the JSON body has the key '{shown}' more than once in one object; send each key once")
            seen.add(key)
    return obj


def _no_constant(name: str) -> NoReturn:
    _bad_request(f"the JSON body contains {name}, which is not JSON; send null or a string instead")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _bad_request(f"the JSON body has the number {text[:20]}, too large for a float; send it as a string")
    return value


def _check_depth(body: bytes) -> None:
    # Python's parser recurses per level, so the depth is measured on the raw bytes, with C-speed
    # bytes operations only. A body with fewer opening brackets than the limit is shallow enough.
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return
    # Drop escaped backslashes and quotes, keep only brackets and quotes, then drop what lies inside
    # strings: what is left is the bracket shape, e.g. b"((()()))". UTF-8 never hides ASCII bytes.
    shape = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_TO_PARENS, _NOT_STRUCTURE)
    shape = b"".join(shape.split(b'"')[::2])
    depth = 0
    while b"()" in shape and depth <= MAX_JSON_DEPTH:  # each pass peels the innermost level
        shape = shape.replace(b"()", b"")
        depth += 1
    # In a broken body, unclosed brackets may nest too (the parser would recurse into them).
    if depth + shape.count(b"(") > MAX_JSON_DEPTH:
        _bad_request(f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; flatten it")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string (key or value) in ``value`` holds an unpaired UTF-16 surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and any("\ud800" <= char <= "\udfff" for char in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite)
"""Built once: ``json.loads`` with hooks builds a new decoder for every body."""


def _parse_json(body: bytes) -> Any:
    # A UTF-8 byte order mark is allowed, as json.loads allows it in bytes; "utf-8-sig" is a codec written
    # in Python, so the mark is cut here and the rest decoded by the C one.
    text = _text(body[3:] if body.startswith(codecs.BOM_UTF8) else body, "JSON bodies must be UTF-8")
    _check_depth(body)
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        _bad_request(f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    except ValueError:  # only int() raises it: more digits than sys.get_int_max_str_digits()
        _bad_request(
            f"the JSON body has an integer of more than {sys.get_int_max_str_digits()} digits; send it as a string"
        )
    # A paired escape ("\ud83d\ude00") decodes to one character; only an unpaired one stays a surrogate.
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(value):
        _bad_request(
            "the JSON body has a string with an unpaired surrogate escape (\\ud800-\\udfff), which is not "
            "Unicode; send the character itself or a complete surrogate pair"
        )
    return value


def _parse_form(body: bytes) -> dict[str, str | list[str]]:
    text = _text(body, "form bodies must be UTF-8")
    try:
        fields = parse_qs(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        _bad_request(f"the form body has a %-escape that is not UTF-8 ({exc.reason}); percent-encode UTF-8 bytes")
    return {key: values[0] if len(values) == 1 else values for key, values in fields.items()}


def parse_body(content_type: str | None, body: bytes) -> Any:
    """The payload of a webhook body: JSON, a form as a dict, else UTF-8 text; None when empty.

    JSON is ``application/json`` or any ``+json`` type; form is
    ``application/x-www-form-urlencoded``; parameters such as ``charset`` are ignored. Raises
    HookRejected (400) when the body cannot be read as its type says.
    """
    if not body:
        return None
    media = _media_type(content_type)
    if media == "application/json" or media.endswith("+json"):
        return _parse_json(body)
    if media == "application/x-www-form-urlencoded":
        return _parse_form(body)
    return _text(body, "send UTF-8 text, or JSON or form data with its Content-Type")
