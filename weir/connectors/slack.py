"""Post messages to Slack through the Web API (a bot token) or an incoming webhook.

Token mode calls ``chat.postMessage``. Slack answers most failures with HTTP 200
and ``{"ok": false, "error": "channel_not_found"}``; those become PermanentError
naming the code with a hint, except rate limits and Slack-side faults, which are
TransientError. Webhook mode posts the same JSON to the webhook URL, which answers
``ok`` or an HTTP error whose body is a short code such as ``no_service``.
Neither the token nor the webhook URL ever appears in an error message.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from weir import __version__
from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action, format_size
from weir.connectors.wire import excerpt, retry_after
from weir.errors import PermanentError, TransientError
from weir.schemas.common import Duration

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "https://slack.com/api"
DEFAULT_TIMEOUT = timedelta(seconds=30)
_ACTION = "slack.post_message"
MAX_RESPONSE_BYTES = 1024 * 1024
"""Slack's answers are small; anything bigger is not Slack."""

_AUTH_HINT = "check the connection's token: it must be a valid bot token (xoxb-...) of an installed app"
_HINTS = {
    "channel_not_found": "check the channel ID or name; for a private channel, invite the bot to it",
    "not_in_channel": "invite the bot to the channel (/invite @your-app)",
    "is_archived": "the channel is archived; unarchive it or post elsewhere",
    "channel_is_archived": "the channel is archived; unarchive it or post elsewhere",
    "msg_too_long": "shorten the text (Slack truncates at 40,000 characters and rejects longer messages)",
    "no_text": "set `text` or `blocks`",
    "invalid_blocks": "check `blocks` against Slack's Block Kit reference",
    "invalid_auth": _AUTH_HINT,
    "not_authed": _AUTH_HINT,
    "token_revoked": _AUTH_HINT,
    "token_expired": _AUTH_HINT,
    "account_inactive": _AUTH_HINT,
    "invalid_token": _AUTH_HINT,
    "no_service": "the webhook URL is wrong or was revoked; create a new incoming webhook",
    "action_prohibited": "a workspace admin restricts posting to this channel",
    "posting_to_general_channel_denied": "only admins may post to this channel",
}
# Codes that mean "try again later", from Slack's documented error lists.
_TRANSIENT = {"ratelimited", "rate_limited", "fatal_error", "internal_error", "service_unavailable", "request_timeout"}


class SlackConnection(ConnectionSettings):
    """A Slack workspace reached with a bot token (Web API) or one incoming webhook."""

    token: SecretStr | None = Field(
        None, description="Bot token (xoxb-...) with the chat:write scope. Set this or webhook_url."
    )
    webhook_url: SecretStr | None = Field(
        None, description="Incoming webhook URL (https://hooks.slack.com/services/...). Set this or token."
    )
    base_url: str = Field(
        DEFAULT_BASE_URL, description="Root of the Web API, used with token. Default https://slack.com/api."
    )
    timeout: Duration = Field(DEFAULT_TIMEOUT, description="Time allowed for each request. Default 30s.")

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("webhook_url must be an https:// URL such as https://hooks.slack.com/services/...")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> SlackConnection:
        if (self.token is None) == (self.webhook_url is None):
            raise ValueError("set exactly one of token (a bot token) or webhook_url (an incoming webhook)")
        return self


class PostMessage(ActionInput):
    """A message for chat.postMessage or an incoming webhook."""

    channel: str | None = Field(
        None, description="Channel ID (C0123...) or name (#alerts). Required with a token; optional with a webhook."
    )
    text: str | None = Field(None, description="Message text (mrkdwn). With blocks, it is the notification fallback.")
    blocks: list[dict[str, Any]] | None = Field(None, max_length=50, description="Block Kit blocks (at most 50).")
    thread_ts: str | None = Field(None, description="Reply in the thread of this message timestamp.")
    username: str | None = Field(None, description="Display name override (needs chat:write.customize).")
    icon_emoji: str | None = Field(None, description="Emoji used as the icon, e.g. ':rotating_light:'.")
    unfurl_links: bool | None = Field(None, description="Unfurl links to text-based content.")

    @model_validator(mode="after")
    def _has_content(self) -> PostMessage:
        if not self.text and not self.blocks:
            raise ValueError("set `text` or `blocks` (or both): Slack rejects an empty message")
        return self


class PostMessageResult(BaseModel):
    """Where the message landed. Webhooks do not say, so ts is null for them."""

    ts: str | None = Field(description="Timestamp (ID) of the posted message; null in webhook mode.")
    channel: str | None = Field(description="Channel ID Slack posted to, or the requested channel in webhook mode.")


class SlackConnector(Connector[SlackConnection]):
    """Slack: post messages with a bot token or an incoming webhook."""

    name = "slack"
    connection_model = SlackConnection

    _http: httpx.AsyncClient | None = None

    @action("post_message", input=PostMessage, output=PostMessageResult, idempotent=False)
    async def post_message(self, ctx: ActionContext, inp: PostMessage) -> PostMessageResult:
        """Post a message to a channel or thread."""
        payload = inp.model_dump(exclude_none=True)
        if self.connection.webhook_url is not None:
            status, body = await self._post(ctx, self.connection.webhook_url.get_secret_value(), payload, {})
            self._check_webhook_answer(status, body)
            return PostMessageResult(ts=None, channel=inp.channel)
        if not inp.channel:
            raise self._permanent("post_message needs `channel` when the connection uses a bot token")
        token = self.connection.token.get_secret_value() if self.connection.token else ""
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{self.connection.base_url.rstrip('/')}/chat.postMessage"
        status, body = await self._post(ctx, url, payload, headers)
        return self._read_api_answer(status, body)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _permanent(self, message: str) -> PermanentError:
        return PermanentError(self._scrub(message), connection=self.connection_name, action=_ACTION)

    def _transient(self, message: str, *, retry_after: float | None = None, timeout: bool = False) -> TransientError:
        return TransientError(
            self._scrub(message),
            connection=self.connection_name,
            action=_ACTION,
            retry_after=retry_after,
            timeout=timeout,
        )

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=self.connection.timeout.total_seconds(), headers={"User-Agent": f"weir/{__version__}"}
            )
        return self._http

    async def _post(
        self, ctx: ActionContext, url: str, payload: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        import httpx

        timeout = self.connection.timeout.total_seconds()
        if ctx.timeout is not None:
            timeout = min(timeout, ctx.timeout)
        content = json.dumps(payload, ensure_ascii=False).encode()
        headers = {**headers, "Content-Type": "application/json; charset=utf-8"}
        try:
            async with self._client().stream("POST", url, content=content, headers=headers, timeout=timeout) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise self._permanent(
                            f"unexpected response from Slack: larger than {format_size(MAX_RESPONSE_BYTES)}, which no"
                            " Slack answer is; check the connection's base_url or webhook_url"
                        )
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise self._transient(
                        f"Slack answered HTTP {resp.status_code} ({excerpt(body)}); try again later",
                        retry_after=retry_after(resp.headers.get("Retry-After")),
                    )
                return resp.status_code, bytes(body)
        except httpx.TimeoutException as exc:
            raise self._transient(f"Slack did not answer within {timeout:g}s", timeout=True) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise self._permanent("the Slack URL is not a valid http(s) URL") from exc
        except httpx.TransportError as exc:
            raise self._transient(f"could not reach Slack: {str(exc) or type(exc).__name__}") from exc

    def _read_api_answer(self, status: int, body: bytes) -> PostMessageResult:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            if status >= 400:
                raise self._permanent(f"Slack answered HTTP {status}: {excerpt(body)}")
            raise self._permanent(f"unexpected response from Slack: {excerpt(body)}")
        if not data["ok"]:
            code = str(data.get("error") or "unknown_error")
            raise self._api_error(code, data)
        ts, channel = data.get("ts"), data.get("channel")
        if not isinstance(ts, str) or not isinstance(channel, str):
            raise self._permanent(f"unexpected response from Slack: {excerpt(body)}")
        return PostMessageResult(ts=ts, channel=channel)

    def _api_error(self, code: str, data: dict[str, Any]) -> PermanentError | TransientError:
        if code in _TRANSIENT:
            return self._transient(f"Slack answered '{code}'; try again later")
        message = f"Slack refused the message: {code}"
        if code == "missing_scope" and data.get("needed"):
            message += f"; add the {data['needed']} scope to the app and reinstall it"
        elif code in _HINTS:
            message += f"; {_HINTS[code]}"
        details = (data.get("response_metadata") or {}).get("messages")
        if isinstance(details, list) and details:
            message += f" ({'; '.join(str(d) for d in details[:3])})"
        return self._permanent(message)

    def _check_webhook_answer(self, status: int, body: bytes) -> None:
        text = body.decode("utf-8", "replace").strip()
        if status == 200 and text == "ok":
            return
        if status < 400:
            raise self._permanent(f"unexpected response from Slack: {excerpt(body)}")
        code = text if text.replace("_", "").isalnum() else excerpt(body)
        message = f"Slack refused the webhook message (HTTP {status}): {code}"
        if code in _HINTS:
            message += f"; {_HINTS[code]}"
        raise self._permanent(message)

    def _scrub(self, text: str) -> str:
        for secret in (self.connection.token, self.connection.webhook_url):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "***")
        return text
