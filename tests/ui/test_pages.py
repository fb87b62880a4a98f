"""The web UI in headless Chromium against a real ``weir serve``: pages, the run form, live runs, actions, escaping."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.helpers import git, write_repo
from tests.server.serve_process import ServeProcess, eventually, finished
from tests.ui.conftest import BROKEN, shoot


def test_workflows_page_lists_workflows_triggers_and_the_applied_revision(
    page: Page, serve: ServeProcess, repo: Path
) -> None:
    page.goto(serve.url + "/")
    expect(page).to_have_title("Workflows · weir")
    table = page.locator("table.workflows")
    for name in ("approval", "echo", "flaky", "hello", "quick"):
        expect(table.get_by_role("link", name=name, exact=True)).to_be_visible()
    hello = table.locator("tr", has=page.get_by_role("link", name="hello", exact=True))
    expect(hello).to_contain_text(f"{serve.url}/hooks/hello")
    expect(hello).to_contain_text("0 3 * * *")
    expect(hello).to_contain_text("Europe/Berlin")
    expect(hello.locator("time")).to_have_count(1)  # the next fire time
    expect(hello).to_contain_text("yes")
    sha = git(repo, "rev-parse", "HEAD")
    applied = page.locator("#applied")
    expect(applied.locator("code.sha")).to_have_text(sha[:12])
    expect(applied).to_contain_text("add the UI test workflows")
    expect(page.locator("#rejected")).to_have_count(0)
    shoot(page, "workflows", "laptop")
    page.set_viewport_size({"width": 390, "height": 844})
    shoot(page, "workflows", "phone")


def test_run_form_starts_a_run_and_the_run_page_follows_it_to_the_end(page: Page, serve: ServeProcess) -> None:
    page.goto(serve.url + "/workflows/hello")
    expect(page.get_by_label("name")).to_have_value("world")  # defaults are prefilled
    expect(page.get_by_label("extra")).to_have_value('{\n  "source": "ui"\n}')
    page.get_by_label("name").fill("Ada")
    page.get_by_label("times").fill("3")
    page.get_by_label("ratio").fill("0.25")
    page.get_by_label("loud").check()
    page.get_by_label("level").select_option("warning")
    page.get_by_label("extra").fill('{"k": [1, 2]}')
    page.get_by_role("button", name="Run hello").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{26}$"))
    run_id = page.url.rsplit("/", 1)[1]

    # The run sleeps a second: the page opens before it finished and follows it without a reload.
    status = page.locator("#run-status")
    assert status.inner_text() != "succeeded"
    expect(page.locator("#live-indicator")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    shoot(page, "run", "live")
    expect(status).to_have_text("succeeded", timeout=10_000)
    assert page.evaluate("window.notReloaded === true")
    expect(page.locator("#logs")).to_contain_text("Hello, Ada! x3 warning True")
    expect(page.locator("#run-outputs")).to_contain_text('"greeting": "Hello, Ada!"')
    expect(page.locator("#run-steps .step")).to_have_count(3)
    expect(page.locator("#step-main-announce .status")).to_have_text("succeeded")
    expect(page.get_by_role("button", name="Rerun", exact=True)).to_be_visible()
    expect(page.locator("#live-indicator")).to_have_count(0)
    shoot(page, "run", "finished")

    with serve.client() as client:
        run = client.get(f"/api/runs/{run_id}").json()
    assert run["params"] == {
        "name": "Ada",
        "times": 3,
        "ratio": 0.25,
        "loud": True,
        "level": "warning",
        "extra": {"k": [1, 2]},
    }
    assert run["trigger"] == {"type": "manual", "by": "ui"}

    page.set_viewport_size({"width": 390, "height": 844})
    shoot(page, "run", "phone")


def test_params_of_the_wrong_type_come_back_with_the_error_next_to_each_field(page: Page, serve: ServeProcess) -> None:
    with serve.client() as client:
        before = len(client.get("/api/runs", params={"workflow": "hello"}).json()["runs"])
    page.goto(serve.url + "/workflows/hello")
    page.get_by_label("times").fill("many")
    page.get_by_label("extra").fill("[1, 2]")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Run hello").click()
    response = navigation.value
    assert response is not None
    assert response.status == 422
    expect(page.locator(".problem")).to_contain_text("The run was not started")
    expect(page.locator("[data-param=times] .field-error")).to_have_text(
        "times must be a whole number, like 3 (got 'many')"
    )
    expect(page.locator("[data-param=extra] .field-error")).to_have_text('extra must be an object, like {"key": 1}')
    expect(page.locator("[data-param=ratio] .field-error")).to_have_count(0)  # form errors first, then the engine's
    expect(page.get_by_label("times")).to_have_value("many")  # what was typed stays
    expect(page.get_by_label("times")).to_have_attribute("aria-invalid", "true")

    # Fixed form fields, still a missing required param: the engine's message lands next to it.
    page.get_by_label("times").fill("4")
    page.get_by_label("extra").fill("{}")
    page.get_by_role("button", name="Run hello").click()
    expect(page.locator("[data-param=ratio] .field-error")).to_contain_text("ratio is required")
    expect(page.locator(".field-error")).to_have_count(1)
    shoot(page, "workflow", "param-errors")
    with serve.client() as client:
        assert len(client.get("/api/runs", params={"workflow": "hello"}).json()["runs"]) == before


def test_waiting_runs_are_resumed_with_a_json_body_or_cancelled(page: Page, serve: ServeProcess) -> None:
    page.goto(serve.url + "/workflows/approval")
    page.get_by_role("button", name="Run approval").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{26}$"))
    expect(page.locator("#run-status")).to_have_text("waiting")
    body = page.get_by_label(re.compile("Resume ask with a JSON body"))
    expect(body).to_be_visible()
    shoot(page, "run", "waiting")

    body.fill("{not json")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".resume .field-error")).to_contain_text("The body is not valid JSON")
    expect(body).to_have_value("{not json")
    body.fill('{"answer": "<b>yes</b>"}')
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".notice")).to_have_text("The waiting step was resumed.")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#run-outputs")).to_contain_text('"answer": "<b>yes</b>"')

    page.goto(serve.url + "/workflows/approval")
    page.get_by_role("button", name="Run approval").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{26}$"))
    expect(page.locator("#run-status")).to_have_text("waiting")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator(".notice")).to_contain_text("Cancel requested")
    expect(page.locator("#run-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.get_by_role("button", name="Rerun", exact=True)).to_be_visible()
    shoot(page, "run", "cancelled")


def test_a_failed_run_is_rerun_from_the_failed_step(page: Page, serve: ServeProcess) -> None:
    page.goto(serve.url + "/workflows/flaky")
    page.get_by_role("button", name="Run flaky").click()
    expect(page.locator("#run-status")).to_have_text("failed")
    failed_url = page.url
    expect(page.locator("#run-summary .error-text")).to_contain_text("second failed on purpose")
    page.get_by_role("button", name="Rerun from failed").click()
    page.wait_for_url(lambda url: url != failed_url and "/runs/" in url)
    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator("#run-summary")).to_contain_text("Rerun of")
    expect(page.locator("#step-main-first")).to_contain_text("reused from run " + failed_url.rsplit("/", 1)[1])


def test_html_in_params_outputs_and_logs_is_shown_as_text(page: Page, serve: ServeProcess) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    page.goto(serve.url + "/")
    expect(page.locator("table.workflows")).to_contain_text("Echo text back, <b>not bold</b>")
    page.goto(serve.url + "/workflows/echo")
    expect(page.get_by_label("text")).to_have_value("<script>alert(1)</script>")
    page.get_by_label("text").fill(evil)
    page.get_by_role("button", name="Run echo").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f]{26}$"))
    # The log line arrives through the page's script while the run goes on; the rest through the refresh.
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#logs .msg")).to_have_text(evil)
    expect(page.locator("#run-outputs")).to_contain_text(evil.replace('"', '\\"'))
    page.locator("#step-main-twice summary", has_text="2 items").click()
    expect(page.locator("#step-main-twice table")).to_contain_text(evil.replace('"', '\\"') + " 2")
    assert page.locator("#run img, #run script").count() == 0
    page.reload()
    expect(page.locator("#logs .msg")).to_have_text(evil)
    assert page.locator("#run img, #run script").count() == 0
    assert dialogs == []
    shoot(page, "run", "escaped")


def test_unknown_runs_and_workflows_get_a_404_page(page: Page, serve: ServeProcess) -> None:
    response = page.goto(serve.url + "/runs/01aaaaaaaaaaaaaaaaaaaaaaaa")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("main")).to_contain_text("There is no run '01aaaaaaaaaaaaaaaaaaaaaaaa'.")
    response = page.goto(serve.url + "/workflows/<nope>")
    assert response is not None
    assert response.status == 404
    expect(page.locator("main")).to_contain_text("There is no workflow '<nope>'.")
    shoot(page, "not-found", "workflow")


def test_runs_page_filters_by_workflow_and_status_and_pages(page: Page, serve: ServeProcess) -> None:
    with serve.client() as client:
        for run_id in [client.post("/api/workflows/quick/runs", json={}).json()["run_id"] for _ in range(3)]:
            finished(client, run_id)
        listed = [r["id"] for r in client.get("/api/runs", params={"workflow": "quick"}).json()["runs"]]
    page.goto(serve.url + "/runs")
    page.get_by_label("Workflow").select_option("quick")
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/runs\?workflow=quick&status=succeeded$"))
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(len(listed))
    expect(rows.locator("td[data-label=Workflow]")).to_have_text(["quick"] * len(listed))
    page.goto(serve.url + "/runs?workflow=quick&limit=2")
    assert rows.locator("td:first-child").all_inner_texts() == listed[:2]  # newest first, as the API lists them
    page.get_by_role("link", name="Next page »").click()
    expect(rows.locator("td:first-child")).to_have_text(listed[2:4])
    expect(page.get_by_role("link", name="« First page")).to_be_visible()
    page.goto(serve.url + "/runs?status=bogus")
    expect(page.locator(".problem")).to_contain_text("'bogus' is not a run status")
    shoot(page, "runs", "laptop")


def test_a_rejected_revision_is_shown_with_its_findings(page: Page, serve: ServeProcess, repo: Path) -> None:
    good = git(repo, "rev-parse", "HEAD")
    broken = write_repo(repo, {"workflows/broken.toml": BROKEN}, message="break it")
    try:

        def rejected() -> object:
            return httpx.get(serve.url + "/api/status").json()["rejected"]

        assert eventually(rejected, timeout=5)
        page.goto(serve.url + "/")
        card = page.locator("#rejected")
        expect(card).to_have_class(re.compile(r"\balert\b"))
        expect(card.locator("code.sha")).to_have_text(broken[:12])
        expect(card).to_contain_text("break it")
        expect(card).to_contain_text("the applied revision above keeps serving")
        expect(card.locator("pre.findings")).to_contain_text(
            re.compile(r"workflows/broken\.toml:\d+:\d+: error W203 step 'only' needs unknown step 'nobody'")
        )
        expect(page.locator("#applied").locator("code.sha")).to_have_text(good[:12])
        shoot(page, "workflows", "rejected")
    finally:
        fixed = write_repo(repo, {"workflows/broken.toml": None}, message="fix it")
        assert eventually(lambda: httpx.get(serve.url + "/api/status").json()["revision"]["sha"] == fixed, timeout=5)
    page.reload()
    expect(page.locator("#rejected")).to_contain_text("A newer revision has been applied since.")
    expect(page.locator("#rejected")).not_to_have_class(re.compile(r"\balert\b"))
