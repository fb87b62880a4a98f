"""Login sessions and CSRF tokens of the UI, without a server."""

from __future__ import annotations

import pytest

from weir.server.ui.session import SESSION_SECONDS, Sessions, safe_next


def test_a_session_cookie_is_signed_with_the_token_and_expires() -> None:
    now = [1_000_000.0]
    sessions = Sessions("s3cret", "http://127.0.0.1:8080", clock=lambda: now[0])
    cookie = sessions.new_cookie()
    assert "s3cret" not in cookie
    assert sessions.valid_cookie(cookie)
    assert Sessions("s3cret", "https://other.example", clock=lambda: now[0]).valid_cookie(cookie)  # any replica
    assert not Sessions("other", "http://127.0.0.1:8080", clock=lambda: now[0]).valid_cookie(cookie)
    expires, _, mac = cookie.partition(".")
    assert not sessions.valid_cookie(f"{int(expires) + 1}.{mac}")
    assert not sessions.valid_cookie("garbage")
    now[0] += SESSION_SECONDS + 1
    assert not sessions.valid_cookie(cookie)


def test_the_token_is_compared_whole() -> None:
    sessions = Sessions("s3cret", "http://127.0.0.1:8080")
    assert sessions.token_matches("s3cret")
    assert sessions.token_matches(" s3cret\n")
    assert not sessions.token_matches("s3cre")
    assert not sessions.token_matches("")


def test_csrf_tokens_belong_to_one_session() -> None:
    sessions = Sessions(None, "http://127.0.0.1:8080")
    one, two = sessions.new_cookie(), sessions.new_cookie()
    assert one != two
    assert sessions.csrf_token(one) != sessions.csrf_token(two)
    assert sessions.csrf_token(one) == sessions.csrf_token(one)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/runs?workflow=a", "/runs?workflow=a"),
        (None, "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("runs", "/"),
    ],
)
def test_login_only_returns_to_a_path_on_this_server(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
