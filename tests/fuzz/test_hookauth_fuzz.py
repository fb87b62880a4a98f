"""Webhook signatures and bodies under random input: only the exact credential passes.

For random bodies, secrets and header sets, ``verify`` accepts the signature the sender's own
library would compute, and refuses with a 401 any body or signature that differs in one byte,
any other secret, and every header set that is not the expected one. ``parse_body`` answers
every body with a value or a 400, never another exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from typing import Any, NamedTuple

from hypothesis import assume, example, given, settings, strategies as st

from tests.fuzz.strategies import examples, json_values, outcome
from weir.schemas.workflow import GithubAuth, HmacAuth, NoAuth, SlackAuth, TokenAuth, WebhookAuth
from weir.server.hookauth import SLACK_WINDOW, HookRejected, parse_body, verify

Headers = list[tuple[str, str]]
MISMATCH = "signature does not match the body; check the secret configured for this webhook and its sender"
NOW = 1_700_000_000

bodies = st.binary(max_size=300) | json_values().map(lambda v: json.dumps(v, ensure_ascii=False).encode())
secrets = st.text(min_size=1, max_size=40)
header_names = st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)
prefixes = st.sampled_from(["", "sha256=", "v1,", "HMAC "])
noise = st.lists(
    st.tuples(st.sampled_from(["Content-Type", "User-Agent", "X-Request-Id", "Accept"]), st.text(max_size=20)),
    max_size=3,
)


def mac(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8", "surrogatepass"), message, hashlib.sha256).digest()


def refusal(auth: WebhookAuth, secret: str | None, headers: Headers, body: bytes, now: float = NOW) -> HookRejected:
    """The HookRejected that ``verify`` raises; fails the test when it accepts the request."""
    try:
        verify(auth, secret, headers, body, now)
    except HookRejected as exc:
        return exc
    raise AssertionError(f"accepted: {auth!r} {headers!r} {body!r}")


def refused_401(auth: WebhookAuth, secret: str | None, headers: Headers, body: bytes, now: float = NOW) -> str:
    """The message of the 401 ``verify`` answers with; the secret and the signature are never in it."""
    exc = refusal(auth, secret, headers, body, now)
    assert (exc.status, exc.code) == (401, "unauthorized"), exc.message
    if secret:  # the answer does not depend on the secret: it cannot leak any of it
        other = "another secret" if secret != "another secret" else "a third secret"
        assert refusal(auth, other, headers, body, now).message == exc.message
    for _, value in headers:
        if len(value) >= 40:
            assert value not in exc.message  # a signature or token sent is never echoed
    return exc.message


class Signed(NamedTuple):
    """A request as its sender signs it."""

    auth: WebhookAuth
    secret: str
    body: bytes
    headers: Headers
    name: str
    """The signature header."""
    value: str
    """Its value: ``prefix`` and the encoded signature."""
    prefix: str
    encoding: str


@st.composite
def signed(draw: st.DrawFn) -> Signed:
    """A random auth, secret and body, with the headers a correct sender adds, among other headers."""
    secret, body = draw(secrets), draw(bodies)
    kind = draw(st.sampled_from(["github", "hmac-hex", "hmac-base64", "slack"]))
    extra = draw(noise)
    prefix, encoding = "", "hex"
    if kind == "github":
        prefix = "sha256="
        name, value = "X-Hub-Signature-256", prefix + mac(secret, body).hex()
        auth: WebhookAuth = GithubAuth(type="github", secret="{{ secrets.S }}")
        headers = [(draw(st.sampled_from([name, name.lower(), name.upper()])), value)]
    elif kind == "slack":
        stamp = str(NOW + draw(st.integers(-SLACK_WINDOW, SLACK_WINDOW)))
        prefix = "v0="
        name, value = "X-Slack-Signature", prefix + mac(secret, f"v0:{stamp}:".encode() + body).hex()
        auth = SlackAuth(type="slack", secret="{{ secrets.S }}")
        headers = [("X-Slack-Request-Timestamp", stamp), (name, value)]
    else:
        name, prefix = draw(header_names), draw(prefixes)
        encoding = "hex" if kind == "hmac-hex" else "base64"
        digest = mac(secret, body)
        value = prefix + (digest.hex() if encoding == "hex" else base64.b64encode(digest).decode())
        auth = HmacAuth(type="hmac-sha256", secret="{{ secrets.S }}", header=name, prefix=prefix, encoding=encoding)
        headers = [(name, value)]
    extra = [(k, v) for k, v in extra if k.lower() not in {h.lower() for h, _ in headers}]
    order = draw(st.permutations(headers + extra))
    return Signed(auth, secret, body, list(order), name, value, prefix, encoding)


@settings(max_examples=examples(150))
@given(signed())
def test_the_exact_signature_is_accepted(case: Signed) -> None:
    assert verify(case.auth, case.secret, case.headers, case.body, NOW) is None


@settings(max_examples=examples(150))
@given(signed(), st.data())
def test_a_body_changed_in_one_byte_is_refused(case: Signed, data: st.DataObject) -> None:
    if case.body:
        changed = bytearray(case.body)
        index = data.draw(st.integers(0, len(changed) - 1))
        changed[index] = data.draw(st.integers(0, 255).filter(lambda b: b != case.body[index]))
    else:
        changed = bytearray(data.draw(st.binary(min_size=1, max_size=1)))
    assert refused_401(case.auth, case.secret, case.headers, bytes(changed)) == MISMATCH


def _encode(digest: bytes, encoding: str) -> str:
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def _with_signature(case: Signed, value: str) -> Headers:
    return [(k, value if k.lower() == case.name.lower() else v) for k, v in case.headers]


@settings(max_examples=examples(150))
@given(signed(), st.integers(0, 31), st.integers(1, 255))
def test_a_signature_changed_in_one_byte_is_refused(case: Signed, index: int, flip: int) -> None:
    encoded = case.value[len(case.prefix) :]
    digest = bytearray(bytes.fromhex(encoded) if case.encoding == "hex" else base64.b64decode(encoded))
    digest[index] ^= flip
    forged = case.prefix + _encode(bytes(digest), case.encoding)
    assert refused_401(case.auth, case.secret, _with_signature(case, forged), case.body) == MISMATCH


B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
_KEY = "k"
_B64_SIGNATURE = base64.b64encode(hmac.new(b"k", b"", hashlib.sha256).digest()).decode()
_B64_CASE = Signed(
    HmacAuth(type="hmac-sha256", secret="{{ secrets.S }}", header="X-Sig", encoding="base64"),
    _KEY,
    b"",
    [("X-Sig", _B64_SIGNATURE)],
    "X-Sig",
    _B64_SIGNATURE,
    "",
    "base64",
)


@settings(max_examples=examples(150))
@given(signed(), st.data())
@example(_B64_CASE, None).via("base64 of 32 bytes leaves two bits of its last character unused")
def test_a_signature_header_changed_in_one_character_is_refused(case: Signed, data: st.DataObject | None) -> None:
    value = case.value
    if data is None:  # the explicit example: the same 32 bytes, with the unused bits set
        index, char = len(value) - 2, B64[B64.index(value[-2]) ^ 1]
    else:
        index = data.draw(st.integers(0, len(value) - 1))
        char = data.draw(st.characters(codec="latin-1").filter(lambda c: c != value[index]))
    # Hex signatures are compared as the bytes they encode: upper and lower case both pass (hookauth.py).
    hex_digit = case.encoding == "hex" and index >= len(case.prefix) and value[index] in string.hexdigits
    assume(not (hex_digit and char.lower() == value[index].lower()))
    forged = value[:index] + char + value[index + 1 :]
    assume(forged.strip(" \t") != value)  # blanks around a header value are not part of it
    refused_401(case.auth, case.secret, _with_signature(case, forged), case.body)


@settings(max_examples=examples(100))
@given(signed(), secrets)
def test_another_secret_is_refused(case: Signed, other: str) -> None:
    assume(other.encode("utf-8", "surrogatepass") != case.secret.encode("utf-8", "surrogatepass"))
    assert refused_401(case.auth, other, case.headers, case.body) == MISMATCH


@settings(max_examples=examples(100))
@given(signed(), st.sampled_from(["missing", "twice", "empty"]))
def test_a_missing_repeated_or_empty_signature_header_is_refused(case: Signed, how: str) -> None:
    others = [(k, v) for k, v in case.headers if k.lower() != case.name.lower()]
    changed = {
        "missing": others,
        "twice": [*case.headers, (case.name, case.value)],
        "empty": [*others, (case.name, "")],
    }
    message = refused_401(case.auth, case.secret, changed[how], case.body)
    expected = {"missing": "is missing", "twice": "was sent 2 times", "empty": "is empty"}[how]
    assert message.startswith(f"header {case.name} {expected}")


@settings(max_examples=examples(60))
@given(signed().filter(lambda case: isinstance(case.auth, SlackAuth)), st.integers(SLACK_WINDOW + 1, 10**9))
def test_slack_timestamps_outside_the_window_are_refused(case: Signed, skew: int) -> None:
    stamp = int(dict(case.headers)["X-Slack-Request-Timestamp"])
    for now in (stamp - skew, stamp + skew):
        message = refused_401(case.auth, case.secret, case.headers, case.body, now=now)
        assert "Slack requests are accepted within 300 s" in message


@settings(max_examples=examples(60))
@given(signed().filter(lambda case: isinstance(case.auth, SlackAuth)), st.integers(-SLACK_WINDOW, SLACK_WINDOW))
def test_slack_signatures_bind_the_timestamp(case: Signed, shift: int) -> None:
    stamp = int(dict(case.headers)["X-Slack-Request-Timestamp"])
    assume(shift != 0 and abs(stamp + shift - NOW) <= SLACK_WINDOW)
    moved = [(k, str(stamp + shift) if k == "X-Slack-Request-Timestamp" else v) for k, v in case.headers]
    assert refused_401(case.auth, case.secret, moved, case.body) == MISMATCH


tokens = st.text(alphabet=string.ascii_letters + string.digits + "-._~+/=!#$%&*", min_size=1, max_size=40)


@settings(max_examples=examples(150))
@given(tokens, header_names | st.just("Authorization"), st.data())
def test_only_the_exact_token_is_accepted(token: str, header: str, data: Any) -> None:
    auth = TokenAuth(type="token", token="{{ secrets.T }}", header=header)
    bearer = header == "Authorization"
    scheme = data.draw(st.sampled_from(["Bearer", "bearer", "BEARER"])) if bearer else ""
    sent = f"{scheme} {token}" if bearer else token
    assert verify(auth, token, [(header, sent)], b"", NOW) is None
    index = data.draw(st.integers(len(scheme) + 1 if bearer else 0, len(sent) - 1))
    char = data.draw(st.characters(codec="latin-1").filter(lambda c: c != sent[index]))
    forged = sent[:index] + char + sent[index + 1 :]
    refused_401(auth, token, [(header, forged)], b"")
    refused_401(auth, token, [(header, sent + data.draw(st.sampled_from(["x", "0", "="])))], b"")
    refused_401(auth, token, [(header, sent[:-1])], b"")


@settings(max_examples=examples(150))
@given(
    st.sampled_from(
        [
            NoAuth(type="none"),
            TokenAuth(type="token", token="t"),
            TokenAuth(type="token", token="t", header="X-Token"),
            GithubAuth(type="github", secret="s"),
            SlackAuth(type="slack", secret="s"),
            HmacAuth(type="hmac-sha256", secret="s", header="X-Sig", prefix="sha256="),
            HmacAuth(type="hmac-sha256", secret="s", header="X-Sig", encoding="base64"),
        ]
    ),
    st.none() | st.text(max_size=20),
    st.lists(
        st.tuples(
            st.sampled_from(["X-Hub-Signature-256", "X-Slack-Signature", "X-Slack-Request-Timestamp", "X-Sig"])
            | st.sampled_from(["Authorization", "X-Token"])
            | st.text(max_size=10),
            st.text(max_size=80) | st.from_regex(r"(sha256=|v0=|Bearer )?[0-9a-fA-F]{60,70}=?", fullmatch=True),
        ),
        max_size=5,
    ),
    bodies,
    st.floats(-(10**12), 10**12) | st.integers(-(10**12), 10**12),
)
def test_verify_answers_random_requests_with_a_401_or_503_only(
    auth: WebhookAuth, secret: str | None, headers: Headers, body: bytes, now: float
) -> None:
    result = outcome(lambda: verify(auth, secret, headers, body, now), HookRejected)
    if isinstance(result, HookRejected):
        assert result.status in (401, 503), result.message
        assert result.message
        assert str(result) == result.message
        assert (result.status == 503) == (not secret and not isinstance(auth, NoAuth))
    else:
        assert isinstance(auth, NoAuth) or secret  # nothing passes without a configured secret


content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "application/vnd.github+json",
            "APPLICATION/JSON",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/octet-stream",
            "multipart/form-data; boundary=x",
            "",
            ";",
        ]
    ),
    st.text(max_size=30),
)
deep = st.integers(60, 5000).map(lambda n: ("[" * n + "]" * n).encode())
json_like = st.lists(
    st.sampled_from(['{"a":', "[", "]", "{", "}", '"x"', "1e999", "NaN", "-Infinity", '"\\ud800"', ",", "9" * 5000]),
    max_size=12,
).map(lambda parts: "".join(parts).encode())


@settings(max_examples=examples(200))
@given(content_types, st.one_of(st.binary(max_size=300), bodies, deep, json_like))
@example("application/json", b'{"a": 1, "a": 2}')
@example("application/json", b"[" * 100_000)
@example("application/json", b'"\\ud83d\\ude00"')
@example("application/x-www-form-urlencoded", b"a=%ff&b=%zz&&=")
def test_parse_body_returns_a_payload_or_a_400(content_type: str | None, body: bytes) -> None:
    payload = outcome(lambda: parse_body(content_type, body), HookRejected)
    if isinstance(payload, HookRejected):
        assert (payload.status, payload.code) == (400, "bad_request"), payload.message
        assert 0 < len(payload.message) < 400
    else:
        json.dumps(payload)  # whatever is accepted can be stored as JSON


finite_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=examples(150))
@given(finite_json, st.sampled_from(["application/json", "application/cloudevents+json; charset=utf-8"]))
def test_json_bodies_round_trip(value: Any, content_type: str) -> None:
    body = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert parse_body(content_type, body) == value
