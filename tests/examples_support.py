"""Local services and a harness for the tests that run the example workflows of ``workflows/``.

``tests/test_examples_run.py`` and ``tests/test_examples_connectors.py`` run a copy of the example
directory in a ``Harness`` against real local services:

- the business APIs (``tests/fakes/business_apis.py``: shop, CRM, analytics, payments, the HTTP
  object store);
- the fake Slack Web API, the fake PagerDuty Events API v2 and the fake LLM providers (OpenAI,
  Anthropic, Ollama wire formats), each served by uvicorn in a thread;
- an aiosmtpd server with STARTTLS and AUTH;
- a SQLite ``warehouse`` created from ``workflows/sql/warehouse.sql``.

The copy's ``weir.toml`` differs from the example only in what a deployment knows: the SMTP
port (587 is not free for a test) with the test CA, and the API roots of Slack, PagerDuty,
OpenAI and Anthropic. Secrets and ``WEIR_VAR_*`` settings are handed to the harness as a
server gets them from its environment.

The fixtures are imported by the test modules that use them::

    from tests.examples_support import Services, backoff, harness, served, services  # noqa: F401
"""

from __future__ import annotations

import shutil
import sqlite3
import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.fakes import llm as fake_llm, pagerduty as fake_pagerduty, slack as fake_slack
from tests.fakes.business_apis import (
    ANALYTICS_KEY,
    CRM_TOKEN,
    PAYMENTS_KEY,
    SHOP_TOKEN,
    STORE_PASSWORD,
    STORE_USER,
    FakeApis,
)
from tests.fakes.llm import FakeLlm
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.server import free_port, serve_in_thread
from tests.fakes.slack import FakeSlack
from weir.records import RunRecord, StepRecord
from weir.testing import Harness
from weir.workflows import units
from weir.workflows.engine import utcnow
from weir.workflows.retry import backoff_delay

EXAMPLES = Path(__file__).resolve().parents[1] / "workflows"
SMTP_USER, SMTP_PASSWORD = "automations", "smtp-pass-8531"
CHANNELS = [
    "ops-alerts",
    "account-risk",
    "compliance",
    "sales",
    "orders",
    "search",
    "finance-ops",
    "critical",
    "warnings",
    "refund-approvals",
]
"""The Slack channels the examples post to; the bot is a member of each."""
REPORT_STORE_TOKEN = "report-store-token-1357"


# --- local services ------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        found = []
        for envelope in self.envelopes:
            raw = (envelope.original_content or b"").replace(b"\r\n", b"\n")
            message = message_from_bytes(raw, policy=policy.default)
            assert isinstance(message, EmailMessage)
            found.append(message)
        return found

    def sent(self) -> list[tuple[str, str]]:
        """(To, Subject) of every message, in order."""
        return [(str(m["To"]), str(m["Subject"])) for m in self.messages()]


def _authenticate(server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (SMTP_USER.encode(), SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


@dataclass
class Services:
    apis: FakeApis
    apis_url: str
    slack: FakeSlack
    slack_url: str
    mailbox: Mailbox
    smtp_port: int
    ca_file: str
    pagerduty: FakePagerDuty
    pagerduty_url: str
    llm: FakeLlm
    llm_url: str

    def slack_posts(self) -> list[tuple[str, str]]:
        """(channel, text) of every chat.postMessage, in order."""
        return [(r.json["channel"], r.json["text"]) for r in self.slack.requests if isinstance(r.json, dict)]

    def pagerduty_events(self) -> list[dict[str, Any]]:
        """The Events API v2 bodies PagerDuty received, in order."""
        return [r.json for r in self.pagerduty.requests if isinstance(r.json, dict)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(tls)
    mailbox, port = Mailbox(), free_port()
    smtp = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=_authenticate,
        auth_required=True,
    )
    apis, slack, pagerduty, llm = FakeApis(), FakeSlack(), FakePagerDuty(), FakeLlm()
    smtp.start()
    try:
        with ExitStack() as stack:
            urls = [stack.enter_context(serve_in_thread(fake.app)) for fake in (apis, slack, pagerduty, llm)]
            apis_url, slack_url, pagerduty_url, llm_url = urls
            yield Services(
                apis, apis_url, slack, slack_url, mailbox, port, str(ca_file), pagerduty, pagerduty_url, llm, llm_url
            )
    finally:
        smtp.stop()


@pytest.fixture
def services(served: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    channels = {f"C0{name.upper().replace('-', '')}": name for name in CHANNELS}
    monkeypatch.setattr(fake_slack, "CHANNELS", {**fake_slack.CHANNELS, **channels})
    monkeypatch.setattr(fake_slack, "MEMBER_OF", fake_slack.MEMBER_OF | set(channels))
    fakes = (served.apis, served.slack, served.pagerduty, served.llm)
    for fake in fakes:
        fake.reset()
    served.mailbox.envelopes.clear()
    yield served
    for fake in fakes:
        fake.reset()


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    """Record the waits the engine computes between attempts, and wait 1/100 of each.

    The examples' retry delays are production delays (2 s, 4 s, ... with jitter); the waits the
    engine computes are asserted, only the sleeping is shortened.
    """
    waits: list[tuple[int, float]] = []

    def recorded(policy: Any, attempt: int, **kwargs: Any) -> float:
        wait = backoff_delay(policy, attempt, **kwargs)
        waits.append((attempt, wait))
        return wait / 100

    monkeypatch.setattr(units, "backoff_delay", recorded)
    return waits


class Clock:
    """The harness's clock: real time moved forward by what the test ``advance``\\ s it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.offset = timedelta(0) if start is None else start - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


# --- the example repository in a harness -----------------------------------------------------------


def _local_config(text: str, services: Services) -> str:
    """The example weir.toml, with the SMTP port and CA and the API roots of the local services."""
    replacements = {
        "port = 587\n": f"port = {services.smtp_port}\nca_file = '{services.ca_file}'\n",
        "[connections.slack]\n": f"[connections.slack]\nbase_url = '{services.slack_url}/api'\n",
        "[connections.pagerduty]\n": f"[connections.pagerduty]\nbase_url = '{services.pagerduty_url}'\n",
        "[connections.openai]\n": f"[connections.openai]\nbase_url = '{services.llm_url}/v1'\n",
        "[connections.anthropic]\n": f"[connections.anthropic]\nbase_url = '{services.llm_url}'\n",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"workflows/weir.toml no longer has {old!r} once"
        text = text.replace(old, new)
    return text


def harness(root: Path, services: Services, *, clock: Callable[[], datetime] = utcnow) -> Harness:
    """A harness on a copy of the example directory under ``root`` (made once) and its warehouse."""
    directory, warehouse = root / "workflows", root / "warehouse.db"
    if not directory.exists():
        shutil.copytree(EXAMPLES, directory)
        config = directory / "weir.toml"
        config.write_text(_local_config(config.read_text(encoding="utf-8"), services), encoding="utf-8")
    if not warehouse.exists():
        with closing(sqlite3.connect(warehouse)) as db:
            db.executescript((EXAMPLES / "sql" / "warehouse.sql").read_text(encoding="utf-8"))
    url = services.apis_url
    secrets = {
        "WAREHOUSE_URL": f"sqlite:///{warehouse}",
        "SLACK_BOT_TOKEN": fake_slack.TOKEN,
        "PAGERDUTY_ROUTING_KEY": fake_pagerduty.ROUTING_KEY,
        "SMTP_HOST": "localhost",
        "SMTP_USERNAME": SMTP_USER,
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "OPENAI_API_KEY": fake_llm.OPENAI_KEY,
        "ANTHROPIC_API_KEY": fake_llm.ANTHROPIC_KEY,
        "CRM_URL": f"{url}/crm",
        "CRM_TOKEN": CRM_TOKEN,
        "ANALYTICS_API_KEY": ANALYTICS_KEY,
        "PAYMENTS_URL": f"{url}/payments",
        "PAYMENTS_API_KEY": PAYMENTS_KEY,
        "SHOP_API_URL": f"{url}/shop",
        "SHOP_API_TOKEN": SHOP_TOKEN,
        "STORE_USER": STORE_USER,
        "STORE_PASSWORD": STORE_PASSWORD,
        "REPORT_STORE_TOKEN": REPORT_STORE_TOKEN,
    }
    environ = {
        "WEIR_VAR_ANALYTICS_URL": f"{url}/analytics",
        "WEIR_VAR_STORE_URL": f"{url}/store",
        "WEIR_VAR_REPORT_STORE_URL": f"{url}/store/reports",
        "WEIR_VAR_OLLAMA_URL": services.llm_url,
    }
    return Harness(root, secrets=secrets, environ=environ, clock=clock)


def sql(root: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` on the warehouse of the harness under ``root``."""
    with closing(sqlite3.connect(root / "warehouse.db")) as db:
        return db.execute(query, params).fetchall()


def statuses(steps: dict[str, StepRecord]) -> dict[str, str]:
    return {key: str(record.status) for key, record in steps.items()}


async def attempts(h: Harness, run_id: str, step_id: str) -> list[StepRecord]:
    """Every attempt record of one step (not foreach items), in order."""
    records = [r for r in await h.store.get_steps(run_id) if r.step_id == step_id and r.item_index < 0]
    return sorted((r for r in records if r.attempt > 0), key=lambda r: r.attempt)


async def child(h: Harness, steps: dict[str, StepRecord], step_id: str) -> RunRecord:
    """The child run a ``workflow`` step started."""
    child_id = steps[step_id].child_run_id
    assert child_id is not None, f"step '{step_id}' started no child run"
    run = await h.store.get_run(child_id)
    assert run is not None
    return run
