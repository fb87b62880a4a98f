"""Who may use the UI: the token login (in a browser) and the CSRF and same-origin checks on every form post."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.server.serve_process import ServeProcess
from tests.ui.conftest import shoot
from weir.server.ui.session import LoginThrottle

TOKEN = "ui-t0ken-5521"


@pytest.fixture(scope="module")
def guarded(repo: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(repo, repo.parent / "guarded-state", args=["--api-token", TOKEN])
    try:
        yield process.start()
    finally:
        process.kill()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def test_with_an_api_token_the_ui_asks_for_it_refuses_a_wrong_one_and_lets_the_right_one_in(
    page: Page, guarded: ServeProcess
) -> None:
    page.goto(guarded.url + "/runs?workflow=hello")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fruns%3Fworkflow%3Dhello$"))
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    page.get_by_label("API token").fill("not-the-token")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Log in").click()
    assert navigation.value is not None
    assert navigation.value.status == 401
    expect(page.locator(".field-error")).to_have_text("That is not the server's API token.")
    assert page.context.cookies() == []
    shoot(page, "login", "refused")

    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(guarded.url + "/runs?workflow=hello")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "weir_session"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]

    page.goto(guarded.url + "/workflows/quick")
    page.get_by_role("button", name="Run quick").click()
    expect(page.locator("#run-status")).to_have_text("succeeded")  # the live part works with the cookie too

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(guarded.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))


def test_without_a_session_pages_redirect_and_posts_and_live_state_are_refused(guarded: ServeProcess) -> None:
    with guarded.client() as client:
        page = client.get("/workflows/quick")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fworkflows%2Fquick"
        assert client.get("/runs/x/live").status_code == 401
        post = client.post("/workflows/quick/run", data={"csrf": "00"})
        assert post.status_code == 401
        assert client.post("/login", data={"token": TOKEN, "next": "//evil.example/"}).headers["location"] == "/"
        assert client.get("/api/runs").status_code == 401  # a UI session is not an API token, nor the reverse
        runs = client.get("/api/runs", params={"workflow": "quick"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert runs.status_code == 200


def test_a_form_post_needs_the_csrf_token_of_its_session_and_the_same_origin(serve: ServeProcess) -> None:
    with serve.client() as client:
        before = len(client.get("/api/runs", params={"workflow": "quick"}).json()["runs"])
        form = client.get("/workflows/quick")
        assert form.status_code == 200
        assert "weir_session" in client.cookies
        token = csrf_of(form.text)

        missing = client.post("/workflows/quick/run", data={})
        assert missing.status_code == 403
        assert "security token is missing or stale" in missing.text
        assert client.post("/workflows/quick/run", data={"csrf": "0" * 64}).status_code == 403
        cross_site = client.post(
            "/workflows/quick/run", data={"csrf": token}, headers={"Origin": "http://evil.example"}
        )
        assert cross_site.status_code == 403
        assert "posted from another site" in cross_site.text
        referer = client.post(
            "/workflows/quick/run", data={"csrf": token}, headers={"Referer": "http://evil.example/page"}
        )
        assert referer.status_code == 403
        with httpx.Client(base_url=serve.url) as stranger:  # another browser: its own cookie, not this token
            stranger.get("/")
            assert stranger.post("/workflows/quick/run", data={"csrf": token}).status_code == 403
        assert len(client.get("/api/runs", params={"workflow": "quick"}).json()["runs"]) == before

        accepted = client.post("/workflows/quick/run", data={"csrf": token}, headers={"Origin": serve.url})
        assert accepted.status_code == 303
        assert accepted.headers["location"].startswith("/runs/")
        assert len(client.get("/api/runs", params={"workflow": "quick"}).json()["runs"]) == before + 1


def test_after_ten_wrong_tokens_an_address_waits_a_minute_even_with_the_right_one(repo: Path) -> None:
    process = ServeProcess(repo, repo.parent / "throttled-state", args=["--api-token", TOKEN]).start()
    try:
        with process.client() as client:
            wrong = [client.post("/login", data={"token": f"guess-{n}"}).status_code for n in range(10)]
            refused = client.post("/login", data={"token": TOKEN})
            api = client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        process.kill()

    assert wrong == [401] * 10
    assert refused.status_code == 429
    assert 50 <= int(refused.headers["retry-after"]) <= 60
    assert "Too many wrong tokens from your address" in refused.text
    assert "weir_session" not in refused.headers.get("set-cookie", "")
    assert api.status_code == 200  # the API's bearer token is not the login form: it is not held back


def test_the_login_throttle_forgets_failures_after_its_window_and_counts_each_address_alone() -> None:
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(LoginThrottle.LIMIT):
        assert throttle.wait("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
        now[0] += 1

    assert throttle.wait("10.0.0.1") == pytest.approx(LoginThrottle.WINDOW - LoginThrottle.LIMIT)
    assert throttle.wait("10.0.0.2") == 0
    now[0] += LoginThrottle.WINDOW - LoginThrottle.LIMIT + 0.5  # the first failure has aged out
    assert throttle.wait("10.0.0.1") == 0


def test_the_login_throttle_keeps_a_bounded_number_of_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LoginThrottle, "TRACKED", 3)
    throttle = LoginThrottle()
    for address in ("a", "b", "c", "d"):
        for _ in range(LoginThrottle.LIMIT):
            throttle.failed(address)

    assert throttle.wait("a") == 0  # forgotten: the least recently seen
    assert all(throttle.wait(address) > 0 for address in ("b", "c", "d"))
