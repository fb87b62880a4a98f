"""The example workflows of ``workflows/`` run end to end with the real engine.

Each test runs a copy of the example directory in a ``Harness`` against local services: the
business APIs (``tests/fakes/business_apis.py``: shop, CRM, analytics, payments), the fake
Slack, an aiosmtpd server with STARTTLS and AUTH, and a SQLite ``warehouse`` created from
``workflows/sql/warehouse.sql`` (``tests/examples_support.py`` starts them). It checks what a
user would: the run's status and outputs, which steps ran, were skipped or failed, and the
calls the services received. The examples of the connector patterns (2, 3, 6, 7, 8, 9, 11, 14)
are in ``tests/test_examples_connectors.py``.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import examples_support
from tests.examples_support import Services, attempts, child, harness, sql, statuses

pytestmark = pytest.mark.anyio
served, services, backoff = examples_support.served, examples_support.services, examples_support.backoff
"""The fixtures of ``tests/examples_support.py``, made visible to pytest in this module."""


# --- pattern 1: resilient API integration --------------------------------------------------------


async def test_crm_account_sync_falls_back_to_the_snapshot_after_three_tries(
    tmp_path: Path, services: Services, backoff: list[tuple[int, float]]
) -> None:
    accounts = [{"id": "a-1", "name": "Acme"}, {"id": "a-2", "name": "Globex"}]
    services.apis.accounts["enterprise"] = accounts
    async with harness(tmp_path, services) as h:
        fresh = await h.run("crm-account-sync", {"segment": "enterprise"})
        fresh_steps = await h.steps(fresh.id)
        services.apis.fail("crm", "GET", "/accounts", 500, {"error": "database unavailable"}, times=None)
        started = time.monotonic()
        down = await h.run("crm-account-sync", {"segment": "enterprise"})
        took = time.monotonic() - started
        down_steps = await h.steps(down.id)
        tries = await attempts(h, down.id, "fetch")

    # CRM up: the fresh list is the answer and becomes the snapshot; the fallback branch is skipped
    assert fresh.status == "succeeded", fresh.error
    assert fresh.outputs == {"source": "api", "count": 2, "accounts": accounts}
    assert statuses(fresh_steps) == {
        "fetch": "succeeded",
        "save_snapshot": "succeeded",
        "read_cache": "skipped",
        "alert": "skipped",
        "log_incident": "skipped",
        "note": "skipped",
        "accounts": "succeeded",
    }
    # CRM down: 3 tries with exponential backoff, then the fallback branch serves the snapshot
    assert down.status == "succeeded", down.error
    assert down.outputs == {"source": "cache", "count": 2, "accounts": accounts}
    assert statuses(down_steps) == {
        "fetch": "failed",
        "save_snapshot": "skipped",
        "read_cache": "succeeded",
        "alert": "succeeded",
        "log_incident": "succeeded",
        "note": "succeeded",
        "accounts": "succeeded",
    }
    assert down_steps["fetch"].output == {"status": 0, "json": {"accounts": []}}  # the fallback
    assert [(r.attempt, r.status, r.error_kind) for r in tries] == [(n, "failed", "transient") for n in (1, 2, 3)]
    assert "returned HTTP 500" in (tries[-1].error or "")
    assert [attempt for attempt, _ in backoff] == [1, 2]
    assert 1.0 <= backoff[0][1] <= 3.0  # 2 s ± 50 % jitter
    assert 2.0 <= backoff[1][1] <= 6.0  # 4 s ± 50 % jitter
    assert took < 3.0
    crm = services.apis.of("crm", "GET", "/accounts")
    assert [c.query for c in crm] == [{"segment": "enterprise"}] * 4
    assert sql(tmp_path, "SELECT segment, count(*) FROM crm_account_snapshots GROUP BY segment") == [("enterprise", 1)]
    incidents = sql(tmp_path, "SELECT source, run_id, error FROM incidents")
    assert [(source, run_id) for source, run_id, _ in incidents] == [("crm-api", down.id)]
    assert "returned HTTP 500" in incidents[0][2]
    [(channel, text)] = services.slack_posts()
    assert channel == "#ops-alerts"
    assert text.startswith(":warning: The CRM API failed 3 times in a row: ")
    assert f"Serving the 'enterprise' accounts from the last warehouse snapshot (run {down.id})." in text


# --- pattern 4: order processing with nested decisions ------------------------------------------


def order(order_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": order_id,
        "customer_email": "ann@example.com",
        "currency": "EUR",
        "total": 59.9,
        "lines": [{"sku": "BOOK-1", "qty": 2, "price": 19.95}, {"sku": "PEN-2", "qty": 1, "price": 20.0}],
        "address": {"name": "Ann Lee", "street": "Hauptstr. 1", "city": "Berlin", "country": "DE"},
        **changes,
    }


def seed_order(root: Path, order_id: str) -> None:
    with closing(sqlite3.connect(root / "warehouse.db")) as db, db:
        db.execute(
            "INSERT INTO orders (id, customer_id, created_at, currency, total, status) VALUES (?, ?, ?, ?, ?, ?)",
            (order_id, "c-1", "2024-11-05T10:00:00+00:00", "EUR", 59.9, "new"),
        )


async def test_process_order_ships_through_the_ship_order_subflow(tmp_path: Path, services: Services) -> None:
    services.apis.stock.update({"BOOK-1": 5, "PEN-2": 1})
    async with harness(tmp_path, services) as h:
        seed_order(tmp_path, "o-1001")
        run = await h.run("process-order", {"order": order("o-1001")})
        steps = await h.steps(run.id)
        ship = await child(h, steps, "ship")

    assert run.status == "succeeded", run.error
    tracking = run.outputs["tracking_number"]
    assert run.outputs == {"outcome": "shipped", "tracking_number": tracking}
    assert tracking.startswith("JD0146")
    assert statuses(steps) == {
        "validate": "succeeded",
        "cancel_invalid": "skipped",
        "check_stock": "succeeded",
        "backorder": "skipped",
        "charge": "succeeded",
        "cancel_declined": "skipped",
        "ship": "succeeded",
        "refund": "skipped",
    }
    assert (ship.workflow, ship.status, ship.parent_run_id, ship.parent_step) == (
        "ship-order",
        "succeeded",
        run.id,
        "ship",
    )
    assert ship.trigger["type"] == "workflow"
    assert ship.outputs == {"tracking_number": tracking, "carrier": "DHL"}
    assert steps["ship"].output == ship.outputs
    assert services.apis.made("shop") == ["POST /inventory/availability", "POST /shipments"]
    [charge] = services.apis.of("payments", "POST", "/charges")
    assert charge.json == {"amount": 59.9, "currency": "EUR", "reference": "order-o-1001"}
    assert charge.headers["idempotency-key"]
    [shipment] = services.apis.of("shop", "POST", "/shipments")
    assert shipment.json["order_id"] == "o-1001"
    assert shipment.json["address"]["city"] == "Berlin"
    assert sql(tmp_path, "SELECT status, tracking_number FROM orders") == [("shipped", tracking)]
    assert services.mailbox.sent() == [("ann@example.com", "Your order o-1001 is on its way")]
    assert f"Track it with DHL under {tracking}." in services.mailbox.messages()[0].get_content()


@pytest.mark.parametrize("allow_backorder", [True, False], ids=["backordered", "cancelled"])
async def test_process_order_out_of_stock_decides_again_in_backorder_order(
    tmp_path: Path, services: Services, allow_backorder: bool
) -> None:
    services.apis.stock.update({"BOOK-1": 0, "PEN-2": 1})
    async with harness(tmp_path, services) as h:
        seed_order(tmp_path, "o-1002")
        run = await h.run("process-order", {"order": order("o-1002", allow_backorder=allow_backorder)})
        steps = await h.steps(run.id)
        backorder = await child(h, steps, "backorder")
        backorder_steps = await h.steps(backorder.id)
        cancel = await child(h, backorder_steps, "cancel") if not allow_backorder else None

    expected = "backordered" if allow_backorder else "cancelled"
    assert run.status == "succeeded", run.error
    assert run.outputs == {"outcome": expected, "tracking_number": None}
    assert statuses(steps) == {
        "validate": "succeeded",
        "cancel_invalid": "skipped",
        "check_stock": "succeeded",
        "backorder": "succeeded",
        "charge": "skipped",
        "cancel_declined": "skipped",
        "ship": "skipped",
        "refund": "skipped",
    }
    assert (backorder.workflow, backorder.status, backorder.parent_run_id) == ("backorder-order", "succeeded", run.id)
    assert backorder.params["missing"] == [{"sku": "BOOK-1", "qty": 2}]
    assert services.apis.made("payments") == []  # nobody is charged for what is not in stock
    assert services.apis.made("shop") == ["POST /inventory/availability"]
    if allow_backorder:
        assert cancel is None
        assert statuses(backorder_steps) == {
            "record": "succeeded",
            "record[0]": "succeeded",
            "tell_customer": "succeeded",
            "cancel": "skipped",
        }
        assert sql(tmp_path, "SELECT order_id, sku, qty FROM backorders") == [("o-1002", "BOOK-1", 2)]
        assert services.mailbox.sent() == [("ann@example.com", "Order o-1002: some items ship later")]
    else:
        assert cancel is not None
        # the nested decision: a grandchild run of cancel-order, linked to the backorder-order run
        assert (cancel.workflow, cancel.status, cancel.parent_run_id, cancel.parent_step) == (
            "cancel-order",
            "succeeded",
            backorder.id,
            "cancel",
        )
        assert cancel.outputs == {"status": "cancelled", "reason": "out of stock"}
        assert statuses(backorder_steps) == {"record": "skipped", "tell_customer": "skipped", "cancel": "succeeded"}
        assert sql(tmp_path, "SELECT status, cancel_reason FROM orders") == [("cancelled", "out of stock")]
        assert sql(tmp_path, "SELECT count(*) FROM backorders") == [(0,)]
        assert services.mailbox.sent() == [("ann@example.com", "Order o-1002 was cancelled")]


async def test_process_order_refunds_when_shipping_fails(tmp_path: Path, services: Services) -> None:
    services.apis.stock.update({"BOOK-1": 5, "PEN-2": 1})
    services.apis.fail("shop", "POST", "/shipments", 422, {"error": "address is not deliverable"})
    async with harness(tmp_path, services) as h:
        seed_order(tmp_path, "o-1003")
        run = await h.run("process-order", {"order": order("o-1003")})
        steps = await h.steps(run.id)
        ship, refund = await child(h, steps, "ship"), await child(h, steps, "refund")

    assert run.status == "succeeded", run.error
    assert run.outputs == {"outcome": "refunded", "tracking_number": None}
    assert statuses(steps)["ship"] == "failed"  # on_error = "continue": the refund takes over
    assert statuses(steps)["refund"] == "succeeded"
    assert (ship.status, ship.parent_run_id) == ("failed", run.id)
    assert "returned HTTP 422" in (ship.error or "")
    assert "address is not deliverable" in (steps["ship"].error or "")
    assert (refund.workflow, refund.status, refund.parent_run_id, refund.parent_step) == (
        "refund-order",
        "succeeded",
        run.id,
        "refund",
    )
    assert len(services.apis.of("payments", "POST", "/charges")) == 1
    [refund_call] = services.apis.of("payments", "POST", "/refunds")
    charge_id = steps["charge"].output["json"]["id"]
    assert refund_call.json == {"charge": charge_id, "amount": 59.9, "reason": "shipping failed"}
    refund_id = refund.outputs["refund_id"]
    assert refund.outputs == {"refund_id": refund_id, "status": "refunded"}
    assert refund_id.startswith("re_")
    assert sql(tmp_path, "SELECT status, refund_id FROM orders") == [("refunded", refund_id)]
    assert services.mailbox.sent() == [("ann@example.com", "Refund for order o-1003")]


# --- pattern 5: customer 360 (fan-out/fan-in) ------------------------------------------------------


@pytest.mark.parametrize(
    ("orders", "sessions", "tickets", "risk", "route"),
    [(0, 1, 1, 80, "high"), (2, 1, 1, 40, "medium"), (2, 12, 0, 0, "low")],
    ids=["high", "medium", "low"],
)
async def test_customer_360_fetches_in_parallel_merges_scores_and_routes(
    tmp_path: Path, services: Services, orders: int, sessions: int, tickets: int, risk: int, route: str
) -> None:
    apis = services.apis
    apis.customers["c-7"] = {"id": "c-7", "name": "Initech", "owner_email": "bob@example.com", "plan": "growth"}
    apis.engagement["c-7"] = {"sessions": sessions, "support_tickets": tickets, "nps": 7}
    apis.slow("crm", "GET", "/customers/c-7", 0.3)
    apis.slow("analytics", "GET", "/v1/users/c-7/engagement", 0.3)
    last_order = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    async with harness(tmp_path, services) as h:
        with closing(sqlite3.connect(tmp_path / "warehouse.db")) as db, db:
            rows = [(f"o-{n}", "c-7", last_order, "EUR", 75.5, "shipped") for n in range(orders)]
            rows.append(("o-old", "c-7", "2001-01-01T00:00:00+00:00", "EUR", 999, "shipped"))  # older than 12 months
            db.executemany(
                "INSERT INTO orders (id, customer_id, created_at, currency, total, status) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        run = await h.run("customer-360", {"customer_id": "c-7"})
        steps = await h.steps(run.id)
        logs = [log.message for log in await h.store.get_logs(run.id)]

    assert run.status == "succeeded", run.error
    assert run.outputs == {
        "profile": {
            "customer_id": "c-7",
            "name": "Initech",
            "owner_email": "bob@example.com",
            "plan": "growth",
            "orders_12m": orders,
            "revenue_12m": 75.5 * orders,
            "last_order_at": last_order if orders else None,
            "sessions_30d": sessions,
            "support_tickets_30d": tickets,
            "engagement_known": True,
        },
        "risk": risk,
        "route": route,
    }
    # fan-out: the CRM and analytics calls were in flight at the same time (each takes 0.3 s)
    [crm] = apis.of("crm", "GET", "/customers/c-7")
    [analytics] = apis.of("analytics", "GET", "/v1/users/c-7/engagement")
    assert crm.started < analytics.ended
    assert analytics.started < crm.ended
    assert analytics.query == {"window": "30d"}
    # fan-in: the merge started after all three finished
    merge_started = steps["merge"].started_at
    assert merge_started is not None
    for fetched in ("crm", "purchases", "engagement"):
        finished = steps[fetched].finished_at
        assert finished is not None
        assert finished <= merge_started
    routed = {"high": ("alert_account_team", "flag_in_crm"), "medium": ("email_owner",), "low": ("note_low",)}[route]
    for step in ("alert_account_team", "flag_in_crm", "email_owner", "note_low"):
        assert steps[step].status == ("succeeded" if step in routed else "skipped"), step
    if route == "high":
        [flag] = apis.of("crm", "PATCH", "/customers/c-7")
        assert flag.json == {"churn_risk": 80, "flagged_by": f"weir run {run.id}"}
        assert apis.customers["c-7"]["churn_risk"] == 80
        assert services.slack_posts() == [
            (
                "#account-risk",
                ":red_circle: Initech (growth) has churn risk 80/100: 0 orders in 12 months, 1 sessions in 30 days.",
            )
        ]
    else:
        assert apis.of("crm", "PATCH", "/customers/c-7") == []
        assert services.slack_posts() == []
    if route == "medium":
        assert services.mailbox.sent() == [("bob@example.com", "Check in with Initech (risk 40/100)")]
    else:
        assert services.mailbox.sent() == []
    assert ("customer c-7: low risk (0/100)" in logs) == (route == "low")


# --- pattern 10: composed pipeline of subflows -----------------------------------------------------


async def test_onboard_customer_merges_the_outputs_of_three_child_runs(tmp_path: Path, services: Services) -> None:
    services.apis.companies["acme.example"] = {"industry": "manufacturing", "employees": 1500}
    services.apis.slow("crm", "GET", "/enrichment/companies", 0.3)
    async with harness(tmp_path, services) as h:
        params = {"company": "Acme GmbH", "email": "ops@ACME.example", "country": "de", "plan": "growth"}
        run = await h.run("onboard-customer", params)
        steps = await h.steps(run.id)
        children = {step: await child(h, steps, step) for step in ("enrich", "compliance", "provision")}

    assert run.status == "succeeded", run.error
    account_id = run.outputs["account_id"]
    assert run.outputs == {
        "company": "Acme GmbH",
        "domain": "acme.example",
        "industry": "manufacturing",
        "tier": "enterprise",
        "approved": True,
        "compliance_reason": "ok",
        "account_id": account_id,
    }
    assert statuses(steps) == {
        "enrich": "succeeded",
        "compliance": "succeeded",
        "provision": "succeeded",
        "hold": "skipped",
    }
    workflows = {step: (r.workflow, r.status, r.parent_run_id, r.parent_step) for step, r in children.items()}
    assert workflows == {
        "enrich": ("data-enrichment", "succeeded", run.id, "enrich"),
        "compliance": ("compliance-check", "succeeded", run.id, "compliance"),
        "provision": ("provision-account", "succeeded", run.id, "provision"),
    }
    assert children["enrich"].params == {"email": "ops@ACME.example", "company": "Acme GmbH"}
    assert children["provision"].params == {
        "company": "Acme GmbH",
        "email": "ops@ACME.example",
        "plan": "growth",
        "tier": "enterprise",
        "industry": "manufacturing",
    }
    assert children["provision"].outputs == {"account_id": account_id, "plan": "growth"}
    # enrichment (slow) and compliance ran at the same time; provisioning waited for both
    enrich, compliance, provision = children["enrich"], children["compliance"], children["provision"]
    assert compliance.finished_at is not None
    assert enrich.finished_at is not None
    assert compliance.finished_at < enrich.finished_at
    assert provision.created_at >= enrich.finished_at
    [lookup] = services.apis.of("crm", "GET", "/enrichment/companies")
    assert lookup.query == {"domain": "acme.example", "name": "Acme GmbH"}
    [create] = services.apis.of("crm", "POST", "/accounts")
    assert create.json == {
        "name": "Acme GmbH",
        "admin_email": "ops@ACME.example",
        "plan": "growth",
        "tier": "enterprise",
        "industry": "manufacturing",
    }
    assert create.headers["idempotency-key"]
    assert sql(tmp_path, "SELECT id, company, plan, tier FROM accounts") == [
        (account_id, "Acme GmbH", "growth", "enterprise")
    ]
    assert sql(tmp_path, "SELECT company, country, approved, reason FROM compliance_checks") == [
        ("Acme GmbH", "de", 1, "ok")
    ]
    assert services.slack_posts() == [("#sales", ":tada: New growth customer: Acme GmbH (enterprise, manufacturing)")]


async def test_onboard_customer_holds_a_sanctioned_company(tmp_path: Path, services: Services) -> None:
    async with harness(tmp_path, services) as h:
        with closing(sqlite3.connect(tmp_path / "warehouse.db")) as db, db:
            db.execute("INSERT INTO sanctioned_entities (list, listed_name) VALUES ('EU', 'shady corp')")
        run = await h.run("onboard-customer", {"company": "Shady Corp", "email": "x@shady.example", "country": "NL"})
        steps = await h.steps(run.id)
        enrich = await child(h, steps, "enrich")
        enrich_steps = await h.steps(enrich.id)

    assert run.status == "succeeded", run.error
    assert run.outputs == {
        "company": "Shady Corp",
        "domain": "shady.example",
        "industry": "unknown",
        "tier": "smb",
        "approved": False,
        "compliance_reason": "listed on EU",
        "account_id": None,
    }
    assert statuses(steps) == {
        "enrich": "succeeded",
        "compliance": "succeeded",
        "provision": "skipped",
        "hold": "succeeded",
    }
    # the enrichment API does not know the company (404): the child's fallback keeps it going
    assert (enrich.status, statuses(enrich_steps)) == ("succeeded", {"lookup": "failed", "profile": "succeeded"})
    assert services.apis.of("crm", "POST", "/accounts") == []
    assert sql(tmp_path, "SELECT count(*) FROM accounts") == [(0,)]
    assert sql(tmp_path, "SELECT company, approved, reason FROM compliance_checks") == [
        ("Shady Corp", 0, "listed on EU")
    ]
    assert services.slack_posts() == [("#compliance", "Signup of Shady Corp (NL) is on hold: listed on EU")]


# --- pattern 12: saga ---------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["confirm_order", "charge_payment"])
async def test_order_saga_compensates_in_reverse_order(tmp_path: Path, services: Services, failing: str) -> None:
    apis = services.apis
    if failing == "confirm_order":
        apis.fail("shop", "POST", "/orders/o-2001/confirm", 409, {"error": "order was cancelled by the customer"})
    else:
        apis.fail("payments", "POST", "/charges", 402, {"error": "card_declined"})
    params = {"order_id": "o-2001", "customer_id": "c-1", "lines": [{"sku": "BOOK-1", "qty": 1}], "amount": 19.95}
    async with harness(tmp_path, services) as h:
        run = await h.run("order-saga", params)
        steps = await h.steps(run.id)
        records = await h.store.get_steps(run.id)

    assert run.status == "failed"
    status = 409 if failing == "confirm_order" else 402
    assert run.error is not None
    assert run.error.startswith(f"step '{failing}' failed: POST ")
    assert f"returned HTTP {status}" in run.error
    reservation = steps["reserve_stock"].output["json"]["id"]
    if failing == "confirm_order":
        charge = steps["charge_payment"].output["json"]["id"]
        assert statuses(steps) == {
            "reserve_stock": "succeeded",
            "charge_payment": "succeeded",
            "confirm_order": "failed",
        }
        assert [f"{c.api} {c.line}" for c in apis.calls] == [
            "shop POST /inventory/reservations",
            "payments POST /charges",
            "shop POST /orders/o-2001/confirm",
            "payments POST /refunds",  # compensations: the last change is undone first
            f"shop DELETE /inventory/reservations/{reservation}",
        ]
        [refund] = apis.of("payments", "POST", "/refunds")
        assert refund.json == {"charge": charge, "reason": "order o-2001 could not be completed"}
        assert refund.headers["idempotency-key"]
        compensated = ["charge_payment", "reserve_stock"]
    else:
        assert statuses(steps) == {"reserve_stock": "succeeded", "charge_payment": "failed", "confirm_order": "skipped"}
        assert [f"{c.api} {c.line}" for c in apis.calls] == [
            "shop POST /inventory/reservations",
            "payments POST /charges",  # 402 is permanent: no retry
            f"shop DELETE /inventory/reservations/{reservation}",
        ]
        compensated = ["reserve_stock"]
    compensations = sorted((r for r in records if r.phase == "compensate"), key=lambda r: r.finished_at or r.started_at)
    assert [(r.step_id, r.status) for r in compensations] == [(step, "succeeded") for step in compensated]
    on_failure = [(r.step_id, r.status) for r in records if r.phase == "on_failure"]
    assert on_failure == [("tell_orders_team", "succeeded")]
    [(channel, text)] = services.slack_posts()
    assert channel == "#orders"
    assert text.startswith(
        f":leftwards_arrow_with_hook: Order o-2001 rolled back (run {run.id}): step '{failing}' failed"
    )


# --- pattern 13: map-reduce ------------------------------------------------------------------------


async def test_event_stats_counts_every_partition_and_reduces(tmp_path: Path, services: Services) -> None:
    events = []
    for n in range(40):  # 40 users, partition_key derived from the user
        for k in range(n % 3 + 1):
            events.append(("2024-11-05", n * 7, f"u-{n}", 503 if (n + k) % 5 == 0 else 200))
    events.append(("2024-11-04", 1, "u-x", 500))  # another day
    expected_errors = sum(1 for day, _, _, status in events if day == "2024-11-05" and status >= 500)
    async with harness(tmp_path, services) as h:
        with closing(sqlite3.connect(tmp_path / "warehouse.db")) as db, db:
            db.executemany("INSERT INTO events (day, partition_key, user_id, status) VALUES (?, ?, ?, ?)", events)
        run = await h.run("event-stats", {"day": "2024-11-05"})
        steps = await h.steps(run.id)

    assert run.status == "succeeded", run.error
    assert run.outputs == {"day": "2024-11-05", "events": len(events) - 1, "errors": expected_errors, "users": 40}
    items = {key: record for key, record in steps.items() if key.startswith("count[")}
    assert sorted(items) == sorted(f"count[{i}]" for i in range(16))  # the default 16 partitions
    assert all(record.status == "succeeded" for record in items.values())
    partial = [items[f"count[{i}]"].output["rows"][0] for i in range(16)]
    assert sum(row["events"] for row in partial) == len(events) - 1
    assert steps["count"].note == "16 items"
    assert [item["rows"][0] for item in steps["count"].output] == partial
    intervals = [(r.started_at, r.finished_at) for r in items.values()]
    most = max(sum(1 for s, f in intervals if s <= start < f) for start, _ in intervals)
    assert most <= 8  # parallel = 8
    assert steps["reduce"].output == {"events": len(events) - 1, "errors": expected_errors, "users": 40}
    assert sql(tmp_path, "SELECT day, events, errors, users FROM daily_event_stats") == [
        ("2024-11-05", len(events) - 1, expected_errors, 40)
    ]


# --- pattern 17: matrix fan-out -----------------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True], ids=["catch-up", "rebuild"])
async def test_search_reindex_runs_every_region_and_shard_four_at_a_time(
    tmp_path: Path, services: Services, full: bool
) -> None:
    regions, shards = ["eu-west", "us-east", "ap-south"], [0, 1, 2, 3]
    apis = services.apis
    apis.documents.update({(r, s): 100 * (i + 1) + s for i, r in enumerate(regions) for s in shards})
    apis.slow("shop", "POST", "/admin/search/reindex", 0.05)
    async with harness(tmp_path, services) as h:
        run = await h.run("search-reindex", {"full": full})
        steps = await h.steps(run.id)

    total = sum(apis.documents.values())
    assert run.status == "succeeded", run.error
    assert run.outputs == {"pairs": 12, "documents": total}
    calls = apis.of("shop", "POST", "/admin/search/reindex")
    assert sorted((c.json["region"], c.json["shard"]) for c in calls) == sorted(apis.documents)
    assert {c.json["full"] for c in calls} == {full}
    assert apis.max_in_flight["POST /admin/search/reindex"] == 4  # parallel = 4
    product = [{"region": r, "shard": s} for r in regions for s in shards]
    assert [steps[f"reindex[{i}]"].input["json"] for i in range(12)] == [{**item, "full": full} for item in product]
    assert [item["json"]["documents"] for item in steps["reindex"].output] == [
        apis.documents[(item["region"], item["shard"])] for item in product
    ]
    assert statuses(steps)["summary"] == statuses(steps)["announce"] == "succeeded"
    kind = "rebuild" if full else "catch-up"
    assert services.slack_posts() == [("#search", f"Search {kind} done: 12 region/shard pairs, {total} documents.")]


# --- pattern 15: drip sequence with a durable sleep --------------------------------------------------


@pytest.mark.parametrize("unsubscribed", [False, True], ids=["tips", "unsubscribed"])
async def test_welcome_drip_sleeps_a_day_and_resumes_after_a_restart(
    tmp_path: Path, services: Services, unsubscribed: bool
) -> None:
    async with harness(tmp_path, services) as h:
        before = datetime.now(UTC)
        run = await h.submit("welcome-drip", {"email": "Ann@Example.com", "name": "Ann"})
        await h.executor.start()
        parked = await h.until(run.id, "waiting")
        after = datetime.now(UTC)
        parked_steps = await h.steps(run.id)
        again = await h.engine.submit("welcome-drip", {"email": "ann@example.com", "name": "Ann"})
    # the first email went out, the run sleeps in the database until tomorrow
    assert statuses(parked_steps) == {"welcome": "succeeded", "pause": "waiting"}
    assert parked.wake_at is not None
    assert before + timedelta(days=1) <= parked.wake_at <= after + timedelta(days=1)
    assert parked_steps["pause"].wake_at == parked.wake_at
    assert parked.lease_owner is None
    assert services.mailbox.sent() == [("Ann@Example.com", "Welcome aboard, Ann!")]
    assert again.skipped  # one drip per address: the second signup is skipped while the first sleeps
    if unsubscribed:
        with closing(sqlite3.connect(tmp_path / "warehouse.db")) as db, db:
            db.execute("INSERT INTO email_unsubscribes (email) VALUES ('ann@example.com')")

    # a new process, a day and a minute later
    def tomorrow() -> datetime:
        return datetime.now(UTC) + timedelta(days=1, minutes=1)

    async with harness(tmp_path, services, clock=tomorrow) as h:
        final = await h.executor.run_until_finished(run.id)
        steps = await h.steps(run.id)

    assert final.status == "succeeded", final.error
    assert final.outputs == {"tips_sent": not unsubscribed}
    assert statuses(steps) == {
        "welcome": "succeeded",
        "pause": "succeeded",
        "unsubscribed": "succeeded",
        "tips": "skipped" if unsubscribed else "succeeded",
    }
    assert steps["unsubscribed"].output["row_count"] == (1 if unsubscribed else 0)
    if unsubscribed:
        assert services.mailbox.sent() == [("Ann@Example.com", "Welcome aboard, Ann!")]
    else:
        assert services.mailbox.sent() == [
            ("Ann@Example.com", "Welcome aboard, Ann!"),
            ("Ann@Example.com", "Three tips to get started"),
        ]
        tips = services.mailbox.messages()[1]
        sent_at = tips["Date"].datetime
        assert sent_at >= parked.wake_at - timedelta(seconds=1)  # dated by the clock of the new process
        assert "1. Invite your team." in tips.get_content()


# --- pattern 18: rerun from the failed step -----------------------------------------------------------


async def test_settlement_sync_reruns_from_the_failed_step_reusing_what_succeeded(
    tmp_path: Path, services: Services
) -> None:
    settlements = [
        {"id": "st_1", "day": "2024-11-05", "amount": 120.0, "fee": 3.6, "currency": "EUR"},
        {"id": "st_2", "day": "2024-11-05", "amount": 80.0, "fee": 2.4, "currency": "EUR"},
        {"id": "st_3", "day": "2024-11-05", "amount": 50.0, "fee": 1.5, "currency": "EUR"},
    ]
    services.apis.settlements["2024-11-05"] = settlements
    # Slack rejects the report of the first run: a permanent error, so no retry
    services.slack.fail_next(1, 200, body={"ok": False, "error": "not_in_channel"})
    async with harness(tmp_path, services) as h:
        first = await h.run("settlement-sync", {"day": "2024-11-05"})
        first_steps = await h.steps(first.id)
        first_records = await h.store.get_steps(first.id)
        rerun = await h.engine.rerun(first.id, from_failed=True)
        second = await h.executor.run_until_finished(rerun.id)
        second_steps = await h.steps(second.id)
        second_records = await h.store.get_steps(second.id)

    assert first.status == "failed"
    assert first.error is not None
    assert first.error.startswith("step 'report' failed: ")
    assert "not_in_channel" in first.error
    assert statuses(first_steps) == {
        "window": "succeeded",
        "download": "succeeded",
        "load": "succeeded",
        "rebuild": "succeeded",
        "report": "failed",
    }
    assert [(r.step_id, r.status) for r in first_records if r.phase == "on_failure"] == [("ask_for_rerun", "succeeded")]
    # the rerun: same params and revision, the four succeeded steps reused, only the report runs again
    assert second.status == "succeeded", second.error
    assert (second.rerun_of, second.revision, second.params) == (first.id, first.revision, first.params)
    assert second.trigger["type"] == "rerun"
    assert second.outputs == {"day": "2024-11-05", "settlements": 3}
    assert statuses(second_steps) == dict.fromkeys(["window", "download", "load", "rebuild", "report"], "succeeded")
    for step in ("window", "download", "load", "rebuild"):
        assert second_steps[step].note == f"reused from run {first.id}", step
        assert second_steps[step].output == first_steps[step].output
        assert [r.attempt for r in second_records if r.step_id == step] == [0], step  # no attempt: not run
    assert [r.attempt for r in second_records if r.step_id == "report"] == [1]
    assert services.apis.made("payments") == ["GET /settlements"]  # downloaded once, by the first run
    assert services.apis.calls[0].query == {"date": "2024-11-05", "limit": "10000"}
    assert sql(tmp_path, "SELECT id, amount, fee FROM settlements ORDER BY id") == [
        (s["id"], s["amount"], s["fee"]) for s in settlements
    ]
    assert sql(tmp_path, "SELECT day, gross, fees, net FROM daily_revenue") == [("2024-11-05", 250.0, 7.5, 242.5)]
    posts = services.slack_posts()
    assert [channel for channel, _ in posts] == ["#finance-ops"] * 3
    assert posts[0][1] == posts[2][1] == "Settlements for 2024-11-05 loaded: 3 rows."  # rejected, then posted
    assert posts[1][1].startswith(f":x: settlement-sync failed (run {first.id}): step 'report' failed: ")
    assert posts[1][1].endswith(f'rerun from the failed step: POST /api/runs/{first.id}/rerun {{"from": "failed"}}')
