"""pagerduty.event against a fake Events API v2 served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from tests.fakes.pagerduty import ROUTING_KEY, FakePagerDuty
from tests.fakes.server import free_port, serve_in_thread
from weir.connectors.base import ActionContext
from weir.connectors.pagerduty import PagerDutyConnection, PagerDutyConnector
from weir.errors import PermanentError, TransientError

pytestmark = pytest.mark.anyio

CTX = ActionContext(run_id="run-42", step_id="page")


@pytest.fixture(scope="module")
def pd_server() -> Iterator[tuple[FakePagerDuty, str]]:
    fake = FakePagerDuty()
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def pd(pd_server: tuple[FakePagerDuty, str]) -> FakePagerDuty:
    pd_server[0].reset()
    return pd_server[0]


@pytest.fixture
def conn(pd_server: tuple[FakePagerDuty, str]) -> PagerDutyConnection:
    return PagerDutyConnection(routing_key=SecretStr(ROUTING_KEY), base_url=pd_server[1])


async def send(connection: PagerDutyConnection, inputs: dict[str, Any], ctx: ActionContext = CTX) -> Any:
    connector = PagerDutyConnector(connection, connection_name="pager")
    try:
        return await connector.call("event", ctx, inputs)
    finally:
        await connector.aclose()


async def test_trigger_sends_events_v2_body_with_defaults(pd: FakePagerDuty, conn: PagerDutyConnection) -> None:
    out = await send(conn, {"summary": "error rate 12/min on api"})

    assert out == {"dedup_key": "run-42:page", "status": "success"}
    assert pd.requests[-1].json == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "run-42:page",
        "payload": {"summary": "error rate 12/min on api", "source": "weir", "severity": "error"},
    }
    assert pd.requests[-1].headers["content-type"] == "application/json"


async def test_trigger_sends_every_optional_field(pd: FakePagerDuty, conn: PagerDutyConnection) -> None:
    await send(
        conn,
        {
            "action": "trigger",
            "summary": "disk full",
            "severity": "critical",
            "source": "db-1",
            "dedup_key": "disk-db-1",
            "timestamp": "2024-05-01T12:00:00+02:00",
            "component": "postgres",
            "group": "storage",
            "class": "disk",
            "custom_details": {"free": "0%"},
            "links": [{"href": "https://grafana.example/d/1", "text": "dashboard"}],
            "images": [{"src": "https://grafana.example/r/1.png"}],
        },
    )

    assert pd.requests[-1].json == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "disk-db-1",
        "payload": {
            "summary": "disk full",
            "source": "db-1",
            "severity": "critical",
            "timestamp": "2024-05-01T12:00:00+02:00",
            "component": "postgres",
            "group": "storage",
            "class": "disk",
            "custom_details": {"free": "0%"},
        },
        "links": [{"href": "https://grafana.example/d/1", "text": "dashboard"}],
        "images": [{"src": "https://grafana.example/r/1.png"}],
    }


async def test_default_dedup_key_is_the_idempotency_key_and_stable_across_attempts(
    pd: FakePagerDuty, conn: PagerDutyConnection
) -> None:
    first = ActionContext(run_id="run-7", step_id="page", item_index=3, attempt=1)
    second = ActionContext(run_id="run-7", step_id="page", item_index=3, attempt=2)

    out1 = await send(conn, {"summary": "down"}, first)
    out2 = await send(conn, {"summary": "down"}, second)

    assert out1["dedup_key"] == out2["dedup_key"] == first.idempotency_key == "run-7:page:3"
    assert pd.alerts == {"run-7:page:3": "triggered"}


async def test_acknowledge_and_resolve_carry_only_the_key(pd: FakePagerDuty, conn: PagerDutyConnection) -> None:
    await send(conn, {"summary": "down", "dedup_key": "k1"})
    ack = await send(conn, {"action": "acknowledge", "dedup_key": "k1"})
    resolved = await send(conn, {"action": "resolve", "dedup_key": "k1", "summary": "ignored for resolve"})

    assert ack == resolved == {"dedup_key": "k1", "status": "success"}
    assert pd.requests[-1].json == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "k1"}
    assert pd.alerts == {"k1": "resolved"}


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
async def test_acknowledge_and_resolve_need_dedup_key(
    pd: FakePagerDuty, conn: PagerDutyConnection, action: str
) -> None:
    with pytest.raises(ValidationError, match=f"`action = '{action}'` needs `dedup_key`"):
        await send(conn, {"action": action})
    assert pd.requests == []


async def test_trigger_needs_summary(conn: PagerDutyConnection) -> None:
    with pytest.raises(ValidationError, match="a trigger event needs `summary`"):
        await send(conn, {"severity": "info"})


async def test_summary_longer_than_1024_is_a_validation_error(conn: PagerDutyConnection) -> None:
    with pytest.raises(ValidationError, match="at most 1024 characters"):
        await send(conn, {"summary": "x" * 1025})


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"summary": "s", "severity": "fatal"}, "severity"),
        ({"action": "snooze", "dedup_key": "k"}, "action"),
        ({"summary": "s", "timestamp": "2024-05-01T12:00:00"}, "timestamp"),
        ({"summary": "s", "clas": "x"}, "clas"),
    ],
    ids=["severity", "action", "naive-timestamp", "unknown-key"],
)
async def test_invalid_inputs_are_validation_errors(
    conn: PagerDutyConnection, inputs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError, match=field):
        await send(conn, inputs)


async def test_invalid_event_is_permanent_with_pagerduty_errors(
    pd: FakePagerDuty, pd_server: tuple[FakePagerDuty, str]
) -> None:
    short_key = "tooshortroutingkey"
    connection = PagerDutyConnection(routing_key=SecretStr(short_key), base_url=pd_server[1])

    with pytest.raises(PermanentError) as caught:
        await send(connection, {"summary": "down"})

    assert str(caught.value) == (
        "PagerDuty rejected the event (HTTP 400): Event object is invalid: "
        "Length of 'routing_key' is incorrect (should be 32 characters)"
    )
    assert caught.value.connection == "pager"
    assert caught.value.action == "pagerduty.event"


async def test_rejection_never_shows_the_routing_key(pd: FakePagerDuty, conn: PagerDutyConnection) -> None:
    pd.fail_next(
        1, 400, body={"status": "invalid event", "message": "Event object is invalid", "errors": [ROUTING_KEY]}
    )

    with pytest.raises(PermanentError) as caught:
        await send(conn, {"summary": "down"})
    assert ROUTING_KEY not in str(caught.value)
    assert str(caught.value).endswith("Event object is invalid: ***")


async def test_429_is_transient_with_retry_after(pd: FakePagerDuty, conn: PagerDutyConnection) -> None:
    pd.fail_next(1, 429, headers={"Retry-After": "12"})

    with pytest.raises(TransientError, match="PagerDuty answered HTTP 429") as caught:
        await send(conn, {"summary": "down"})
    assert caught.value.retry_after == 12.0


async def test_5xx_is_transient_and_next_attempt_succeeds(pd: FakePagerDuty, conn: PagerDutyConnection) -> None:
    pd.fail_next(1, 502, body={"status": "error", "message": "bad gateway"})

    with pytest.raises(TransientError, match="HTTP 502") as caught:
        await send(conn, {"summary": "down"})
    assert caught.value.retry_after is None
    assert (await send(conn, {"summary": "down"}))["status"] == "success"


async def test_timeout_is_transient_timeout(pd: FakePagerDuty, pd_server: tuple[FakePagerDuty, str]) -> None:
    connection = PagerDutyConnection(routing_key=SecretStr(ROUTING_KEY), base_url=pd_server[1], timeout=0.1)
    pd.fail_next(1, 202, delay=0.5)

    with pytest.raises(TransientError, match=r"did not answer within 0.1s") as caught:
        await send(connection, {"summary": "down"})
    assert caught.value.kind == "timeout"


async def test_unreachable_is_transient() -> None:
    connection = PagerDutyConnection(routing_key=SecretStr(ROUTING_KEY), base_url=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(TransientError, match="could not reach PagerDuty"):
        await send(connection, {"summary": "down"})


async def test_unexpected_answer_is_permanent(pd: FakePagerDuty, conn: PagerDutyConnection) -> None:
    pd.fail_next(1, 202, body={"status": "queued"})

    with pytest.raises(PermanentError, match=r'unexpected response from PagerDuty: \{"status":\s?"queued"\}'):
        await send(conn, {"summary": "down"})


async def test_long_idempotency_key_is_hashed_to_fit(pd: FakePagerDuty, conn: PagerDutyConnection) -> None:
    ctx = ActionContext(run_id="r" * 200, step_id="s" * 100)

    out = await send(conn, {"summary": "down"}, ctx)
    again = await send(conn, {"summary": "down"}, ctx)

    assert out["dedup_key"].startswith("weir:")
    assert len(out["dedup_key"]) <= 255
    assert again["dedup_key"] == out["dedup_key"]


def test_event_is_idempotent() -> None:
    assert PagerDutyConnector.actions["event"].idempotent is True


def test_connection_hides_routing_key_in_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        PagerDutyConnection.model_validate({"routing_key": "secret-routing-key-value", "bsae_url": "x"})
    assert "secret-routing-key-value" not in str(caught.value)


async def test_answer_larger_than_1mib_is_permanent(pd: FakePagerDuty, conn: PagerDutyConnection) -> None:
    pd.fail_next(1, 202, body={"status": "success", "message": "x" * (1024 * 1024)})

    with pytest.raises(PermanentError) as info:
        await send(conn, {"summary": "disk full"})
    assert str(info.value) == (
        "unexpected response from PagerDuty: larger than 1MiB, which no Events API answer is;"
        " check the connection's base_url"
    )
    assert (info.value.kind, info.value.connection, info.value.action) == ("permanent", "pager", "pagerduty.event")
