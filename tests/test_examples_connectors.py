"""The example workflows of the connector patterns run end to end with the real engine.

Patterns 2, 3, 6, 7, 8, 9, 11 and 14 of the pattern table: each test runs a copy of
``workflows/`` in a ``Harness`` against the local services of ``tests/examples_support.py``
(business APIs with an HTTP object store, Slack, PagerDuty and LLM fakes that speak the real
wire formats, aiosmtpd, a SQLite warehouse) and checks what a user sees: the run's status,
outputs and token usage, which steps ran, were skipped or failed, and what each service received.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests import examples_support
from tests.examples_support import Clock, Services, attempts, child, harness, sql, statuses
from tests.fakes.business_apis import STORE_PASSWORD, STORE_USER
from weir.records import StepRecord
from weir.testing import Harness
from weir.workflows.cron import parse_schedule

pytestmark = pytest.mark.anyio
served, services, backoff = examples_support.served, examples_support.services, examples_support.backoff
"""The fixtures of ``tests/examples_support.py``, made visible to pytest in this module."""


def insert(root: Path, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` of the warehouse under ``root``."""
    columns = list(rows[0])
    statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"  # noqa: S608
    with closing(sqlite3.connect(root / "warehouse.db")) as db, db:
        db.executemany(statement, [tuple(row[c] for c in columns) for row in rows])


def most_at_once(records: Iterable[StepRecord]) -> int:
    """The most records that were running at the same moment."""
    intervals = []
    for record in records:
        assert record.started_at is not None
        assert record.finished_at is not None
        intervals.append((record.started_at, record.finished_at))
    return max(sum(1 for start, end in intervals if start <= moment < end) for moment, _ in intervals)


# --- pattern 2: bulk import with batching ---------------------------------------------------------


async def test_bulk_user_import_writes_10000_users_in_batches_of_100_and_mails_a_summary(
    tmp_path: Path, services: Services
) -> None:
    users = [{"email": f"user{n:05d}@example.com", "name": f"User {n}"} for n in range(10_000)]
    async with harness(tmp_path, services) as h:
        insert(tmp_path, "users", [{"email": "user00042@example.com", "name": "Old Name"}])
        run = await h.run("bulk-user-import", {"users": users, "source": "hr-system"})
        steps = await h.steps(run.id)

    assert run.status == "succeeded", run.error
    assert run.outputs == {"total": 10_000, "batches": 100, "written": 10_000}
    batches = {key: record for key, record in steps.items() if key.startswith("insert_batches[")}
    assert sorted(batches) == sorted(f"insert_batches[{i}]" for i in range(100))
    assert {record.status for record in batches.values()} == {"succeeded"}
    assert [batches[f"insert_batches[{i}]"].input["many"] for i in (0, 99)] == [users[:100], users[9900:]]
    assert most_at_once(batches.values()) <= 4  # parallel = 4
    assert {step: status for step, status in statuses(steps).items() if step not in batches} == {
        "prepare": "succeeded",
        "start_job": "succeeded",
        "insert_batches": "succeeded",
        "finish_job": "succeeded",
        "summary": "succeeded",
    }
    assert sql(tmp_path, "SELECT count(*) FROM users") == [(10_000,)]
    assert sql(tmp_path, "SELECT name FROM users WHERE email = 'user00042@example.com'") == [("User 42",)]  # upsert
    assert sql(tmp_path, "SELECT run_id, source, total, batches, imported, status, error FROM import_jobs") == [
        (run.id, "hr-system", 10_000, 100, 10_000, "done", None)
    ]
    assert services.mailbox.sent() == [("data-team@example.com", "User import done: 10000 users from hr-system")]
    body = services.mailbox.messages()[0].get_content()
    assert f"The import of run {run.id} finished." in body
    assert "Users received:   10000" in body
    assert "Batches of 100:   100" in body
    assert "Rows written:     10000" in body


async def test_bulk_user_import_imports_the_good_batches_and_marks_the_job_failed(
    tmp_path: Path, services: Services, backoff: list[tuple[int, float]]
) -> None:
    users: list[dict[str, Any]] = [{"email": f"u{n}@example.com", "name": f"U{n}"} for n in range(250)]
    users[150]["name"] = None  # NOT NULL: the second batch fails, as a whole (one transaction)
    async with harness(tmp_path, services) as h:
        run = await h.run("bulk-user-import", {"users": users})
        steps = await h.steps(run.id)
        tries = [r for r in await h.store.get_steps(run.id) if (r.step_id, r.item_index) == ("insert_batches", 1)]

    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("step 'insert_batches' failed: 1 of 3 items failed; item 1: db.execute failed: ")
    assert "NOT NULL constraint failed: users.name" in run.error
    assert [steps[f"insert_batches[{i}]"].status for i in range(3)] == ["succeeded", "failed", "succeeded"]
    assert [(r.attempt, r.error_kind) for r in tries] == [(1, "permanent")]  # bad data: no retry
    assert backoff == []
    assert statuses(steps) == {
        "prepare": "succeeded",
        "start_job": "succeeded",
        "insert_batches": "failed",
        "insert_batches[0]": "succeeded",
        "insert_batches[1]": "failed",
        "insert_batches[2]": "succeeded",
        "finish_job": "skipped",
        "summary": "skipped",
    }
    assert sql(tmp_path, "SELECT count(*) FROM users") == [(150,)]  # batches 0 and 2
    [(status, imported, error)] = sql(tmp_path, "SELECT status, imported, error FROM import_jobs")
    assert (status, imported) == ("failed", None)  # by [[on_failure]]
    assert error == run.error
    assert services.mailbox.sent() == []


# --- pattern 3: alert routing by severity and time of day -----------------------------------------

TUESDAY_10_UTC = datetime(2024, 11, 5, 10, 0, tzinfo=UTC)
TUESDAY_22_UTC = datetime(2024, 11, 5, 22, 0, tzinfo=UTC)
SATURDAY_10_UTC = datetime(2024, 11, 9, 10, 0, tzinfo=UTC)


async def test_alert_routing_pages_and_posts_to_critical_for_a_critical_alert(
    tmp_path: Path, services: Services
) -> None:
    params = {"severity": "critical", "title": "Disk full on db-1", "service": "db", "details": {"disk": "/var"}}
    async with harness(tmp_path, services, clock=Clock(TUESDAY_10_UTC)) as h:
        run = await h.run("alert-routing", params)
        steps = await h.steps(run.id)

    assert run.status == "succeeded", run.error
    assert run.outputs == {"route": "page", "business_hours": True, "paged": True}
    assert statuses(steps) == {
        "classify": "succeeded",
        "record": "succeeded",
        "page": "succeeded",
        "slack_critical": "succeeded",
        "email_warning": "skipped",
        "slack_warning": "skipped",
    }
    [event] = services.pagerduty_events()
    dedup_key = f"{run.id}:page"  # derived from run and step: a retry updates the same alert
    assert event == {
        "routing_key": event["routing_key"],
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": "[db] Disk full on db-1",
            "source": "db",
            "severity": "critical",
            "custom_details": {"disk": "/var"},
        },
    }
    assert services.pagerduty.alerts == {dedup_key: "triggered"}
    assert services.slack_posts() == [
        ("#critical", f":rotating_light: *db*: Disk full on db-1\nPaged on-call (incident {dedup_key})")
    ]
    assert services.mailbox.sent() == []
    assert sql(tmp_path, "SELECT run_id, severity, service, title, details, route FROM alerts") == [
        (run.id, "critical", "db", "Disk full on db-1", '{"disk":"/var"}', "page")
    ]


async def test_alert_routing_says_paging_failed_when_pagerduty_is_down(
    tmp_path: Path, services: Services, backoff: list[tuple[int, float]]
) -> None:
    services.pagerduty.fail_next(5, 503, body={"status": "unavailable", "message": "try later"})
    async with harness(tmp_path, services, clock=Clock(TUESDAY_10_UTC)) as h:
        run = await h.run("alert-routing", {"severity": "critical", "title": "API down", "service": "api"})
        steps = await h.steps(run.id)
        tries = await attempts(h, run.id, "page")

    assert run.status == "succeeded", run.error  # on_error = "continue": Slack still hears about it
    assert run.outputs == {"route": "page", "business_hours": True, "paged": False}
    assert (steps["page"].status, steps["slack_critical"].status) == ("failed", "succeeded")
    assert [(r.attempt, r.error_kind) for r in tries] == [(n, "transient") for n in range(1, 6)]
    assert "PagerDuty answered HTTP 503" in (steps["page"].error or "")
    assert len(services.pagerduty.requests) == 5
    assert services.slack_posts() == [
        ("#critical", ":rotating_light: *api*: API down\n:bangbang: PAGING FAILED, call the on-call engineer")
    ]


@pytest.mark.parametrize(
    ("now", "business_hours", "to"),
    [
        (TUESDAY_10_UTC, True, "team-ops@example.com"),
        (TUESDAY_22_UTC, False, "oncall@example.com"),
        (SATURDAY_10_UTC, False, "oncall@example.com"),
    ],
    ids=["business-hours", "night", "weekend"],
)
async def test_alert_routing_emails_a_warning_to_the_team_or_on_call_by_time_of_day(
    tmp_path: Path, services: Services, now: datetime, business_hours: bool, to: str
) -> None:
    params = {"severity": "warning", "title": "Disk 85% on db-1", "service": "db"}
    async with harness(tmp_path, services, clock=Clock(now)) as h:
        run = await h.run("alert-routing", params)
        steps = await h.steps(run.id)

    assert run.status == "succeeded", run.error
    assert run.outputs == {"route": "notify", "business_hours": business_hours, "paged": False}
    assert statuses(steps) == {
        "classify": "succeeded",
        "record": "succeeded",
        "page": "skipped",
        "slack_critical": "skipped",
        "email_warning": "succeeded",
        "slack_warning": "succeeded",
    }
    assert services.mailbox.sent() == [(to, "[warning] db: Disk 85% on db-1")]
    body = services.mailbox.messages()[0].get_content()
    received = steps["classify"].output["received_at"]
    assert received.startswith(now.date().isoformat())
    when = "business hours" if business_hours else "off hours: sent to on-call"
    assert f"Received: {received} ({when})" in body
    assert services.slack_posts() == [("#warnings", ":warning: *db*: Disk 85% on db-1")]
    assert services.pagerduty.requests == []
    assert sql(tmp_path, "SELECT severity, route FROM alerts") == [("warning", "notify")]


async def test_alert_routing_only_records_an_info_alert(tmp_path: Path, services: Services) -> None:
    async with harness(tmp_path, services) as h:
        run = await h.run("alert-routing", {"severity": "info", "title": "Deploy finished"})
        steps = await h.steps(run.id)

    assert run.status == "succeeded", run.error
    assert run.outputs["route"] == "record"
    assert run.outputs["paged"] is False
    assert [step for step, status in statuses(steps).items() if status == "succeeded"] == ["classify", "record"]
    assert sql(tmp_path, "SELECT severity, service, title, details, route FROM alerts") == [
        ("info", "unknown", "Deploy finished", "{}", "record")
    ]
    assert services.pagerduty.requests == []
    assert services.slack.requests == []
    assert services.mailbox.sent() == []


# --- pattern 6: daily sales export ------------------------------------------------------------------

BERLIN_0200_IN_NOVEMBER = datetime(2024, 11, 6, 1, 0, tzinfo=UTC)  # CET, UTC+1


def seed_sales(root: Path) -> None:
    rows = [
        ("o-1", "2024-11-05T08:15:00+00:00", "c-1", "EUR", 59.9, "shipped"),
        ("o-2", "2024-11-05T13:40:00+00:00", "c-2", "EUR", 19.95, "new"),
        ("o-3", "2024-11-05T21:05:00+00:00", "c-1", "EUR", 100, "shipped"),
        ("o-4", "2024-11-05T22:00:00+00:00", "c-3", "EUR", 999, "cancelled"),  # not exported
        ("o-5", "2024-11-04T23:59:59+00:00", "c-3", "EUR", 5, "shipped"),  # the day before
        ("o-6", "2024-11-06T00:30:00+00:00", "c-3", "EUR", 7, "shipped"),  # today
    ]
    keys = ["id", "created_at", "customer_id", "currency", "total", "status"]
    insert(root, "orders", [dict(zip(keys, row, strict=True)) for row in rows])


async def test_daily_sales_export_puts_yesterdays_csv_into_the_store_and_mails_the_row_count(
    tmp_path: Path, services: Services
) -> None:
    async with harness(tmp_path, services, clock=Clock(BERLIN_0200_IN_NOVEMBER)) as h:
        seed_sales(tmp_path)
        [schedule] = h.engine.deployment().workflow("daily-sales-export").model.on.schedule
        # what the scheduler submits when the schedule fires
        run = await h.run("daily-sales-export", trigger={"type": "schedule", "fire_time": "2024-11-06T01:00:00Z"})
        steps = await h.steps(run.id)

    # the schedule: 02:00 in Berlin, which is 01:00 UTC in winter and 00:00 UTC in summer
    cron = parse_schedule(schedule.cron, schedule.every, schedule.timezone)
    assert cron.next_fire_times(datetime(2024, 11, 5, 12, tzinfo=UTC), 1) == [BERLIN_0200_IN_NOVEMBER]
    assert cron.next_fire_times(datetime(2024, 7, 1, 12, tzinfo=UTC), 1) == [datetime(2024, 7, 2, 0, tzinfo=UTC)]
    # the run at that time exports yesterday
    assert run.status == "succeeded", run.error
    assert run.outputs == {"day": "2024-11-05", "rows": 3, "file": "exports/sales/sales-2024-11-05.csv"}
    assert statuses(steps) == dict.fromkeys(["period", "orders", "csv", "upload", "mail"], "succeeded")
    assert steps["orders"].input["params"] == {"day": "2024-11-05", "next_day": "2024-11-06"}
    [put] = services.apis.of("store", "PUT", "/exports/sales/sales-2024-11-05.csv")
    assert (
        put.headers["authorization"] == "Basic " + base64.b64encode(f"{STORE_USER}:{STORE_PASSWORD}".encode()).decode()
    )
    content, content_type = services.apis.objects["/exports/sales/sales-2024-11-05.csv"]
    assert content_type == "text/csv; charset=utf-8"
    assert content.decode().startswith("id,created_at,customer_id,currency,total,status\r\n")
    assert list(csv.DictReader(io.StringIO(content.decode()))) == [
        {"id": "o-1", "created_at": "2024-11-05T08:15:00+00:00", "customer_id": "c-1", "currency": "EUR",
         "total": "59.9", "status": "shipped"},
        {"id": "o-2", "created_at": "2024-11-05T13:40:00+00:00", "customer_id": "c-2", "currency": "EUR",
         "total": "19.95", "status": "new"},
        {"id": "o-3", "created_at": "2024-11-05T21:05:00+00:00", "customer_id": "c-1", "currency": "EUR",
         "total": "100", "status": "shipped"},
    ]  # fmt: skip
    assert services.mailbox.sent() == [("finance@example.com", "Sales export 2024-11-05: 3 orders")]
    body = services.mailbox.messages()[0].get_content()
    assert "exports/sales/sales-2024-11-05.csv" in body
    assert "Orders:  3\n" in body
    assert "Revenue: 179.85\n" in body
    assert services.slack_posts() == []


async def test_daily_sales_export_tells_finance_ops_when_the_store_is_down(
    tmp_path: Path, services: Services, backoff: list[tuple[int, float]]
) -> None:
    services.apis.fail("store", "PUT", "/exports/sales/sales-2024-11-05.csv", 503, {"error": "maintenance"}, times=None)
    async with harness(tmp_path, services) as h:
        seed_sales(tmp_path)
        run = await h.run("daily-sales-export", {"day": "2024-11-05", "recipients": ["cfo@example.com"]})
        steps = await h.steps(run.id)
        tries = await attempts(h, run.id, "upload")

    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("step 'upload' failed: PUT ")
    assert "returned HTTP 503" in run.error
    assert statuses(steps) == {
        "period": "succeeded",
        "orders": "succeeded",
        "csv": "succeeded",
        "upload": "failed",
        "mail": "skipped",
    }
    assert [(r.attempt, r.error_kind) for r in tries] == [(n, "transient") for n in range(1, 5)]
    assert [attempt for attempt, _ in backoff] == [1, 2, 3]
    assert len(services.apis.of("store", "PUT", "/exports/sales/sales-2024-11-05.csv")) == 4
    assert services.apis.objects == {}
    assert services.mailbox.sent() == []
    [(channel, text)] = services.slack_posts()
    assert channel == "#finance-ops"
    assert text.startswith(f":x: The daily sales export failed (run {run.id}): step 'upload' failed: PUT ")


# --- pattern 7: circuit breaker ----------------------------------------------------------------------


async def test_payment_options_circuit_opens_after_5_failures_and_the_fallback_answers_without_calling(
    tmp_path: Path, services: Services, backoff: list[tuple[int, float]]
) -> None:
    apis = services.apis
    apis.payment_methods["DE"] = ["card", "sepa_debit", "paypal"]
    params = {"country": "DE", "amount": 42.5}
    async with harness(tmp_path, services) as h:
        healthy = await h.run("payment-options", params)
        apis.fail("payments", "GET", "/payment-methods", 503, {"error": "overloaded"}, times=None)
        down = [await h.run("payment-options", params) for _ in range(3)]
        calls_when_open = len(apis.of("payments", "GET", "/payment-methods"))
        apis.heal()  # the provider recovers, but the circuit stays open for its 60 s
        still_open = await h.run("payment-options", params)
        tries = [await attempts(h, run.id, "methods") for run in (*down, still_open)]
        open_steps = await h.steps(still_open.id)
        logs = [log.message for log in await h.store.get_logs(still_open.id)]

    assert healthy.status == "succeeded", healthy.error
    assert healthy.outputs == {"methods": ["card", "sepa_debit", "paypal"], "degraded": False}
    first = apis.of("payments", "GET", "/payment-methods")[0]
    assert first.query == {"country": "DE", "amount": "42.5", "currency": "EUR"}
    # 2 + 2 + 1 failed calls open the circuit; after that no call reaches the provider
    assert [[(r.attempt, r.error_kind) for r in run_tries] for run_tries in tries] == [
        [(1, "transient"), (2, "transient")],
        [(1, "transient"), (2, "transient")],
        [(1, "transient"), (2, "circuit_open")],
        [(1, "circuit_open")],  # circuit-open errors are not retried
    ]
    assert calls_when_open == 1 + 5
    assert len(apis.of("payments", "GET", "/payment-methods")) == 1 + 5  # none after the circuit opened
    for run in (*down, still_open):
        assert run.status == "succeeded", run.error
        assert run.outputs == {"methods": ["card"], "degraded": True}  # the fallback
    assert statuses(open_steps) == {"methods": "failed", "note_degraded": "succeeded"}
    error = open_steps["methods"].error or ""
    assert error.startswith("circuit of connection 'payments' is open after 5 consecutive failures; calls resume in ")
    assert f"payments API unavailable ({error}); offering card only" in logs


# --- pattern 8: cached lookups -----------------------------------------------------------------------

PRODUCTS = [
    {"sku": "BOOK-1", "name": "Dune", "category": "books", "price": 19.95},
    {"sku": "PEN-2", "name": "Fountain pen", "category": "office", "price": 20.0},
    {"sku": "BOOK-3", "name": "Emma", "category": "books", "price": 9.5},
]


async def test_product_catalog_calls_the_shop_once_an_hour(tmp_path: Path, services: Services) -> None:
    services.apis.products.extend(PRODUCTS)
    clock = Clock()
    async with harness(tmp_path, services, clock=clock) as h:
        books = await h.run("product-catalog", {"category": "books"})
        clock.advance(timedelta(minutes=59))
        everything = await h.run("product-catalog")
        calls_within_the_hour = len(services.apis.of("shop", "GET", "/products"))
        clock.advance(timedelta(minutes=2))
        services.apis.products.pop()  # the catalog changed upstream
        later = await h.run("product-catalog")
        steps = [await h.steps(run.id) for run in (books, everything, later)]

    assert (books.status, everything.status, later.status) == ("succeeded", "succeeded", "succeeded")
    assert books.outputs == {"count": 2, "products": [PRODUCTS[0], PRODUCTS[2]]}
    assert everything.outputs == {"count": 3, "products": PRODUCTS}  # from the cache: the shop was not asked
    assert calls_within_the_hour == 1
    assert [s["products"].note for s in steps] == [None, "cached", None]
    assert steps[1]["products"].output == steps[0]["products"].output
    assert later.outputs == {"count": 2, "products": PRODUCTS[:2]}  # the ttl of 1 h passed: asked again
    calls = services.apis.of("shop", "GET", "/products")
    assert len(calls) == 2
    assert calls[0].query == {"per_page": "1000", "active": "true"}


# --- pattern 9: cross-language audit -------------------------------------------------------------------

CRITICAL = {"mem_crit_pct": 0}  # any memory use is critical
QUIET = {"disk_warn_pct": 101, "disk_crit_pct": 101, "mem_crit_pct": 101, "load_per_cpu_warn": 10_000}


@pytest.mark.parametrize("thresholds", [CRITICAL, QUIET], ids=["critical", "all-ok"])
async def test_system_audit_runs_bash_python_node_and_pwsh_and_pages_on_critical_findings(
    tmp_path: Path, services: Services, thresholds: dict[str, Any]
) -> None:
    async with harness(tmp_path, services) as h:
        run = await h.run("system-audit", thresholds)
        steps = await h.steps(run.id)

    assert run.status == "succeeded", run.error
    metrics, analysis, report = (steps[s].output for s in ("collect", "analyse", "report"))
    # bash collected, python analysed, node formatted: JSON went from one language to the next
    assert (steps["collect"].status, steps["analyse"].status, steps["report"].status) == ("succeeded",) * 3
    assert set(metrics) == {"hostname", "collected_at", "cpus", "load", "memory", "disks"}
    assert metrics["cpus"] >= 1
    assert 0 <= metrics["memory"]["used_pct"] <= 100
    assert steps["analyse"].input["input"]["metrics"] == metrics
    critical = thresholds is CRITICAL
    assert analysis["critical"] is critical
    if critical:
        assert analysis["worst"] == "critical"
        memory = {
            "severity": "critical",
            "check": "memory",
            "message": f"memory is {metrics['memory']['used_pct']}% used",
        }
        assert memory in analysis["findings"]
    else:
        assert analysis == {"findings": [], "worst": "ok", "critical": False, "summary": "all checks passed"}
    assert report["subject"] == f"[audit {analysis['worst']}] {metrics['hostname']}: {analysis['summary']}"
    assert report["file_name"].startswith("audit-")
    assert f"<h1>System audit: {metrics['hostname']}</h1>" in report["html"]
    assert run.outputs["hostname"] == metrics["hostname"]
    assert run.outputs["worst"] == analysis["worst"]
    assert run.outputs["findings"] == analysis["findings"]
    # PowerShell delivers the report; where pwsh is missing the step fails saying so, and the report is mailed
    if shutil.which("pwsh") is None:
        assert steps["deliver"].status == "failed"
        assert steps["deliver"].error_kind == "permanent"
        assert steps["deliver"].error == (
            "the 'pwsh' interpreter is not installed on this server (PowerShell 7: https://aka.ms/powershell);"
            " install it or use another lang"
        )
        assert steps["email_report"].status == "succeeded"
        assert run.outputs["delivered_to"] == "email"
        assert services.mailbox.sent() == [("ops@example.com", report["subject"])]
        message = services.mailbox.messages()[0]
        html = message.get_body(("html",))
        text = message.get_body(("plain",))
        assert html is not None
        assert text is not None
        assert html.get_content() == report["html"]
        assert steps["deliver"].error in text.get_content()
    else:  # pragma: no cover - on machines with PowerShell 7
        assert steps["deliver"].status == "succeeded", steps["deliver"].error
        assert steps["email_report"].status == "skipped"
        key = f"/reports/{report['file_name']}"
        assert services.apis.objects[key][0].decode() == report["html"]
        assert run.outputs["delivered_to"].endswith(key)
        assert services.mailbox.sent() == []
    if critical:
        assert steps["page"].status == "succeeded"
        [event] = services.pagerduty_events()
        assert event["payload"] == {
            "summary": f"System audit on {metrics['hostname']}: {analysis['summary']}",
            "source": metrics["hostname"],
            "severity": "critical",
            "component": "system-audit",
            "custom_details": {"findings": analysis["findings"]},
        }
    else:
        assert steps["page"].status == "skipped"
        assert services.pagerduty.requests == []


# --- pattern 11: document processing with several LLM providers ----------------------------------------

INVOICE = """ACME GmbH - Rechnung 2024-117
2 x Schrauben M4 (100 Stk) a 12,50 EUR = 25,00 EUR
1 x Montage = 94,00 EUR
Summe: 119,00 EUR"""
LINE_ITEMS = [
    {"description": "Schrauben M4 (100 Stk)", "quantity": 2, "unit_price": 12.5, "amount": 25.0},
    {"description": "Montage", "quantity": 1, "unit_price": 94.0, "amount": 94.0},
]


async def test_document_processing_uses_three_providers_and_sums_their_tokens_on_the_run(
    tmp_path: Path, services: Services
) -> None:
    llm = services.llm
    llm.replies["openai"] = json.dumps({"category": "invoice", "language": "de", "confidence": 0.93})
    llm.replies["anthropic"] = json.dumps({"line_items": LINE_ITEMS, "currency": "EUR", "total": 119.0})
    llm.replies["ollama"] = "Rechnung der ACME GmbH über 119 EUR für Schrauben und Montage."
    llm.usages.update({"openai": (310, 22), "anthropic": (420, 180), "ollama": (390, 31)})
    async with harness(tmp_path, services) as h:
        run = await h.run("document-processing", {"document_id": "doc-117", "text": INVOICE})
        steps = await h.steps(run.id)

    assert run.status == "succeeded", run.error
    assert run.outputs == {
        "category": "invoice",
        "line_items": LINE_ITEMS,
        "total": 119.0,
        "summary": "Rechnung der ACME GmbH über 119 EUR für Schrauben und Montage.",
    }
    assert statuses(steps) == dict.fromkeys(["classify", "extract", "summarise", "store"], "succeeded")
    # token usage: per step, and summed on the run
    usage = {
        step: (steps[step].input_tokens, steps[step].output_tokens) for step in ("classify", "extract", "summarise")
    }
    assert usage == {"classify": (310, 22), "extract": (420, 180), "summarise": (390, 31)}
    assert (run.input_tokens, run.output_tokens) == (310 + 420 + 390, 22 + 180 + 31)
    assert steps["extract"].output["usage"] == {"input_tokens": 420, "output_tokens": 180}
    # each provider got its own wire format
    [classify] = llm.of("openai")
    assert classify.json["model"] == "gpt-4o-mini"
    assert classify.json["response_format"]["type"] == "json_schema"
    assert classify.json["response_format"]["json_schema"]["schema"]["required"] == [
        "category",
        "language",
        "confidence",
    ]
    [extract] = llm.of("anthropic")
    assert extract.json["model"] == "claude-sonnet-4-5"
    assert extract.json["messages"][0]["content"] == INVOICE
    [summarise] = llm.of("ollama")
    assert summarise.json["model"] == "llama3.2"
    assert "in the document's language (de)" in summarise.json["messages"][0]["content"]
    [row] = sql(
        tmp_path, "SELECT id, category, confidence, line_items, summary, input_tokens, output_tokens FROM documents"
    )
    assert row == ("doc-117", "invoice", 0.93, row[3], run.outputs["summary"], 1120, 233)  # the run's usage, stored
    assert json.loads(row[3]) == LINE_ITEMS


async def test_document_processing_skips_extraction_for_a_letter_and_survives_a_failed_summary(
    tmp_path: Path, services: Services
) -> None:
    llm = services.llm
    llm.replies["openai"] = json.dumps({"category": "letter", "language": "en", "confidence": 0.8})
    llm.usages["openai"] = (150, 20)
    llm.fail_next(1, 500, provider="ollama")
    async with harness(tmp_path, services) as h:
        run = await h.run("document-processing", {"document_id": "doc-9", "text": "Dear Sir, thank you for ..."})
        steps = await h.steps(run.id)
        tries = await attempts(h, run.id, "summarise")

    assert run.status == "succeeded", run.error  # the summary is nice to have (on_error = "continue")
    assert run.outputs == {"category": "letter", "line_items": [], "total": None, "summary": None}
    assert statuses(steps) == {
        "classify": "succeeded",
        "extract": "skipped",
        "summarise": "failed",
        "store": "succeeded",
    }
    assert [(r.attempt, r.error_kind) for r in tries] == [(1, "transient")]  # retry = { attempts = 1 }: no 2nd try
    assert "answered HTTP 500" in (steps["summarise"].error or "")
    assert [r.provider for r in llm.requests] == ["openai", "ollama"]  # nobody asked Anthropic
    assert (run.input_tokens, run.output_tokens) == (150, 20)  # the failed call spent nothing
    assert sql(tmp_path, "SELECT id, category, line_items, summary, input_tokens, output_tokens FROM documents") == [
        ("doc-9", "letter", None, None, 150, 20)
    ]


# --- pattern 14: human approval ---------------------------------------------------------------------

REFUND = {
    "order_id": "o-3001",
    "charge_id": "ch_0815",
    "amount": 250.0,
    "customer_email": "ann@example.com",
    "reason": "damaged in transit",
}


async def ask_for_approval(h: Harness, services: Services, params: dict[str, Any]) -> tuple[str, str]:
    """Start a refund-approval run, wait until it waits, and return its id and the resume URL Slack got."""
    order = {"id": params["order_id"], "customer_id": "c-1", "created_at": "2024-11-05T10:00:00+00:00"}
    insert(h.root, "orders", [{**order, "currency": "EUR", "total": params["amount"], "status": "shipped"}])
    run = await h.submit("refund-approval", params)
    await h.executor.start()
    await h.until(run.id, "waiting")
    [(channel, text)] = services.slack_posts()
    assert channel == "#refund-approvals"
    assert text.startswith(f"Refund of *{params['amount']}* for order {params['order_id']} ({params['reason']})")
    url = text.splitlines()[-1]
    return run.id, url


@pytest.mark.parametrize("approved", [True, False], ids=["approved", "rejected"])
async def test_refund_approval_waits_for_the_resume_call_then_refunds_or_gives_up(
    tmp_path: Path, services: Services, approved: bool
) -> None:
    async with harness(tmp_path, services) as h:
        run_id, url = await ask_for_approval(h, services, REFUND)
        waiting = await h.steps(run_id)
        resumed = await h.engine.resume(run_id, "approval", {"approved": approved, "by": "maria"})
        run = await h.until(run_id, "succeeded")
        steps = await h.steps(run_id)
        refund = await child(h, steps, "refund") if approved else None

    # the link in Slack is the signed resume URL of the wait step
    parts = urlsplit(url)
    assert parts.path == f"/api/runs/{run_id}/steps/approval/resume"
    assert h.engine.verify_resume(run_id, "approval", parse_qs(parts.query)["sig"][0])
    assert statuses(waiting) == {"ask": "succeeded", "approval": "waiting"}
    assert resumed is not None
    assert steps["approval"].output == {"approved": approved, "by": "maria"}
    if approved:
        assert refund is not None
        assert (refund.workflow, refund.status, refund.parent_run_id) == ("refund-order", "succeeded", run_id)
        assert run.outputs == {
            "approved": True,
            "approved_by": "maria",
            "timed_out": False,
            "refund_id": refund.outputs["refund_id"],
        }
        [call] = services.apis.of("payments", "POST", "/refunds")
        assert call.json == {"charge": "ch_0815", "amount": 250.0, "reason": "damaged in transit"}
        assert sql(tmp_path, "SELECT status, refund_id FROM orders") == [("refunded", refund.outputs["refund_id"])]
        assert services.mailbox.sent() == [("ann@example.com", "Refund for order o-3001")]
        assert statuses(steps)["give_up"] == "skipped"
    else:
        assert run.outputs == {"approved": False, "approved_by": "maria", "timed_out": False, "refund_id": None}
        assert statuses(steps) == {
            "ask": "succeeded",
            "approval": "succeeded",
            "decision": "succeeded",
            "refund": "skipped",
            "give_up": "succeeded",
        }
        assert services.apis.calls == []
        assert services.mailbox.sent() == [("support@example.com", "Refund for order o-3001 was rejected")]
        body = services.mailbox.messages()[0].get_content()
        assert "The refund of 250.0 for order o-3001 was not approved. Please contact ann@example.com." in body


async def test_refund_approval_gives_up_when_nobody_answers_within_24_hours(tmp_path: Path, services: Services) -> None:
    clock = Clock()
    async with harness(tmp_path, services, clock=clock) as h:
        run_id, _ = await ask_for_approval(h, services, REFUND)
        parked = await h.store.get_run(run_id)
        clock.advance(timedelta(hours=24, minutes=1))
        h.engine.on_work()
        run = await h.until(run_id, "succeeded")
        steps = await h.steps(run_id)
        late = await h.engine.resume(run_id, "approval", {"approved": True, "by": "maria"})

    assert parked is not None
    assert parked.wake_at is not None
    assert timedelta(hours=23, minutes=59) < parked.wake_at - parked.created_at <= timedelta(hours=24, seconds=5)
    assert run.outputs == {"approved": False, "approved_by": "unknown", "timed_out": True, "refund_id": None}
    assert (steps["approval"].status, steps["approval"].error_kind) == ("failed", "timeout")
    assert steps["approval"].output == {"approved": False, "timed_out": True}  # the fallback
    assert statuses(steps) | {"approval": "failed"} == {
        "ask": "succeeded",
        "approval": "failed",
        "decision": "succeeded",
        "refund": "skipped",
        "give_up": "succeeded",
    }
    assert late is None  # too late: the step no longer waits
    assert services.apis.calls == []
    assert services.mailbox.sent() == [("support@example.com", "Refund for order o-3001 timed out")]
    body = services.mailbox.messages()[0].get_content()
    assert "was not approved within 24 hours" in body


async def test_refund_approval_refunds_small_amounts_without_asking(tmp_path: Path, services: Services) -> None:
    async with harness(tmp_path, services) as h:
        run = await h.run("refund-approval", {**REFUND, "amount": 40.0})
        steps = await h.steps(run.id)

    assert run.status == "succeeded", run.error
    assert run.outputs["approved"] is True
    assert run.outputs["approved_by"] == "auto (below 100)"
    assert statuses(steps) == {
        "ask": "skipped",
        "approval": "skipped",
        "decision": "succeeded",
        "refund": "succeeded",
        "give_up": "skipped",
    }
    assert services.slack_posts() == []
    assert [c.json["amount"] for c in services.apis.of("payments", "POST", "/refunds")] == [40.0]
