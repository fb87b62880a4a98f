"""What every LLM wire format shares: the call, the answer, the HTTP exchange, usage and JSON handling.

A wire format (one module each: openai, anthropic, gemini, ollama) is three
functions gathered in a ``WireFormat``: ``build`` turns a provider-neutral
``ChatCall`` into a ``WireRequest``, ``parse`` turns the provider's JSON into an
``Answer`` with normalised usage, and ``error_message`` reads the provider's
error body. ``exchange`` does the HTTP part and classifies failures the same way
for all of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from weir.connectors.wire import excerpt, retry_after
from weir.errors import PermanentError, TransientError

if TYPE_CHECKING:
    import httpx

JSON_HINT = "Answer with JSON only, without any text around it."
"""Added to the system prompt in JSON mode when no message mentions JSON (OpenAI insists on the word)."""


@dataclass(frozen=True)
class Turn:
    """One message of the conversation; system text travels separately in ``ChatCall.system``."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the provider, from the connection."""

    base_url: str
    api_key: str | None
    api_version: str
    deployment: str


@dataclass(frozen=True)
class ChatCall:
    """A chat request in provider-neutral form."""

    model: str
    system: str | None
    turns: tuple[Turn, ...]
    max_tokens: int
    temperature: float | None = None
    json_mode: bool = False
    """An answer in JSON is asked (``json = true`` or a ``json_schema``)."""
    schema: dict[str, Any] | None = None
    """The schema as the provider receives it (wrapped in an object where the provider needs one)."""


@dataclass(frozen=True)
class WireRequest:
    """An HTTP POST with a JSON body."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """The provider's answer with usage normalised to input and output tokens."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    structured: Any = None
    """A JSON value the provider returned as data (Anthropic's tool input), when ``has_structured``."""
    has_structured: bool = False


class AnswerProblem(Exception):
    """Raised by ``parse`` when the provider answered but gave no usable answer (blocked, refused)."""


def _no_retry_hint(_data: Any) -> float | None:
    return None


@dataclass(frozen=True)
class WireFormat:
    """One provider's request and response format."""

    label: str
    build: Callable[[Endpoint, ChatCall], WireRequest]
    parse: Callable[[Any, ChatCall], Answer]
    error_message: Callable[[Any], str | None]
    object_schema_only: bool = False
    """The provider accepts only schemas whose root is an object; others are wrapped as {"value": ...}."""
    retry_hint: Callable[[Any], float | None] = _no_retry_hint


@dataclass(frozen=True)
class Reporter:
    """Builds classified errors that name the connection and never contain a secret."""

    connection: str | None
    action: str
    secrets: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def permanent(self, message: str) -> PermanentError:
        return PermanentError(self.scrub(message), connection=self.connection, action=self.action)

    def transient(self, message: str, *, retry_after: float | None = None, timeout: bool = False) -> TransientError:
        return TransientError(
            self.scrub(message),
            connection=self.connection,
            action=self.action,
            retry_after=retry_after,
            timeout=timeout,
        )


async def exchange(
    client: httpx.AsyncClient,
    wire: WireFormat,
    request: WireRequest,
    *,
    seconds: float,
    max_bytes: int,
    report: Reporter,
) -> Any:
    """POST the request and return the decoded JSON answer; raise Transient/PermanentError otherwise."""
    import httpx

    try:
        async with client.stream(
            "POST", request.url, params=request.params, headers=request.headers, json=request.body, timeout=seconds
        ) as resp:
            raw = bytearray()
            async for chunk in resp.aiter_bytes():
                raw += chunk
                if len(raw) > max_bytes:
                    raise report.permanent(
                        f"unexpected response from {wire.label}: larger than max_response_bytes ({max_bytes} bytes)"
                    )
            status, headers = resp.status_code, resp.headers
    except httpx.TimeoutException as exc:
        raise report.transient(f"{wire.label} did not answer within {seconds:g}s", timeout=True) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise report.permanent(f"'{request.url}' is not a valid http(s) URL; check the connection's base_url") from exc
    except httpx.TransportError as exc:
        raise report.transient(
            f"could not reach {wire.label} at {request.url}: {str(exc) or type(exc).__name__}"
        ) from exc
    data = _decode(raw)
    if status >= 400:
        message = _provider_message(wire, data) or excerpt(raw.decode("utf-8", "replace"))
        if status in (408, 429) or status >= 500:
            retry_after = _retry_after(headers.get("retry-after-ms"), headers.get("retry-after"))
            if retry_after is None and data is not None:
                retry_after = wire.retry_hint(data)
            raise report.transient(
                f"{wire.label} answered HTTP {status}: {message}; try again later", retry_after=retry_after
            )
        hint = "; check the connection's api_key" if status in (401, 403) else ""
        raise report.permanent(f"{wire.label} rejected the request (HTTP {status}): {message}{hint}")
    if data is None:
        raise report.permanent(f"unexpected response from {wire.label}: {excerpt(raw.decode('utf-8', 'replace'))}")
    return data


def read_answer(wire: WireFormat, data: Any, call: ChatCall, report: Reporter) -> Answer:
    """``wire.parse`` with shape errors turned into "unexpected response" PermanentErrors."""
    try:
        return wire.parse(data, call)
    except AnswerProblem as exc:
        raise report.permanent(str(exc)) from exc
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        shown = excerpt(json.dumps(data, ensure_ascii=False))
        raise report.permanent(f"unexpected response from {wire.label}: {shown}") from exc


def tokens(value: Any) -> int:
    """A token count from a usage field: non-negative integers pass, anything else (missing, null) is 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


def wants_json_hint(call_system: str | None, turns: tuple[Turn, ...]) -> bool:
    """True when nothing in the conversation mentions JSON, so JSON mode needs the hint."""
    texts = [call_system or "", *(turn.content for turn in turns)]
    return not any("json" in text.lower() for text in texts)


def object_root(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``schema`` itself when its root is an object, else an object schema holding it as ``value``."""
    if schema.get("type") == "object":
        return schema, False
    moved = ("$defs", "definitions", "$schema", "$id")
    wrapper: dict[str, Any] = {
        "type": "object",
        "properties": {"value": {key: value for key, value in schema.items() if key not in moved}},
        "required": ["value"],
        "additionalProperties": False,
    }
    # Definitions move to the new root so that "#/$defs/..." references still resolve.
    wrapper.update({key: schema[key] for key in ("$defs", "definitions") if key in schema})
    return wrapper, True


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)\r?\n?[ \t]*```", re.DOTALL)


def parse_json_answer(text: str) -> Any:
    """The JSON value in the model's answer, which may sit in a ```json fence; raise AnswerProblem otherwise."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError as exc:
        problem = str(exc)
    match = _FENCE.search(stripped)
    if match:
        try:
            return json.loads(match.group(1))
        except ValueError as exc:
            problem = str(exc)
    raise AnswerProblem(f"the model's answer is not valid JSON ({problem}); it reads: {excerpt(text)}")


def check_answer(value: Any, schema: dict[str, Any]) -> None:
    """Raise AnswerProblem when ``value`` does not match ``schema``, naming the first problem and where."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return
    problem = excerpt(str(error.message), 300)
    raise AnswerProblem(
        f"the model's answer does not match json_schema: {problem} at {error.json_path}; "
        f"it reads: {excerpt(json.dumps(value, ensure_ascii=False))}"
    )


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema, or None when it is."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        return f"{exc.message} at {exc.json_path}"
    return None


def _decode(raw: bytes | bytearray) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _provider_message(wire: WireFormat, data: Any) -> str | None:
    if data is None:
        return None
    try:
        message = wire.error_message(data)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return excerpt(message, 500) if message else None


def _retry_after(milliseconds: str | None, value: str | None) -> float | None:
    """Seconds to wait from retry-after-ms (OpenAI) or Retry-After (seconds or an HTTP date)."""
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    return retry_after(value)
