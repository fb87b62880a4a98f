"""Forged, replayed and malformed credentials against the webhook routes of a real ``weir serve``.

Every refused request is answered with the exact status and message, stores no run, and the
answer holds neither the secret nor the signature the server expected. A valid request per auth
type shows that the hook itself works, so each refusal is about the credential alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.adversarial.conftest import (
    GITHUB_SECRET,
    HMAC_SECRET,
    HOOK_TOKEN,
    SLACK_SECRET,
    assert_nothing_leaked,
    error_of,
    run_count,
)

Headers = list[tuple[str, str]]

BODY = b'{"action": "opened", "number": 7}'
FORM = b"token=x&team_id=T1&text=deploy+now"
MISMATCH = "signature does not match the body; check the secret configured for this webhook and its sender"
GH_FORM = "header X-Hub-Signature-256 must be 'sha256=' followed by 64 hex digits"
SLACK_SIG_FORM = "header X-Slack-Signature must be 'v0=' followed by 64 hex digits"
TS_FORM = "the request time in whole Unix seconds"
B64_FORM = "header X-Signature must be 44 base64 characters (32 bytes, padded with '=')"
WRONG_TOKEN = "the token in header {} is wrong; check the token configured for this webhook"
BEARER_FORM = "header Authorization must be 'Bearer ' followed by the webhook token"


def hex_mac(secret: str, body: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), body, digest).hexdigest()


def gh(signature: str) -> Headers:
    return [("X-Hub-Signature-256", signature), ("Content-Type", "application/json")]


def slack(
    stamp: int | str, signed_stamp: int | str | None = None, body: bytes = FORM, secret: str = SLACK_SECRET
) -> Headers:
    """Slack headers for ``stamp``; the signature covers ``signed_stamp`` (default: the same stamp)."""
    signed = stamp if signed_stamp is None else signed_stamp
    mac = hex_mac(secret, f"v0:{signed}:".encode() + body)
    return [
        ("X-Slack-Request-Timestamp", str(stamp)),
        ("X-Slack-Signature", f"v0={mac}"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ]


def now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Case:
    path: str
    headers: Callable[[], Headers]
    message: str | Callable[[str], bool]
    body: bytes = BODY
    status: int = 401
    params: dict[str, str] | None = None

    @property
    def workflow(self) -> str:
        return self.path


GH_MAC = hex_mac(GITHUB_SECRET, BODY)
REENCODED = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
assert REENCODED != BODY


def _slack_window(expected: str, seconds: tuple[int, ...]) -> Callable[[str], bool]:
    """The window message; its second count depends on the fraction of the second the request was sent in."""
    return lambda message: (
        message
        in {
            f"header X-Slack-Request-Timestamp is {s} s {expected} the server's clock; Slack requests are accepted "
            "within 300 s (replay protection), so check the clocks or resend"
            for s in seconds
        }
    )


REFUSED = {
    # -- GitHub (X-Hub-Signature-256) --------------------------------------------------------------------
    "github-missing": Case(
        "gh",
        lambda: [("Content-Type", "application/json")],
        "header X-Hub-Signature-256 is missing; it must be 'sha256=' followed by 64 hex digits",
    ),
    "github-empty": Case(
        "gh", lambda: gh(""), "header X-Hub-Signature-256 is empty; it must be 'sha256=' followed by 64 hex digits"
    ),
    "github-only-legacy-sha1-header": Case(
        "gh",
        lambda: [("X-Hub-Signature", "sha1=" + hex_mac(GITHUB_SECRET, BODY, "sha1"))],
        "header X-Hub-Signature-256 is missing; it must be 'sha256=' followed by 64 hex digits",
    ),
    "github-sent-twice-both-valid": Case(
        "gh",
        lambda: [*gh(f"sha256={GH_MAC}"), ("X-Hub-Signature-256", f"sha256={GH_MAC}")],
        "header X-Hub-Signature-256 was sent 2 times; send it exactly once",
    ),
    "github-sent-twice-forged-first": Case(
        "gh",
        lambda: [("X-Hub-Signature-256", "sha256=" + "0" * 64), *gh(f"sha256={GH_MAC}")],
        "header X-Hub-Signature-256 was sent 2 times; send it exactly once",
    ),
    "github-sha1-algorithm": Case("gh", lambda: gh("sha1=" + hex_mac(GITHUB_SECRET, BODY, "sha1")), GH_FORM),
    "github-sha512-algorithm": Case("gh", lambda: gh("sha512=" + hex_mac(GITHUB_SECRET, BODY, "sha512")), GH_FORM),
    "github-uppercase-prefix": Case("gh", lambda: gh(f"SHA256={GH_MAC}"), GH_FORM),
    "github-no-prefix": Case("gh", lambda: gh(GH_MAC), GH_FORM),
    "github-extra-hex-digits": Case("gh", lambda: gh(f"sha256={GH_MAC}00"), GH_FORM),
    "github-non-hex-digit": Case("gh", lambda: gh(f"sha256={GH_MAC[:-1]}g"), GH_FORM),
    "github-plain-digest-not-hmac": Case("gh", lambda: gh("sha256=" + hashlib.sha256(BODY).hexdigest()), MISMATCH),
    "github-signature-of-re-encoded-json": Case(
        "gh", lambda: gh("sha256=" + hex_mac(GITHUB_SECRET, REENCODED)), MISMATCH
    ),
    "github-body-modified-after-signing": Case(
        "gh", lambda: gh(f"sha256={GH_MAC}"), MISMATCH, body=BODY.replace(b"7", b"8")
    ),
    "github-trailing-newline-added": Case("gh", lambda: gh(f"sha256={GH_MAC}"), MISMATCH, body=BODY + b"\n"),
    "github-near-miss-secret": Case("gh", lambda: gh("sha256=" + hex_mac(GITHUB_SECRET[:-1] + "1", BODY)), MISMATCH),
    "github-empty-secret": Case("gh", lambda: gh("sha256=" + hex_mac("", BODY)), MISMATCH),
    # -- Slack (v0 signature, 5-minute window) ------------------------------------------------------------
    "slack-400s-in-the-future": Case(
        "slack", lambda: slack(now() + 400), _slack_window("ahead of", (398, 399, 400)), body=FORM
    ),
    "slack-ten-years-in-the-future": Case(
        "slack",
        lambda: slack(now() + 315_360_000),
        _slack_window("ahead of", (315_359_998, 315_359_999, 315_360_000)),
        body=FORM,
    ),
    "slack-an-hour-old": Case(
        "slack", lambda: slack(now() - 3600), _slack_window("behind", (3600, 3601, 3602)), body=FORM
    ),
    "slack-epoch-zero": Case(
        "slack",
        lambda: slack(0),
        lambda m: m.startswith("header X-Slack-Request-Timestamp is 17") and " s behind " in m,
        body=FORM,
    ),
    "slack-fractional-timestamp": Case(
        "slack", lambda: slack(f"{now()}.5"), f"header X-Slack-Request-Timestamp must be {TS_FORM}", body=FORM
    ),
    "slack-negative-timestamp": Case(
        "slack", lambda: slack("-1"), f"header X-Slack-Request-Timestamp must be {TS_FORM}", body=FORM
    ),
    "slack-plus-signed-timestamp": Case(
        "slack", lambda: slack(f"+{now()}"), f"header X-Slack-Request-Timestamp must be {TS_FORM}", body=FORM
    ),
    "slack-hex-timestamp": Case(
        "slack", lambda: slack(hex(now())), f"header X-Slack-Request-Timestamp must be {TS_FORM}", body=FORM
    ),
    "slack-exponent-timestamp": Case(
        "slack", lambda: slack("1.7e9"), f"header X-Slack-Request-Timestamp must be {TS_FORM}", body=FORM
    ),
    "slack-sixteen-digit-timestamp": Case(
        "slack", lambda: slack("1" * 16), f"header X-Slack-Request-Timestamp must be {TS_FORM}", body=FORM
    ),
    "slack-word-timestamp": Case(
        "slack", lambda: slack("now"), f"header X-Slack-Request-Timestamp must be {TS_FORM}", body=FORM
    ),
    "slack-missing-timestamp": Case(
        "slack",
        lambda: [h for h in slack(now()) if h[0] != "X-Slack-Request-Timestamp"],
        f"header X-Slack-Request-Timestamp is missing; it must be {TS_FORM}",
        body=FORM,
    ),
    "slack-timestamp-sent-twice": Case(
        "slack",
        lambda: [*slack(now()), ("X-Slack-Request-Timestamp", str(now()))],
        "header X-Slack-Request-Timestamp was sent 2 times; send it exactly once",
        body=FORM,
    ),
    "slack-old-signature-with-fresh-timestamp": Case(
        "slack", lambda: slack(now(), signed_stamp=now() - 3600), MISMATCH, body=FORM
    ),
    "slack-v1-prefix": Case(
        "slack",
        lambda: [(k, v.replace("v0=", "v1=")) for k, v in slack(now())],
        SLACK_SIG_FORM,
        body=FORM,
    ),
    "slack-body-modified-after-signing": Case("slack", lambda: slack(now()), MISMATCH, body=FORM + b"&admin=1"),
    # -- token in Authorization: Bearer -----------------------------------------------------------------
    "bearer-last-character-changed": Case(
        "bearer", lambda: [("Authorization", f"Bearer {HOOK_TOKEN[:-1]}0")], WRONG_TOKEN.format("Authorization")
    ),
    "bearer-prefix-of-the-token": Case(
        "bearer", lambda: [("Authorization", f"Bearer {HOOK_TOKEN[:-1]}")], WRONG_TOKEN.format("Authorization")
    ),
    "bearer-token-plus-one-character": Case(
        "bearer", lambda: [("Authorization", f"Bearer {HOOK_TOKEN}1")], WRONG_TOKEN.format("Authorization")
    ),
    "bearer-token-in-upper-case": Case(
        "bearer", lambda: [("Authorization", f"Bearer {HOOK_TOKEN.upper()}")], WRONG_TOKEN.format("Authorization")
    ),
    "bearer-basic-scheme": Case(
        "bearer",
        lambda: [("Authorization", "Basic " + base64.b64encode(f"weir:{HOOK_TOKEN}".encode()).decode())],
        BEARER_FORM,
    ),
    "bearer-token-without-scheme": Case("bearer", lambda: [("Authorization", HOOK_TOKEN)], BEARER_FORM),
    "bearer-scheme-without-token": Case("bearer", lambda: [("Authorization", "Bearer")], BEARER_FORM),
    "bearer-token-in-query-string": Case(
        "bearer",
        list,
        "header Authorization is missing; it must be 'Bearer ' followed by the webhook token",
        params={"token": HOOK_TOKEN, "access_token": HOOK_TOKEN},
    ),
    # -- token in a named header -------------------------------------------------------------------------
    "named-token-sent-as-bearer": Case(
        "named",
        lambda: [("Authorization", f"Bearer {HOOK_TOKEN}")],
        "header X-Weir-Token is missing; it must be the webhook token",
    ),
    "named-bearer-prefix-in-named-header": Case(
        "named", lambda: [("X-Weir-Token", f"Bearer {HOOK_TOKEN}")], WRONG_TOKEN.format("X-Weir-Token")
    ),
    "named-header-sent-twice": Case(
        "named",
        lambda: [("X-Weir-Token", HOOK_TOKEN), ("x-weir-token", HOOK_TOKEN)],
        "header X-Weir-Token was sent 2 times; send it exactly once",
    ),
    # -- hmac-sha256, base64 ---------------------------------------------------------------------------------
    "hmac-hex-where-base64-is-expected": Case(
        "signed", lambda: [("X-Signature", hex_mac(HMAC_SECRET, BODY))], B64_FORM
    ),
    "hmac-base64-without-padding": Case(
        "signed",
        lambda: [("X-Signature", base64.b64encode(bytes.fromhex(hex_mac(HMAC_SECRET, BODY))).decode().rstrip("="))],
        B64_FORM,
    ),
    "hmac-base64-of-wrong-key": Case(
        "signed",
        lambda: [("X-Signature", base64.b64encode(bytes.fromhex(hex_mac(HMAC_SECRET + " ", BODY))).decode())],
        MISMATCH,
    ),
    # -- a hook whose secret the server does not have ------------------------------------------------------
    "unset-secret-signed-with-empty-key": Case(
        "unset",
        lambda: gh("sha256=" + hex_mac("", BODY)),
        "the webhook's github secret is not set on the server; set the secret its auth names "
        "(WEIR_SECRET_* or --secrets-file)",
        status=503,
    ),
}


@pytest.mark.parametrize("case", list(REFUSED.values()), ids=list(REFUSED))
def test_webhook_refuses_forged_credentials(hooks: httpx.Client, api: httpx.Client, case: Case) -> None:
    before = run_count(api, case.workflow)
    headers = case.headers()
    answer = hooks.post(f"/hooks/{case.path}", content=case.body, headers=headers, params=case.params)
    status, code, message = error_of(answer)
    assert (status, code) == (case.status, "unauthorized" if case.status == 401 else "unavailable")
    if callable(case.message):
        assert case.message(message), message
    else:
        assert message == case.message
    assert run_count(api, case.workflow) == before
    signatures = [value for name, value in headers if "signature" in name.lower()]
    expected = [hex_mac(GITHUB_SECRET, case.body), hex_mac(HMAC_SECRET, case.body)]
    assert_nothing_leaked(answer.text + str(answer.headers), *signatures, *expected)


def _std_base64_with_symbols() -> tuple[bytes, str]:
    """A body whose HMAC in standard base64 holds '+' or '/', so the URL-safe form differs from it."""
    for n in range(1000):
        body = b'{"n": %d}' % n
        encoded = base64.b64encode(hmac.new(HMAC_SECRET.encode(), body, "sha256").digest()).decode()
        if "+" in encoded or "/" in encoded:
            return body, encoded
    raise AssertionError("no body found")  # pragma: no cover


def test_webhook_refuses_url_safe_base64_where_standard_is_expected(hooks: httpx.Client, api: httpx.Client) -> None:
    body, standard = _std_base64_with_symbols()
    url_safe = standard.replace("+", "-").replace("/", "_")
    before = run_count(api, "signed")
    answer = hooks.post("/hooks/signed", content=body, headers={"X-Signature": url_safe})
    assert error_of(answer) == (401, "unauthorized", B64_FORM)
    assert run_count(api, "signed") == before
    accepted = hooks.post("/hooks/signed", content=body, headers={"X-Signature": standard})
    assert accepted.status_code == 202, accepted.text
    assert run_count(api, "signed") == before + 1


ACCEPTED = {
    "github-lower-case-hex": ("gh", lambda: gh(f"sha256={GH_MAC}"), BODY),
    "github-upper-case-hex": ("gh", lambda: gh(f"sha256={GH_MAC.upper()}"), BODY),
    "slack-exactly-now": ("slack", lambda: slack(now()), FORM),
    "slack-290s-old": ("slack", lambda: slack(now() - 290), FORM),
    "bearer-scheme-in-any-case": ("bearer", lambda: [("Authorization", f"bEaReR {HOOK_TOKEN}")], BODY),
    "named-token": ("named", lambda: [("X-Weir-Token", HOOK_TOKEN)], BODY),
}


@pytest.mark.parametrize(("path", "headers", "body"), list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_webhook_accepts_the_genuine_credential(
    hooks: httpx.Client, api: httpx.Client, path: str, headers: Callable[[], Headers], body: bytes
) -> None:
    before = run_count(api, path)
    answer = hooks.post(f"/hooks/{path}", content=body, headers=headers())
    assert answer.status_code == 202, answer.text
    assert list(answer.json()) == ["run_id"]
    assert run_count(api, path) == before + 1
    run = api.get(f"/api/runs/{answer.json()['run_id']}").json()
    assert "authorization" not in run["trigger"]["headers"]


def test_webhook_token_sent_in_a_named_header_is_not_stored_with_the_run(
    hooks: httpx.Client, api: httpx.Client
) -> None:
    answer = hooks.post("/hooks/named", content=BODY, headers={"X-Weir-Token": HOOK_TOKEN})
    assert answer.status_code == 202, answer.text
    run = api.get(f"/api/runs/{answer.json()['run_id']}").json()
    assert "x-weir-token" not in run["trigger"]["headers"]
    assert_nothing_leaked(json.dumps(run))
