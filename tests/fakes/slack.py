"""A fake Slack: ``chat.postMessage`` of the Web API and one incoming webhook, with Slack's error answers.

Web API (mount at ``{url}/api``): a bearer token in Authorization, a JSON body
sent as ``application/json; charset=utf-8``; answers HTTP 200 with ``{"ok": true,
"channel", "ts", "message"}`` or ``{"ok": false, "error": code}`` as Slack
documents (not_authed, invalid_auth, token_revoked, invalid_json, channel_not_found,
not_in_channel, is_archived, no_text, invalid_blocks, msg_too_long), and 429
``ratelimited`` with Retry-After when told to.
Webhook (``{url}/services/T0FAKE/B0FAKE/...``): answers 200 ``ok`` or a text
code: 400 invalid_payload / no_text, 404 channel_not_found / no_service,
410 channel_is_archived.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

TOKEN = "xoxb-1111-2222-fakebottoken"
REVOKED_TOKEN = "xoxb-1111-2222-revokedtoken"
WEBHOOK_PATH = "/services/T0FAKE/B0FAKE/s3cr3tw3bh00kp4th"
CHANNELS = {"C0ALERTS": "alerts", "C0OTHER": "other", "C0ARCHIVED": "old"}
"""Channel IDs and names the bot may see; the bot is a member of alerts and old only."""
MEMBER_OF = {"C0ALERTS", "C0ARCHIVED"}
ARCHIVED = {"C0ARCHIVED"}


@dataclass
class Received:
    """One request as the fake saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None


@dataclass
class _Failure:
    status: int
    headers: dict[str, str]
    body: Any
    delay: float


@dataclass
class FakeSlack:
    """State of the fake; ``app`` serves it. Call ``reset()`` between tests."""

    requests: list[Received] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/api/chat.postMessage", self._post_message, methods=["POST"]),
                Route("/services/{team}/{bot}/{secret}", self._webhook, methods=["POST"]),
            ]
        )

    def reset(self) -> None:
        self.requests.clear()
        self._failures.clear()

    def fail_next(
        self, count: int, status: int, *, headers: dict[str, str] | None = None, body: Any = None, delay: float = 0
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (after ``delay`` seconds) instead of serving them."""
        self._failures.extend(_Failure(status, headers or {}, body, delay) for _ in range(count))

    async def _record(self, request: Request) -> tuple[Received, Response | None]:
        body = await request.body()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        received = Received(request.url.path, dict(request.headers), body, parsed)
        self.requests.append(received)
        if not self._failures:
            return received, None
        failure = self._failures.pop(0)
        if failure.delay:
            await asyncio.sleep(failure.delay)
        if isinstance(failure.body, str):
            return received, PlainTextResponse(failure.body, failure.status, headers=failure.headers)
        body_json = failure.body if failure.body is not None else {"ok": False, "error": "ratelimited"}
        return received, JSONResponse(body_json, failure.status, headers=failure.headers)

    async def _post_message(self, request: Request) -> Response:
        received, injected = await self._record(request)
        if injected is not None:
            return injected
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return _api_error("not_authed")
        if auth.removeprefix("Bearer ") == REVOKED_TOKEN:
            return _api_error("token_revoked")
        if auth.removeprefix("Bearer ") != TOKEN:
            return _api_error("invalid_auth")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _api_error("invalid_arguments")
        data = received.json
        if not isinstance(data, dict):
            return _api_error("invalid_json")
        channel = _channel_id(str(data.get("channel", "")))
        if channel is None:
            return _api_error("channel_not_found")
        if channel not in MEMBER_OF:
            return _api_error("not_in_channel")
        if channel in ARCHIVED:
            return _api_error("is_archived")
        text, blocks = data.get("text"), data.get("blocks")
        if not text and not blocks:
            return _api_error("no_text")
        if blocks is not None and (
            not isinstance(blocks, list) or not all(isinstance(b, dict) and "type" in b for b in blocks)
        ):
            return JSONResponse(
                {
                    "ok": False,
                    "error": "invalid_blocks",
                    "response_metadata": {
                        "messages": ["[ERROR] missing required field: type [json-pointer:/blocks/0]"]
                    },
                }
            )
        if text is not None and len(str(text)) > 40000:
            return _api_error("msg_too_long")
        ts = f"1700000000.{next(self._ts):06d}"
        message = {"type": "message", "user": "U0BOT", "text": text or "", "ts": ts}
        if data.get("thread_ts"):
            message["thread_ts"] = data["thread_ts"]
        return JSONResponse({"ok": True, "channel": channel, "ts": ts, "message": message})

    async def _webhook(self, request: Request) -> Response:
        received, injected = await self._record(request)
        if injected is not None:
            return injected
        if request.url.path != WEBHOOK_PATH:
            return PlainTextResponse("no_service", 404)
        data = received.json
        if not isinstance(data, dict):
            return PlainTextResponse("invalid_payload", 400)
        if not data.get("text") and not data.get("blocks"):
            return PlainTextResponse("no_text", 400)
        if "channel" in data:
            channel = _channel_id(str(data["channel"]))
            if channel is None:
                return PlainTextResponse("channel_not_found", 404)
            if channel in ARCHIVED:
                return PlainTextResponse("channel_is_archived", 410)
        return PlainTextResponse("ok")


def _api_error(code: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": code})


def _channel_id(channel: str) -> str | None:
    if channel in CHANNELS:
        return channel
    name = channel.removeprefix("#")
    return next((cid for cid, cname in CHANNELS.items() if cname == name), None)
