"""A real ``weir serve`` on a real Git repository, and headless Chromium (Debian's, driven by Playwright) to look at it.

The browser is the system's ``/usr/bin/chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it);
Playwright never downloads one. Without it the browser tests skip with the reason, and fail under CI.
Screenshots go to ``test-artifacts/ui/`` (git-ignored) so a person can look at them after a run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import write_repo
from tests.server.serve_process import REPO, ServeProcess
from tests.server.workflows import APPROVAL, FLAKY

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "ui"

HELLO = """
description = "Greet someone, after a short pause"

[params.name]
type = "string"
default = "world"
description = "Who to greet."

[params.times]
type = "integer"
default = 2

[params.ratio]
type = "number"
required = true

[params.loud]
type = "boolean"
default = false

[params.level]
type = "string"
enum = ["info", "warning"]
default = "info"

[params.extra]
type = "object"
default = { source = "ui" }

[[on.webhook]]
path = "hello"
auth = { type = "none" }
params = { name = "{{ payload.name }}", ratio = 1 }

[[on.schedule]]
cron = "0 3 * * *"
timezone = "Europe/Berlin"
params = { ratio = 0.5 }

[[steps]]
id = "greet"
uses = "transform"
with.output = { greeting = "Hello, {{ params.name }}!" }

[[steps]]
id = "pause"
uses = "sleep"
needs = ["greet"]
with = { duration = "1s" }

[[steps]]
id = "announce"
uses = "log"
needs = ["pause"]
with = { message = "{{ steps.greet.output.greeting }} x{{ params.times }} {{ params.level }} {{ params.loud }}" }

[outputs]
greeting = "{{ steps.greet.output.greeting }}"
extra = "{{ params.extra }}"
"""


ECHO = """
description = "Echo text back, <b>not bold</b>"

[params.text]
type = "string"
default = "<script>alert(1)</script>"

[[steps]]
id = "pause"
uses = "sleep"
with = { duration = "1s" }

[[steps]]
id = "say"
uses = "log"
needs = ["pause"]
with = { message = "{{ params.text }}" }

[[steps]]
id = "twice"
uses = "transform"
foreach = [1, 2]
with.output = "{{ params.text }} {{ item }}"

[outputs]
text = "{{ params.text }}"
"""


QUICK = """
[[steps]]
id = "only"
uses = "transform"
with.output = 1
"""

BROKEN = """
[[steps]]
id = "only"
uses = "log"
needs = ["nobody"]
with = { message = "broken" }
"""

WORKFLOWS = {
    "workflows/hello.toml": HELLO,
    "workflows/approval.toml": APPROVAL,
    "workflows/echo.toml": ECHO,
    "workflows/flaky.toml": FLAKY,
    "workflows/quick.toml": QUICK,
}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must run the browser tests; .ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        _unavailable(f"the browser tests need Debian's chromium at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the browser tests need Playwright's Python package: pip install -e '.[test]'")
    for stale in ARTIFACTS.glob("*.png"):
        stale.unlink()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="package")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui") / "automation"
    write_repo(root, WORKFLOWS, message="add the UI test workflows")
    return root


@pytest.fixture(scope="package")
def serve(repo: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(repo, repo.parent / "state")
    try:
        yield process.start()
    finally:
        process.kill()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (no cookies) at laptop width; a failing test leaves a screenshot."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        if getattr(request.node, "failed", False):
            shoot(page, request.node.name, "failure")
        context.close()


def shoot(page: Page, test: str, label: str, **options: Any) -> Path:
    """A full-page screenshot into test-artifacts/ui/ (kept after the run, never committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', test)}-{label}.png"
    page.screenshot(path=str(path), full_page=True, **options)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call" and report.failed:
        item.failed = True  # type: ignore[attr-defined]
    return report
