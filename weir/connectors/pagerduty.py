"""Send events to PagerDuty through the Events API v2 (``POST /v2/enqueue``).

A trigger without a ``dedup_key`` gets the step's idempotency key (run, step and
item), so a retried or crash-rerun trigger updates the same alert instead of
opening a second one; that is why ``pagerduty.event`` is idempotent. Acknowledge
and resolve name the alert by its dedup key and carry nothing else.
PagerDuty answers 202 ``{"status": "success", "dedup_key": ...}``, 400 with
``errors`` for an invalid event, 429 when throttled and 5xx when unwell.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, SecretStr, model_validator

from weir import __version__
from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action, format_size
from weir.connectors.wire import excerpt, retry_after
from weir.errors import PermanentError, TransientError
from weir.schemas.common import Duration

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "https://events.pagerduty.com"
DEFAULT_TIMEOUT = timedelta(seconds=30)
DEFAULT_SOURCE = "weir"
DEFAULT_SEVERITY = "error"
MAX_RESPONSE_BYTES = 1024 * 1024
"""PagerDuty's answers are a few hundred bytes; anything bigger is not PagerDuty."""
_ACTION = "pagerduty.event"


class PagerDutyConnection(ConnectionSettings):
    """One PagerDuty service integration (Events API v2)."""

    routing_key: SecretStr = Field(
        description="Integration key of an Events API v2 integration on the service (32 characters)."
    )
    base_url: str = Field(
        DEFAULT_BASE_URL,
        description="Root of the Events API. Default https://events.pagerduty.com (EU: https://events.eu.pagerduty.com).",
    )
    timeout: Duration = Field(DEFAULT_TIMEOUT, description="Time allowed for each request. Default 30s.")


class Link(ActionInput):
    """A link shown on the alert."""

    href: str = Field(description="URL of the link.")
    text: str | None = Field(None, description="Text shown for the link.")


class Image(ActionInput):
    """An image shown on the alert."""

    src: str = Field(description="HTTPS URL of the image.")
    href: str | None = Field(None, description="URL opened when the image is clicked.")
    alt: str | None = Field(None, description="Alternative text of the image.")


class PagerDutyEvent(ActionInput):
    """An Events API v2 event: trigger an alert, or acknowledge or resolve it by dedup key."""

    action: Literal["trigger", "acknowledge", "resolve"] = Field(
        "trigger", description="trigger (default) opens or updates an alert; acknowledge and resolve need dedup_key."
    )
    dedup_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Identifies the alert. Trigger default: derived from run, step and item, stable across retries.",
    )
    summary: str | None = Field(
        None, min_length=1, max_length=1024, description="Trigger: the alert's title (required, at most 1024 chars)."
    )
    severity: Literal["critical", "error", "warning", "info"] | None = Field(
        None, description="Trigger: critical, error, warning or info. Default error."
    )
    source: str = Field(DEFAULT_SOURCE, min_length=1, description="Trigger: the affected system. Default 'weir'.")
    timestamp: AwareDatetime | None = Field(None, description="Trigger: when the problem began (with a time zone).")
    component: str | None = Field(None, description="Trigger: the broken part of the source, e.g. 'mysql'.")
    group: str | None = Field(None, description="Trigger: logical grouping of components, e.g. 'app-stack'.")
    class_: str | None = Field(
        None, alias="class", description="Trigger: class or type of the event, e.g. 'ping failure'."
    )
    custom_details: dict[str, Any] | None = Field(None, description="Trigger: free-form details shown on the alert.")
    links: list[Link] | None = Field(None, description="Trigger: links shown on the alert.")
    images: list[Image] | None = Field(None, description="Trigger: images shown on the alert.")

    @model_validator(mode="after")
    def _check_action(self) -> PagerDutyEvent:
        if self.action == "trigger":
            if self.summary is None:
                raise ValueError("a trigger event needs `summary`, the alert's title (at most 1024 characters)")
        elif self.dedup_key is None:
            raise ValueError(
                f"`action = '{self.action}'` needs `dedup_key`: the key of the alert, e.g. the trigger step's output"
            )
        return self


class PagerDutyResult(BaseModel):
    """PagerDuty's receipt for the event."""

    dedup_key: str = Field(description="The alert's dedup key; pass it to acknowledge or resolve the alert.")
    status: str = Field(description="PagerDuty's status, 'success' when the event was accepted.")


class PagerDutyConnector(Connector[PagerDutyConnection]):
    """PagerDuty: trigger, acknowledge and resolve alerts through the Events API v2."""

    name = "pagerduty"
    connection_model = PagerDutyConnection

    _http: httpx.AsyncClient | None = None

    @action("event", input=PagerDutyEvent, output=PagerDutyResult, idempotent=True)
    async def event(self, ctx: ActionContext, inp: PagerDutyEvent) -> PagerDutyResult:
        """Send a trigger, acknowledge or resolve event."""
        dedup_key = inp.dedup_key or _default_dedup_key(ctx)
        body: dict[str, Any] = {
            "routing_key": self.connection.routing_key.get_secret_value(),
            "event_action": inp.action,
            "dedup_key": dedup_key,
        }
        if inp.action == "trigger":
            body["payload"] = _payload(inp)
            if inp.links:
                body["links"] = [link.model_dump(exclude_none=True) for link in inp.links]
            if inp.images:
                body["images"] = [image.model_dump(exclude_none=True) for image in inp.images]
        status, raw = await self._post(ctx, body)
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            if status >= 400:
                raise self._permanent(f"PagerDuty answered HTTP {status}: {excerpt(raw)}")
            raise self._permanent(f"unexpected response from PagerDuty: {excerpt(raw)}")
        if status >= 400:
            raise self._permanent(_rejection(status, data))
        if data.get("status") != "success" or not isinstance(data.get("dedup_key"), str):
            raise self._permanent(f"unexpected response from PagerDuty: {excerpt(raw)}")
        return PagerDutyResult(dedup_key=data["dedup_key"], status=data["status"])

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=self.connection.timeout.total_seconds(), headers={"User-Agent": f"weir/{__version__}"}
            )
        return self._http

    async def _post(self, ctx: ActionContext, body: dict[str, Any]) -> tuple[int, bytes]:
        import httpx

        url = f"{self.connection.base_url.rstrip('/')}/v2/enqueue"
        timeout = self.connection.timeout.total_seconds()
        if ctx.timeout is not None:
            timeout = min(timeout, ctx.timeout)
        try:
            async with self._client().stream("POST", url, json=body, timeout=timeout) as resp:
                raw = bytearray()
                async for chunk in resp.aiter_bytes():
                    raw += chunk
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise self._permanent(
                            f"unexpected response from PagerDuty: larger than {format_size(MAX_RESPONSE_BYTES)},"
                            " which no Events API answer is; check the connection's base_url"
                        )
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise self._transient(
                        f"PagerDuty answered HTTP {resp.status_code} ({excerpt(raw)}); try again later",
                        retry_after=retry_after(resp.headers.get("Retry-After")),
                    )
                return resp.status_code, bytes(raw)
        except httpx.TimeoutException as exc:
            raise self._transient(f"PagerDuty did not answer within {timeout:g}s", timeout=True) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise self._permanent(f"base_url '{self.connection.base_url}' is not a valid http(s) URL") from exc
        except httpx.TransportError as exc:
            raise self._transient(f"could not reach PagerDuty: {str(exc) or type(exc).__name__}") from exc

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

    def _scrub(self, text: str) -> str:
        key = self.connection.routing_key.get_secret_value()
        return text.replace(key, "***") if key else text


def _default_dedup_key(ctx: ActionContext) -> str:
    key = ctx.idempotency_key
    # PagerDuty caps dedup keys at 255 characters; a digest keeps long keys stable.
    return key if len(key) <= 255 else "weir:" + hashlib.sha256(key.encode()).hexdigest()


def _payload(inp: PagerDutyEvent) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "summary": inp.summary,
        "source": inp.source,
        "severity": inp.severity or DEFAULT_SEVERITY,
        "timestamp": inp.timestamp.isoformat() if inp.timestamp else None,
        "component": inp.component,
        "group": inp.group,
        "class": inp.class_,
        "custom_details": inp.custom_details,
    }
    return {key: value for key, value in payload.items() if value is not None}


def _rejection(status: int, data: dict[str, Any]) -> str:
    message = str(data.get("message") or data.get("status") or "no message")
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        message += ": " + "; ".join(str(error) for error in errors[:5])
    return f"PagerDuty rejected the event (HTTP {status}): {message}"
