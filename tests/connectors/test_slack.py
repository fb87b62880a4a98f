"""slack.post_message against a fake Slack served over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from tests.fakes import slack as fake_slack
from tests.fakes.server import free_port, serve_in_thread
from tests.fakes.slack import FakeSlack
from weir.connectors.base import ActionContext
from weir.connectors.slack import SlackConnection, SlackConnector
from weir.errors import PermanentError, TransientError

pytestmark = pytest.mark.anyio

CTX = ActionContext(run_id="r1", step_id="s1")


@pytest.fixture(scope="module")
def slack_server() -> Iterator[tuple[FakeSlack, str]]:
    fake = FakeSlack()
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def slack(slack_server: tuple[FakeSlack, str]) -> FakeSlack:
    slack_server[0].reset()
    return slack_server[0]


@pytest.fixture
def api(slack_server: tuple[FakeSlack, str]) -> SlackConnection:
    return SlackConnection(token=SecretStr(fake_slack.TOKEN), base_url=f"{slack_server[1]}/api")


@pytest.fixture
def hook(slack_server: tuple[FakeSlack, str]) -> SlackConnection:
    return SlackConnection(webhook_url=SecretStr(slack_server[1] + fake_slack.WEBHOOK_PATH))


async def post(connection: SlackConnection, inputs: dict[str, Any]) -> Any:
    connector = SlackConnector(connection, connection_name="slack")
    try:
        return await connector.call("post_message", CTX, inputs)
    finally:
        await connector.aclose()


async def test_post_message_sends_chat_post_message_and_returns_ts(slack: FakeSlack, api: SlackConnection) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*down*"}}]
    out = await post(api, {"channel": "#alerts", "text": "db is down", "blocks": blocks, "unfurl_links": False})

    assert out["channel"] == "C0ALERTS"
    assert re.fullmatch(r"1700000000\.\d{6}", out["ts"])
    received = slack.requests[-1]
    assert received.path == "/api/chat.postMessage"
    assert received.headers["authorization"] == f"Bearer {fake_slack.TOKEN}"
    assert received.headers["content-type"] == "application/json; charset=utf-8"
    assert received.json == {"channel": "#alerts", "text": "db is down", "blocks": blocks, "unfurl_links": False}


async def test_post_message_replies_in_thread(slack: FakeSlack, api: SlackConnection) -> None:
    out = await post(api, {"channel": "C0ALERTS", "text": "follow-up", "thread_ts": "1700000000.000001"})

    assert out["channel"] == "C0ALERTS"
    assert slack.requests[-1].json["thread_ts"] == "1700000000.000001"


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("#nowhere", "Slack refused the message: channel_not_found; check the channel ID or name"),
        ("C0OTHER", "Slack refused the message: not_in_channel; invite the bot to the channel"),
        ("C0ARCHIVED", "Slack refused the message: is_archived; the channel is archived"),
    ],
    ids=["channel_not_found", "not_in_channel", "is_archived"],
)
async def test_post_message_maps_ok_false_to_permanent_error_with_hint(
    slack: FakeSlack, api: SlackConnection, channel: str, expected: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await post(api, {"channel": channel, "text": "hi"})

    assert str(caught.value).startswith(expected)
    assert caught.value.action == "slack.post_message"
    assert caught.value.connection == "slack"


@pytest.mark.parametrize(
    ("token", "code"), [("xoxb-wrong", "invalid_auth"), (fake_slack.REVOKED_TOKEN, "token_revoked")]
)
async def test_post_message_reports_bad_token_without_revealing_it(
    slack: FakeSlack, slack_server: tuple[FakeSlack, str], token: str, code: str
) -> None:
    connection = SlackConnection(token=SecretStr(token), base_url=f"{slack_server[1]}/api")

    with pytest.raises(PermanentError) as caught:
        await post(connection, {"channel": "C0ALERTS", "text": "hi"})

    assert str(caught.value) == (
        f"Slack refused the message: {code}; "
        "check the connection's token: it must be a valid bot token (xoxb-...) of an installed app"
    )
    assert token not in str(caught.value)


async def test_post_message_includes_slack_detail_messages(slack: FakeSlack, api: SlackConnection) -> None:
    with pytest.raises(PermanentError, match=r"invalid_blocks; check `blocks`.*missing required field: type"):
        await post(api, {"channel": "C0ALERTS", "blocks": [{"text": "no type"}]})


async def test_post_message_429_is_transient_with_retry_after(slack: FakeSlack, api: SlackConnection) -> None:
    slack.fail_next(1, 429, headers={"Retry-After": "7"})

    with pytest.raises(TransientError) as caught:
        await post(api, {"channel": "C0ALERTS", "text": "hi"})

    assert caught.value.retry_after == 7.0
    assert caught.value.kind == "transient"
    assert "HTTP 429" in str(caught.value)


async def test_post_message_ok_false_ratelimited_is_transient(slack: FakeSlack, api: SlackConnection) -> None:
    slack.fail_next(1, 200, body={"ok": False, "error": "ratelimited"})

    with pytest.raises(TransientError, match="Slack answered 'ratelimited'; try again later"):
        await post(api, {"channel": "C0ALERTS", "text": "hi"})


async def test_post_message_5xx_is_transient(slack: FakeSlack, api: SlackConnection) -> None:
    slack.fail_next(1, 503, body="upstream unavailable")

    with pytest.raises(TransientError, match=r"Slack answered HTTP 503 \(upstream unavailable\)") as caught:
        await post(api, {"channel": "C0ALERTS", "text": "hi"})
    assert caught.value.retry_after is None


async def test_post_message_timeout_is_transient_timeout(slack: FakeSlack, slack_server: tuple[FakeSlack, str]) -> None:
    connection = SlackConnection(token=SecretStr(fake_slack.TOKEN), base_url=f"{slack_server[1]}/api", timeout="100ms")
    slack.fail_next(1, 200, delay=0.5)

    with pytest.raises(TransientError, match=r"Slack did not answer within 0.1s") as caught:
        await post(connection, {"channel": "C0ALERTS", "text": "hi"})
    assert caught.value.kind == "timeout"


async def test_post_message_connection_refused_is_transient() -> None:
    connection = SlackConnection(token=SecretStr(fake_slack.TOKEN), base_url=f"http://127.0.0.1:{free_port()}/api")

    with pytest.raises(TransientError, match="could not reach Slack") as caught:
        await post(connection, {"channel": "C0ALERTS", "text": "hi"})
    assert fake_slack.TOKEN not in str(caught.value)


async def test_post_message_rejects_unexpected_answer(slack: FakeSlack, api: SlackConnection) -> None:
    slack.fail_next(1, 200, body={"ok": True})

    with pytest.raises(PermanentError, match=r'unexpected response from Slack: \{"ok":\s?true\}'):
        await post(api, {"channel": "C0ALERTS", "text": "hi"})


async def test_post_message_rejects_non_json_answer(slack: FakeSlack, api: SlackConnection) -> None:
    slack.fail_next(1, 200, body="<html>captive portal</html>")

    with pytest.raises(PermanentError, match="unexpected response from Slack: <html>captive portal</html>"):
        await post(api, {"channel": "C0ALERTS", "text": "hi"})


async def test_post_message_needs_channel_with_token(slack: FakeSlack, api: SlackConnection) -> None:
    with pytest.raises(PermanentError, match="needs `channel` when the connection uses a bot token"):
        await post(api, {"text": "hi"})
    assert slack.requests == []


async def test_post_message_needs_text_or_blocks(api: SlackConnection) -> None:
    with pytest.raises(ValidationError, match="set `text` or `blocks`"):
        await post(api, {"channel": "C0ALERTS"})


async def test_post_message_rejects_unknown_input_keys(api: SlackConnection) -> None:
    with pytest.raises(ValidationError, match="chanel"):
        await post(api, {"chanel": "C0ALERTS", "text": "hi"})


async def test_webhook_posts_payload_and_returns_null_ts(slack: FakeSlack, hook: SlackConnection) -> None:
    out = await post(hook, {"text": "deployed", "username": "weir", "icon_emoji": ":rocket:"})

    assert out == {"ts": None, "channel": None}
    received = slack.requests[-1]
    assert received.path == fake_slack.WEBHOOK_PATH
    assert "authorization" not in received.headers
    assert received.json == {"text": "deployed", "username": "weir", "icon_emoji": ":rocket:"}


async def test_webhook_echoes_requested_channel(slack: FakeSlack, hook: SlackConnection) -> None:
    out = await post(hook, {"channel": "#alerts", "text": "deployed"})

    assert out == {"ts": None, "channel": "#alerts"}


async def test_webhook_text_errors_are_permanent(slack: FakeSlack, hook: SlackConnection) -> None:
    with pytest.raises(PermanentError) as caught:
        await post(hook, {"channel": "#nowhere", "text": "hi"})

    assert str(caught.value).startswith("Slack refused the webhook message (HTTP 404): channel_not_found; ")


async def test_webhook_no_service_hides_the_url(slack: FakeSlack, slack_server: tuple[FakeSlack, str]) -> None:
    url = f"{slack_server[1]}/services/T0FAKE/B0FAKE/revokedsecretpath"
    connection = SlackConnection(webhook_url=SecretStr(url))

    with pytest.raises(PermanentError) as caught:
        await post(connection, {"text": "hi"})

    assert str(caught.value) == (
        "Slack refused the webhook message (HTTP 404): no_service; "
        "the webhook URL is wrong or was revoked; create a new incoming webhook"
    )
    assert "revokedsecretpath" not in str(caught.value)


async def test_webhook_invalid_payload_is_permanent(slack: FakeSlack, hook: SlackConnection) -> None:
    slack.fail_next(1, 400, body="invalid_payload")

    with pytest.raises(PermanentError, match=r"\(HTTP 400\): invalid_payload$"):
        await post(hook, {"text": "hi"})


async def test_webhook_429_is_transient(slack: FakeSlack, hook: SlackConnection) -> None:
    slack.fail_next(1, 429, headers={"Retry-After": "30"}, body="rate_limited")

    with pytest.raises(TransientError) as caught:
        await post(hook, {"text": "hi"})
    assert caught.value.retry_after == 30.0
    assert fake_slack.WEBHOOK_PATH not in str(caught.value)


async def test_webhook_unreachable_hides_the_url() -> None:
    secret_path = "/services/T0/B0/topsecretwebhookpath"
    connection = SlackConnection(webhook_url=SecretStr(f"http://127.0.0.1:{free_port()}{secret_path}"))

    with pytest.raises(TransientError) as caught:
        await post(connection, {"text": "hi"})
    assert "topsecretwebhookpath" not in str(caught.value)


def test_connection_needs_exactly_one_credential() -> None:
    with pytest.raises(ValidationError, match="set exactly one of token") as caught:
        SlackConnection(token=SecretStr("xoxb-abc-secret"), webhook_url=SecretStr("https://hooks.slack.com/x"))
    assert "xoxb-abc-secret" not in str(caught.value)
    with pytest.raises(ValidationError, match="set exactly one of token"):
        SlackConnection()


def test_connection_rejects_non_http_webhook_url_without_echoing_it() -> None:
    with pytest.raises(ValidationError, match="webhook_url must be an https:// URL") as caught:
        SlackConnection.model_validate({"webhook_url": "hooks.slack.com/services/secretpath"})
    assert "secretpath" not in str(caught.value)


def test_connection_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="tokn"):
        SlackConnection.model_validate({"token": "xoxb-1", "tokn": "x"})


def test_post_message_is_not_idempotent() -> None:
    assert SlackConnector.actions["post_message"].idempotent is False


@pytest.mark.parametrize("mode", ["api", "hook"])
async def test_post_message_refuses_an_answer_larger_than_1mib(
    slack: FakeSlack, mode: str, request: pytest.FixtureRequest
) -> None:
    slack.fail_next(1, 200, body="x" * (1024 * 1024 + 1))

    with pytest.raises(PermanentError) as info:
        await post(request.getfixturevalue(mode), {"channel": "#alerts", "text": "hi"})
    assert str(info.value) == (
        "unexpected response from Slack: larger than 1MiB, which no Slack answer is;"
        " check the connection's base_url or webhook_url"
    )
    assert (info.value.kind, info.value.connection, info.value.action) == ("permanent", "slack", "slack.post_message")
