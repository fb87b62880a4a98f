from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from weir.schemas.workflow import GithubAuth, HmacAuth, NoAuth, SlackAuth, TokenAuth, WebhookAuth
from weir.server.hookauth import HookRejected, header_value, parse_body, verify

Headers = list[tuple[str, str]]

# GitHub's published test vector (docs: "Validating webhook deliveries").
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_HEX = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
GH_SIGNATURE = "sha256=" + GH_HEX

# Slack's documented example (docs: "Verifying requests from Slack").
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

SECRET = "s3cr3t-signing-key"
TOKEN = "t0ken-abc-123"
BODY = b'{"action": "opened", "number": 7}'

GITHUB = GithubAuth(type="github", secret="{{ secrets.GH }}")
SLACK = SlackAuth(type="slack", secret="{{ secrets.SLACK }}")
HMAC_HEX = HmacAuth(type="hmac-sha256", secret="{{ secrets.H }}", header="X-Signature", prefix="sha256=")
HMAC_B64 = HmacAuth(type="hmac-sha256", secret="{{ secrets.H }}", header="X-Shopify-Hmac-Sha256", encoding="base64")
BEARER = TokenAuth(type="token", token="{{ secrets.T }}")
NAMED = TokenAuth(type="token", token="{{ secrets.T }}", header="X-Gitlab-Token")

GH_FORM = "header X-Hub-Signature-256 must be 'sha256=' followed by 64 hex digits"
SLACK_SIG_FORM = "header X-Slack-Signature must be 'v0=' followed by 64 hex digits"
TS_FORM = "header X-Slack-Request-Timestamp must be the request time in whole Unix seconds"
B64_FORM = "header X-Shopify-Hmac-Sha256 must be 44 base64 characters (32 bytes, padded with '=')"
MISMATCH = "signature does not match the body; check the secret configured for this webhook and its sender"


def mac(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def slack_headers(ts: int | str, signature: str) -> Headers:
    return [("X-Slack-Request-Timestamp", str(ts)), ("X-Slack-Signature", signature)]


def rejected(call: Callable[[], object]) -> HookRejected:
    with pytest.raises(HookRejected) as info:
        call()
    return info.value


def refused(auth: WebhookAuth, secret: str | None, headers: Headers, body: bytes = BODY, now: float = 0) -> str:
    """The 401 message ``verify`` answers with."""
    exc = rejected(lambda: verify(auth, secret, headers, body, now))
    assert (exc.status, exc.code) == (401, "unauthorized")
    assert str(exc) == exc.message
    return exc.message


def bad_body(content_type: str | None, body: bytes) -> str:
    exc = rejected(lambda: parse_body(content_type, body))
    assert (exc.status, exc.code) == (400, "bad_request")
    return exc.message


# --- header_value ---


def test_header_value_matches_any_case_and_strips_blanks() -> None:
    headers = [("content-type", "text/plain"), ("X-HUB-signature-256", " \tsha256=ab\t ")]
    assert header_value(headers, "X-Hub-Signature-256") == "sha256=ab"
    assert header_value(headers, "X-Missing") is None


def test_header_value_rejects_a_header_sent_twice() -> None:
    exc = rejected(lambda: header_value([("X-Token", "a"), ("x-token", "a")], "X-Token"))
    assert (exc.status, exc.code, exc.message) == (
        401,
        "unauthorized",
        "header X-Token was sent 2 times; send it exactly once",
    )


# --- none and token ---


def test_verify_none_accepts_anything() -> None:
    verify(NoAuth(type="none"), None, [], b"whatever", 0)


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}"])
def test_verify_token_accepts_bearer_in_any_case(value: str) -> None:
    verify(BEARER, TOKEN, [("authorization", value)], BODY, 0)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([], "header Authorization is missing; it must be 'Bearer ' followed by the webhook token"),
        ([("Authorization", "")], "header Authorization is empty; it must be 'Bearer ' followed by the webhook token"),
        ([("Authorization", TOKEN)], "header Authorization must be 'Bearer ' followed by the webhook token"),
        ([("Authorization", f"Basic {TOKEN}")], "header Authorization must be 'Bearer ' followed by the webhook token"),
        ([("Authorization", "Bearer")], "header Authorization must be 'Bearer ' followed by the webhook token"),
        (
            [("Authorization", "Bearer wrong")],
            "the token in header Authorization is wrong; check the token configured for this webhook",
        ),
        (
            [("Authorization", f"Bearer {TOKEN}x")],
            "the token in header Authorization is wrong; check the token configured for this webhook",
        ),
        ([("Authorization", f"Bearer {TOKEN}")] * 2, "header Authorization was sent 2 times; send it exactly once"),
    ],
    ids=["missing", "empty", "no-scheme", "basic", "no-token", "wrong", "longer", "twice"],
)
def test_verify_token_bearer_rejects(headers: Headers, message: str) -> None:
    assert refused(BEARER, TOKEN, headers) == message


def test_verify_token_named_header_compares_the_whole_value() -> None:
    verify(NAMED, TOKEN, [("x-gitlab-token", TOKEN)], BODY, 0)
    wrong = "the token in header X-Gitlab-Token is wrong; check the token configured for this webhook"
    assert refused(NAMED, TOKEN, [("X-Gitlab-Token", f"Bearer {TOKEN}")]) == wrong
    assert refused(NAMED, TOKEN, [("Authorization", f"Bearer {TOKEN}")]) == (
        "header X-Gitlab-Token is missing; it must be the webhook token"
    )
    assert (
        refused(NAMED, TOKEN, [("X-Gitlab-Token", "")])
        == "header X-Gitlab-Token is empty; it must be the webhook token"
    )


# --- an unset secret is the server's fault ---


@pytest.mark.parametrize("auth", [BEARER, HMAC_HEX, GITHUB, SLACK], ids=["token", "hmac", "github", "slack"])
@pytest.mark.parametrize("secret", [None, ""], ids=["none", "empty"])
def test_verify_without_a_configured_secret_is_unavailable(auth: WebhookAuth, secret: str | None) -> None:
    # Even a request signed with the empty key must not pass.
    headers = [
        ("Authorization", "Bearer "),
        ("X-Signature", "sha256=" + mac("", BODY).hex()),
        ("X-Hub-Signature-256", "sha256=" + mac("", BODY).hex()),
        *slack_headers(0, "v0=" + mac("", b"v0:0:" + BODY).hex()),
    ]
    exc = rejected(lambda: verify(auth, secret, headers, BODY, 0))
    field = "token" if isinstance(auth, TokenAuth) else "secret"
    assert (exc.status, exc.code) == (503, "unavailable")
    assert exc.message == (
        f"this webhook's auth.{field} is empty on the server; set the secret it refers to "
        "(WEIR_SECRET_<NAME> or the --secrets-file) and retry"
    )


# --- github ---


def test_verify_github_accepts_the_published_test_vector() -> None:
    verify(GITHUB, GH_SECRET, [("X-Hub-Signature-256", GH_SIGNATURE)], GH_BODY, 0)
    verify(GITHUB, GH_SECRET, [("x-hub-signature-256", GH_SIGNATURE.upper().replace("SHA256=", "sha256="))], GH_BODY, 0)


@pytest.mark.parametrize(
    ("signature", "body", "secret"),
    [
        ("sha256=" + GH_HEX[:-1] + "8", GH_BODY, GH_SECRET),
        ("sha256=" + "0" * 64, GH_BODY, GH_SECRET),
        (GH_SIGNATURE, b"Hello, World?", GH_SECRET),
        (GH_SIGNATURE, GH_BODY + b"\n", GH_SECRET),
        (GH_SIGNATURE, GH_BODY, "It's a secret to everybody"),
    ],
    ids=["last-digit", "zeros", "body-changed", "body-extended", "other-secret"],
)
def test_verify_github_rejects_tampered_vector(signature: str, body: bytes, secret: str) -> None:
    assert refused(GITHUB, secret, [("X-Hub-Signature-256", signature)], body) == MISMATCH


@pytest.mark.parametrize(
    "value",
    [
        GH_HEX,
        "SHA256=" + GH_HEX,
        "sha1=" + GH_HEX[:40],
        "sha256=" + GH_HEX[:-1],
        "sha256=" + GH_HEX + "0",
        "sha256=" + GH_HEX[:-1] + "g",
        "sha256= " + GH_HEX,
        "sha256=" + " ".join(GH_HEX[i : i + 2] for i in range(0, 64, 2)),
        "sha256=" + base64.b64encode(bytes.fromhex(GH_HEX)).decode(),
    ],
    ids=["no-prefix", "prefix-case", "sha1", "short", "long", "not-hex", "space", "spaced-bytes", "base64"],
)
def test_verify_github_rejects_malformed_signature(value: str) -> None:
    assert refused(GITHUB, GH_SECRET, [("X-Hub-Signature-256", value)], GH_BODY) == GH_FORM


def test_verify_github_rejects_missing_empty_and_repeated_header() -> None:
    form = "'sha256=' followed by 64 hex digits"
    assert refused(GITHUB, GH_SECRET, [("X-Hub-Signature", "sha1=0")], GH_BODY) == (
        f"header X-Hub-Signature-256 is missing; it must be {form}"
    )
    assert refused(GITHUB, GH_SECRET, [("X-Hub-Signature-256", " ")], GH_BODY) == (
        f"header X-Hub-Signature-256 is empty; it must be {form}"
    )
    twice = [("X-Hub-Signature-256", GH_SIGNATURE), ("x-hub-signature-256", GH_SIGNATURE)]
    assert (
        refused(GITHUB, GH_SECRET, twice, GH_BODY)
        == "header X-Hub-Signature-256 was sent 2 times; send it exactly once"
    )


def test_verify_github_rejects_a_signature_of_the_re_encoded_body() -> None:
    # Signatures cover the bytes sent, not the JSON they mean: re-serialising breaks them.
    compact = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert compact != BODY
    headers = [("X-Hub-Signature-256", "sha256=" + mac(SECRET, compact).hex())]
    verify(GITHUB, SECRET, headers, compact, 0)
    assert refused(GITHUB, SECRET, headers, BODY) == MISMATCH


# --- hmac-sha256 ---


def test_verify_hmac_hex_with_prefix_accepts_either_case() -> None:
    digest = mac(SECRET, BODY).hex()
    verify(HMAC_HEX, SECRET, [("X-Signature", "sha256=" + digest)], BODY, 0)
    verify(HMAC_HEX, SECRET, [("X-Signature", "sha256=" + digest.upper())], BODY, 0)
    assert refused(HMAC_HEX, SECRET, [("X-Signature", digest)]) == (
        "header X-Signature must be 'sha256=' followed by 64 hex digits"
    )


def test_verify_hmac_hex_without_prefix() -> None:
    auth = HmacAuth(type="hmac-sha256", secret="{{ secrets.H }}")
    verify(auth, SECRET, [("x-signature", mac(SECRET, BODY).hex())], BODY, 0)
    assert refused(auth, SECRET, [("X-Signature", "sha256=" + mac(SECRET, BODY).hex())]) == (
        "header X-Signature must be 64 hex digits"
    )
    assert refused(auth, SECRET, []) == "header X-Signature is missing; it must be 64 hex digits"
    assert refused(auth, SECRET, [("X-Signature", mac("other", BODY).hex())]) == MISMATCH


def test_verify_hmac_base64_accepts_standard_padded_base64() -> None:
    verify(HMAC_B64, SECRET, [("X-Shopify-Hmac-Sha256", base64.b64encode(mac(SECRET, BODY)).decode())], BODY, 0)


def test_verify_hmac_base64_rejects_wrong_signature() -> None:
    headers = [("X-Shopify-Hmac-Sha256", base64.b64encode(mac(SECRET, BODY + b" ")).decode())]
    assert refused(HMAC_B64, SECRET, headers) == MISMATCH


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(b"\xfb" * 32).decode().rstrip("="),
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(),
        base64.b64encode(b"\xfb" * 31).decode(),
        base64.b64encode(b"\xfb" * 33).decode(),
        "sha256=" + base64.b64encode(b"\xfb" * 32).decode(),
        (b"\xfb" * 32).hex(),
    ],
    ids=["unpadded", "urlsafe", "short", "long", "prefixed", "hex"],
)
def test_verify_hmac_base64_rejects_malformed_signature(value: str) -> None:
    assert refused(HMAC_B64, SECRET, [("X-Shopify-Hmac-Sha256", value)]) == B64_FORM


def test_verify_hmac_base64_with_prefix_names_it() -> None:
    auth = HmacAuth(type="hmac-sha256", secret="x", header="X-Sig", prefix="sha256=", encoding="base64")
    assert refused(auth, SECRET, [("X-Sig", "nope")]) == (
        "header X-Sig must be 'sha256=' followed by 44 base64 characters (32 bytes, padded with '=')"
    )


# --- slack ---


def test_verify_slack_accepts_the_documented_example() -> None:
    verify(SLACK, SLACK_SECRET, slack_headers(SLACK_TS, SLACK_SIGNATURE), SLACK_BODY, SLACK_TS + 0.5)


@pytest.mark.parametrize("skew", [-300, -299, 0, 299, 300])
def test_verify_slack_accepts_timestamps_within_five_minutes(skew: int) -> None:
    verify(SLACK, SLACK_SECRET, slack_headers(SLACK_TS, SLACK_SIGNATURE), SLACK_BODY, SLACK_TS - skew)


@pytest.mark.parametrize(
    ("now", "message"),
    [
        (SLACK_TS + 301, "header X-Slack-Request-Timestamp is 301 s behind the server's clock"),
        (SLACK_TS - 301, "header X-Slack-Request-Timestamp is 301 s ahead of the server's clock"),
        (SLACK_TS + 300.2, "header X-Slack-Request-Timestamp is 301 s behind the server's clock"),
        (SLACK_TS + 86400, "header X-Slack-Request-Timestamp is 86400 s behind the server's clock"),
    ],
    ids=["past", "future", "fraction", "day-old"],
)
def test_verify_slack_rejects_timestamps_outside_the_window(now: float, message: str) -> None:
    text = refused(SLACK, SLACK_SECRET, slack_headers(SLACK_TS, SLACK_SIGNATURE), SLACK_BODY, now)
    assert (
        text
        == message + "; Slack requests are accepted within 300 s (replay protection), so check the clocks or resend"
    )


@pytest.mark.parametrize(
    "stamp",
    ["1531420618.0", "+1531420618", "-1531420618", "0x5b47a5ca", "1_531_420_618", "\uff11\uff15\uff13\uff11", "now"],
)
def test_verify_slack_rejects_non_integer_timestamps(stamp: str) -> None:
    assert refused(SLACK, SLACK_SECRET, slack_headers(stamp, SLACK_SIGNATURE), SLACK_BODY, SLACK_TS) == TS_FORM


def test_verify_slack_rejects_missing_headers() -> None:
    sig = [("X-Slack-Signature", SLACK_SIGNATURE)]
    assert refused(SLACK, SLACK_SECRET, sig, SLACK_BODY, SLACK_TS) == (
        "header X-Slack-Request-Timestamp is missing; it must be the request time in whole Unix seconds"
    )
    stamp = [("X-Slack-Request-Timestamp", str(SLACK_TS))]
    assert refused(SLACK, SLACK_SECRET, stamp, SLACK_BODY, SLACK_TS) == (
        "header X-Slack-Signature is missing; it must be 'v0=' followed by 64 hex digits"
    )
    twice = [*slack_headers(SLACK_TS, SLACK_SIGNATURE), ("x-slack-request-timestamp", str(SLACK_TS))]
    assert refused(SLACK, SLACK_SECRET, twice, SLACK_BODY, SLACK_TS) == (
        "header X-Slack-Request-Timestamp was sent 2 times; send it exactly once"
    )


@pytest.mark.parametrize(
    "signature", [SLACK_SIGNATURE[3:], "v1=" + SLACK_SIGNATURE[3:], SLACK_SIGNATURE[:-1], SLACK_SIGNATURE + "0"]
)
def test_verify_slack_rejects_malformed_signature(signature: str) -> None:
    assert refused(SLACK, SLACK_SECRET, slack_headers(SLACK_TS, signature), SLACK_BODY, SLACK_TS) == SLACK_SIG_FORM


def test_verify_slack_signature_binds_body_and_timestamp() -> None:
    tampered = SLACK_BODY.replace(b"text=", b"text=rm")
    assert refused(SLACK, SLACK_SECRET, slack_headers(SLACK_TS, SLACK_SIGNATURE), tampered, SLACK_TS) == MISMATCH
    # A captured request replayed with a fresh timestamp does not verify.
    later = SLACK_TS + 1000
    assert refused(SLACK, SLACK_SECRET, slack_headers(later, SLACK_SIGNATURE), SLACK_BODY, later) == MISMATCH
    upper = "v0=" + SLACK_SIGNATURE[3:].upper()
    verify(SLACK, SLACK_SECRET, slack_headers(SLACK_TS, upper), SLACK_BODY, SLACK_TS)


# --- messages never carry secrets ---


def _leaky_cases() -> list[tuple[WebhookAuth, Headers, bytes, float]]:
    good_hex = mac(SECRET, BODY).hex()
    good_b64 = base64.b64encode(mac(SECRET, BODY)).decode()
    slack_hex = mac(SECRET, b"v0:100:" + BODY).hex()
    return [
        (BEARER, [("Authorization", "Bearer guess")], BODY, 0),
        (BEARER, [("Authorization", "Basic " + TOKEN)], BODY, 0),
        (NAMED, [("X-Gitlab-Token", TOKEN[:-1])], BODY, 0),
        (HMAC_HEX, [("X-Signature", good_hex)], BODY, 0),
        (HMAC_HEX, [("X-Signature", "sha256=" + "0" * 64)], BODY, 0),
        (HMAC_B64, [("X-Shopify-Hmac-Sha256", "A" * 43 + "=")], BODY, 0),
        (HMAC_B64, [("X-Shopify-Hmac-Sha256", good_b64.rstrip("="))], BODY, 0),
        (GITHUB, [("X-Hub-Signature-256", "sha256=" + "f" * 64)], BODY, 0),
        (GITHUB, [("X-Hub-Signature-256", good_hex)], BODY, 0),
        (SLACK, slack_headers(100, "v0=" + "1" * 64), BODY, 100),
        (SLACK, slack_headers(100, "v0=" + slack_hex), BODY, 1000),
        (SLACK, slack_headers(100, slack_hex), BODY, 100),
    ]


@pytest.mark.parametrize(("auth", "headers", "body", "now"), _leaky_cases())
def test_verify_messages_never_contain_secret_or_expected_signature(
    auth: WebhookAuth, headers: Headers, body: bytes, now: float
) -> None:
    secret = TOKEN if isinstance(auth, TokenAuth) else SECRET
    message = refused(auth, secret, headers, body, now)
    expected = [mac(SECRET, BODY), mac(SECRET, b"v0:100:" + BODY)]
    forbidden = [SECRET, TOKEN, *(d.hex() for d in expected), *(base64.b64encode(d).decode() for d in expected)]
    for text in forbidden:
        assert text.lower() not in message.lower()
        assert text[:16].lower() not in message.lower()


# --- parse_body ---


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=utf-8", "application/vnd.github+json", "application/problem+json"],
)
def test_parse_body_reads_json(content_type: str) -> None:
    assert parse_body(content_type, b'{"a": [1, 2.5, "\xc3\xa9", null, true]}') == {"a": [1, 2.5, "é", None, True]}


def test_parse_body_json_ignores_a_utf8_bom_and_keeps_order() -> None:
    assert list(parse_body("application/json", b'\xef\xbb\xbf{"b": 1, "a": 2}')) == ["b", "a"]


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded", "text/plain", None])
def test_parse_body_empty_is_none(content_type: str | None) -> None:
    assert parse_body(content_type, b"") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": 1,}', "Expecting property name enclosed in double quotes at line 1, column 9"),
        (b'{\n  "a": 1\n  "b": 2\n}', "Expecting ',' delimiter at line 3, column 3"),
        (b"   ", "Expecting value at line 1, column 4"),
        (b"[1] [2]", "Extra data at line 1, column 5"),
        (b"{'a': 1}", "Expecting property name enclosed in double quotes at line 1, column 2"),
    ],
    ids=["trailing-comma", "missing-comma", "blank", "extra", "single-quotes"],
)
def test_parse_body_invalid_json_names_the_position(body: bytes, message: str) -> None:
    assert bad_body("application/json", body) == "the body is not valid JSON: " + message


def test_parse_body_json_must_be_utf8_whatever_the_charset() -> None:
    body = '{"name": "Jos\xe9"}'.encode("latin-1")
    assert bad_body("application/json; charset=latin-1", body) == (
        "the body is not valid UTF-8 (bad byte at offset 13); JSON bodies must be UTF-8"
    )


def test_parse_body_json_nesting_is_limited_to_64_levels() -> None:
    assert parse_body("application/json", b"[" * 64 + b"]" * 64) is not None
    deep_object = b'{"a":' * 64 + b"1" + b"}" * 64
    assert parse_body("application/json", deep_object) is not None
    message = "the JSON body nests arrays and objects more than 64 levels deep; flatten it"
    assert bad_body("application/json", b"[" * 65 + b"]" * 65) == message
    assert bad_body("application/json", b'{"a":' * 65 + b"1" + b"}" * 65) == message
    # Far beyond Python's recursion limit: rejected, not a RecursionError.
    assert bad_body("application/json", b"[" * 200_000 + b"]" * 200_000) == message
    # Unclosed brackets count too: the parser would recurse into them before failing.
    assert bad_body("application/json", b"[" * 100) == message
    # A string ending in an escaped backslash ends there; the brackets after it are real.
    assert bad_body("application/json", b'["a\\\\", ' + b"[" * 64 + b"]" * 65) == message


def test_parse_body_json_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"text": "[" * 500 + '\\"{' * 100 + "]" * 70, "list": [[1]] * 100}).encode()
    assert b'\\\\\\"{' in body
    assert parse_body("application/json", body)["text"].startswith("[[[")
    wrapped = b"[" * 62 + json.dumps(["]" * 10 + "[" * 10 + "\\", {"a": 1}]).encode() + b"]" * 62
    assert len(parse_body("application/json", wrapped)) == 1


def test_parse_body_json_rejects_huge_integers_and_floats() -> None:
    assert parse_body("application/json", b"[" + b"9" * 4300 + b"]") == [int("9" * 4300)]
    assert bad_body("application/json", b"[" + b"9" * 4301 + b"]") == (
        "the JSON body has an integer of more than 4300 digits; send it as a string"
    )
    assert bad_body("application/json", b'{"x": -1e999}') == (
        "the JSON body has the number -1e999, too large for a float; send it as a string"
    )


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_parse_body_json_rejects_nan_and_infinity(constant: str) -> None:
    assert bad_body("application/json", f'{{"x": [{constant}]}}'.encode()) == (
        f"the JSON body contains {constant}, which is not JSON; send null or a string instead"
    )


def test_parse_body_json_rejects_duplicate_keys() -> None:
    assert bad_body("application/json", b'{"ok": {"id": 1, "id": 2}}') == (
        "the JSON body has the key 'id' more than once in one object; send each key once"
    )
    long_key = "k" * 100
    assert bad_body("application/json", json.dumps({long_key: 1}).replace("}", f', "{long_key}": 2}}').encode()) == (
        f"the JSON body has the key '{'k' * 60}...' more than once in one object; send each key once"
    )
    assert parse_body("application/json", b'[{"id": 1}, {"id": 2}]') == [{"id": 1}, {"id": 2}]


def test_parse_body_form_repeats_become_lists_and_blanks_stay() -> None:
    body = b"tag=a&tag=b&text=&name=J%C3%B6rg+M&payload=%7B%22type%22%3A%22block_actions%22%7D"
    assert parse_body("application/x-www-form-urlencoded; charset=UTF-8", body) == {
        "tag": ["a", "b"],
        "text": "",
        "name": "Jörg M",
        "payload": '{"type":"block_actions"}',
    }


def test_parse_body_form_of_slack_example() -> None:
    form: Any = parse_body("application/x-www-form-urlencoded", SLACK_BODY)
    assert form["command"] == "/webhook-collect"
    assert form["text"] == ""


def test_parse_body_form_must_be_utf8() -> None:
    assert bad_body("application/x-www-form-urlencoded", b"a=\xff") == (
        "the body is not valid UTF-8 (bad byte at offset 2); form bodies must be UTF-8"
    )
    assert bad_body("application/x-www-form-urlencoded", b"a=%FF") == (
        "the form body has a %-escape that is not UTF-8 (invalid start byte); percent-encode UTF-8 bytes"
    )


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_parse_body_other_types_are_text(content_type: str | None) -> None:
    assert parse_body(content_type, "<a>é</a>\n".encode()) == "<a>é</a>\n"


def test_parse_body_text_must_be_utf8() -> None:
    assert bad_body("text/plain", b"ok\n\xc3(") == (
        "the body is not valid UTF-8 (bad byte at offset 3); "
        "send UTF-8 text, or JSON or form data with its Content-Type"
    )


def test_parse_body_json_text_type_is_not_json() -> None:
    # Only application/json and +json types are parsed; a JSON-looking text body stays text.
    assert parse_body("text/json", b'{"a": 1}') == '{"a": 1}'
