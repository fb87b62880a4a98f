"""A fake of five LLM wire formats in one app, each checked as strictly as its provider documents it.

Routes (point ``base_url`` at the prefix shown):

- OpenAI Chat Completions: ``{url}/v1`` -> ``POST /v1/chat/completions``, ``Authorization: Bearer``.
- OpenAI-compatible server: ``{url}/compat/v1`` -> same format, no key needed.
- Azure OpenAI: ``{url}`` -> ``POST /openai/deployments/{deployment}/chat/completions?api-version=``, ``api-key``.
- Anthropic Messages: ``{url}`` -> ``POST /v1/messages``, ``x-api-key`` and ``anthropic-version``.
- Gemini: ``{url}`` -> ``POST /v1beta/models/{model}:generateContent``, ``x-goog-api-key``.
- Ollama: ``{url}`` -> ``POST /api/chat``.

Every route records what it received, answers ``reply`` with ``usage`` tokens (or, per provider,
``replies[provider]`` with ``usages[provider]``, for workflows that call several providers),
returns the provider's own error body for bad input, and can be told to fail the
next N calls with a status (the body is the provider's error shape).
"""

from __future__ import annotations

import asyncio
import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

OPENAI_KEY = "sk-proj-FAKEopenaiKEY0123456789abcdef"
AZURE_KEY = "0123456789abcdef0123456789azurek"
AZURE_DEPLOYMENT = "gpt4o-prod"
ANTHROPIC_KEY = "sk-ant-api03-FAKEanthropicKEY0123456789"
GEMINI_KEY = "AIzaSyFAKEgeminiKEY0123456789abcdefghi"
GEMINI_MODELS = {"gemini-2.5-flash", "gemini-2.0-flash"}
OLLAMA_MODELS = {"llama3.2:latest", "llama3.2"}

_OPENAI_KEYS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "response_format", "top_p", "n",
    "stop", "seed", "user", "tools", "tool_choice", "stream", "presence_penalty", "frequency_penalty",
}  # fmt: skip
_ANTHROPIC_KEYS = {
    "model", "messages", "max_tokens", "system", "temperature", "tools", "tool_choice", "stop_sequences",
    "top_p", "top_k", "metadata", "stream", "thinking",
}  # fmt: skip
_GEMINI_KEYS = {"contents", "systemInstruction", "generationConfig", "safetySettings", "tools", "toolConfig"}
_GEMINI_CONFIG_KEYS = {
    "temperature", "maxOutputTokens", "topP", "topK", "candidateCount", "stopSequences", "responseMimeType",
    "responseSchema", "responseJsonSchema", "thinkingConfig", "seed",
}  # fmt: skip
_PROVIDER: ContextVar[str] = ContextVar("provider", default="")
"""The provider of the request being served."""
# JSON Schema keywords that Gemini's OpenAPI-subset responseSchema does not know.
_NOT_IN_RESPONSE_SCHEMA = {"additionalProperties", "$schema", "$defs", "$ref", "const", "definitions"}


@dataclass
class Received:
    """One request as the fake saw it."""

    provider: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any


@dataclass
class _Failure:
    status: int
    headers: dict[str, str]
    delay: float
    provider: str | None = None


class _Rejected(Exception):
    def __init__(self, status: int, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass
class FakeLlm:
    """State of the fake; ``app`` serves it. Call ``reset()`` between tests."""

    reply: str = "Hello from the fake."
    usage: tuple[int, int] = (12, 5)
    thoughts_tokens: int = 0
    """Gemini: thinking tokens to report in usageMetadata.thoughtsTokenCount."""
    gemini_block_reason: str | None = None
    replies: dict[str, str] = field(default_factory=dict)
    """Answer of one provider (``openai``, ``anthropic``, ``ollama``, ...), instead of ``reply``."""
    usages: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Token usage one provider reports, instead of ``usage``."""
    requests: list[Received] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/compat/v1/chat/completions", self._compatible, methods=["POST"]),
                Route("/openai/deployments/{deployment}/chat/completions", self._azure, methods=["POST"]),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
                Route("/v1beta/models/{model}:generateContent", self._gemini, methods=["POST"]),
                Route("/api/chat", self._ollama, methods=["POST"]),
            ]
        )

    def reset(self) -> None:
        self.reply, self.usage, self.thoughts_tokens, self.gemini_block_reason = (
            "Hello from the fake.",
            (12, 5),
            0,
            None,
        )
        self.replies.clear()
        self.usages.clear()
        self.requests.clear()
        self._failures.clear()

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        delay: float = 0,
        provider: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (to ``provider`` only, when given) with ``status`` and its error body."""
        self._failures.extend(_Failure(status, headers or {}, delay, provider) for _ in range(count))

    @property
    def last(self) -> Received:
        return self.requests[-1]

    def of(self, provider: str) -> list[Received]:
        """The requests one provider received, in order."""
        return [r for r in self.requests if r.provider == provider]

    def _reply(self) -> str:
        return self.replies.get(_PROVIDER.get(), self.reply)

    def _usage(self) -> tuple[int, int]:
        return self.usages.get(_PROVIDER.get(), self.usage)

    # -- plumbing -----------------------------------------------------------------------------

    async def _serve(self, request: Request, provider: str, handle: Any, error: Any) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append(
            Received(provider, request.url.path, dict(request.headers), dict(request.query_params), body)
        )
        _PROVIDER.set(provider)
        failure = next((f for f in self._failures if f.provider in (None, provider)), None)
        if failure is not None:
            self._failures.remove(failure)
            if failure.delay:
                await asyncio.sleep(failure.delay)
            response: Response = error(_Rejected(failure.status, f"injected failure {failure.status}", "injected"))
            response.headers.update(failure.headers)
            return response
        try:
            if not isinstance(body, dict):
                raise _Rejected(400, "We could not parse the JSON body of your request.", "invalid_request_error")
            response = await handle(request, body)
        except _Rejected as exc:
            response = error(exc)
        assert isinstance(response, Response)
        return response

    # -- OpenAI, Azure, compatible ------------------------------------------------------------

    async def _openai(self, request: Request) -> Response:
        return await self._serve(request, "openai", self._openai_handle, _openai_error)

    async def _openai_handle(self, request: Request, body: dict[str, Any]) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise _Rejected(401, "You didn't provide an API key.", "invalid_request_error")
        key = auth.removeprefix("Bearer ")
        if key != OPENAI_KEY:
            raise _Rejected(401, f"Incorrect API key provided: {key[:3]}*****{key[-4:]}.", "invalid_api_key")
        if body.get("model") == "no-such-model":
            raise _Rejected(
                404, "The model `no-such-model` does not exist or you do not have access to it.", "model_not_found"
            )
        if "max_tokens" in body:
            raise _Rejected(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model."
                " Use 'max_completion_tokens' instead.",
                "unsupported_parameter",
            )
        return self._chat_completion(body, model=f"{body.get('model')}-2024-08-06", need_model=True)

    async def _compatible(self, request: Request) -> Response:
        return await self._serve(
            request,
            "openai-compatible",
            lambda _r, b: _ready(self._chat_completion(b, b.get("model"), True)),
            _openai_error,
        )

    async def _azure(self, request: Request) -> Response:
        return await self._serve(request, "azure-openai", self._azure_handle, _azure_error)

    async def _azure_handle(self, request: Request, body: dict[str, Any]) -> Response:
        if request.query_params.get("api-version") != "2024-10-21":
            raise _Rejected(404, "Resource not found", "404")
        if request.headers.get("api-key") != AZURE_KEY:
            raise _Rejected(
                401,
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid"
                " key for an active subscription and use a correct regional API endpoint for your resource.",
                "401",
            )
        if request.path_params["deployment"] != AZURE_DEPLOYMENT:
            raise _Rejected(404, "The API deployment for this resource does not exist.", "DeploymentNotFound")
        return self._chat_completion(body, model="gpt-4o-2024-11-20", need_model=False)

    def _chat_completion(self, body: dict[str, Any], model: Any, need_model: bool) -> Response:
        unknown = set(body) - _OPENAI_KEYS
        if unknown:
            raise _Rejected(
                400, f"Unrecognized request argument supplied: {sorted(unknown)[0]}", "invalid_request_error"
            )
        if need_model and not isinstance(body.get("model"), str):
            raise _Rejected(400, "you must provide a model parameter", "invalid_request_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Rejected(400, "[] is too short - 'messages'", "invalid_request_error")
        for message in messages:
            if message.get("role") not in ("system", "developer", "user", "assistant", "tool"):
                raise _Rejected(
                    400,
                    f"Invalid value: '{message.get('role')}'. Supported values are:"
                    " 'system', 'assistant', 'user', 'tool', and 'developer'.",
                    "invalid_value",
                )
            if not isinstance(message.get("content"), str | list):
                raise _Rejected(400, "Invalid type for 'messages[0].content'", "invalid_type")
        temperature = body.get("temperature", 1)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            raise _Rejected(400, "Invalid 'temperature': decimal above maximum value.", "decimal_above_max_value")
        _check_response_format(body.get("response_format"), messages)
        prompt_tokens, completion_tokens = self._usage()
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self._reply(), "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    # -- Anthropic ----------------------------------------------------------------------------

    async def _anthropic(self, request: Request) -> Response:
        return await self._serve(request, "anthropic", self._anthropic_handle, _anthropic_error)

    async def _anthropic_handle(self, request: Request, body: dict[str, Any]) -> Response:
        key = request.headers.get("x-api-key")
        if not key:
            raise _Rejected(401, "x-api-key header is required", "authentication_error")
        if key != ANTHROPIC_KEY:
            raise _Rejected(401, "invalid x-api-key", "authentication_error")
        if not request.headers.get("anthropic-version"):
            raise _Rejected(400, "anthropic-version: header is required", "invalid_request_error")
        unknown = set(body) - _ANTHROPIC_KEYS
        if unknown:
            raise _Rejected(400, f"{sorted(unknown)[0]}: Extra inputs are not permitted", "invalid_request_error")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                raise _Rejected(400, f"{name}: Field required", "invalid_request_error")
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            raise _Rejected(400, "max_tokens: Input should be a valid integer", "invalid_request_error")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise _Rejected(400, "messages: at least one message is required", "invalid_request_error")
        for index, message in enumerate(messages):
            if message.get("role") not in ("user", "assistant"):
                raise _Rejected(
                    400,
                    f'messages.{index}.role: Unexpected role "{message.get("role")}". The Messages API accepts'
                    ' a top-level `system` parameter, not "system" as an input message role.',
                    "invalid_request_error",
                )
        if "system" in body and not isinstance(body["system"], str | list):
            raise _Rejected(400, "system: Input should be a valid string or list", "invalid_request_error")
        temperature = body.get("temperature", 1)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
            raise _Rejected(400, "temperature: range: 0..1", "invalid_request_error")
        tools = body.get("tools") or []
        for index, tool in enumerate(tools):
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise _Rejected(
                    400, f"tools.{index}.custom.input_schema.type: Input should be 'object'", "invalid_request_error"
                )
        choice = body.get("tool_choice")
        in_tokens, out_tokens = self._usage()
        content: list[dict[str, Any]]
        if choice is not None:
            if choice.get("type") != "tool" or choice.get("name") not in {t.get("name") for t in tools}:
                raise _Rejected(400, "tool_choice: tool not found in tools", "invalid_request_error")
            try:
                tool_input = json.loads(self._reply())
            except ValueError:
                tool_input = {}
            content = [{"type": "tool_use", "id": "toolu_fake", "name": choice["name"], "input": tool_input}]
            stop_reason = "tool_use"
        else:
            content = [{"type": "text", "text": self._reply()}]
            stop_reason = "end_turn"
        return JSONResponse(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens, "cache_read_input_tokens": 0},
            }
        )

    # -- Gemini -------------------------------------------------------------------------------

    async def _gemini(self, request: Request) -> Response:
        return await self._serve(request, "gemini", self._gemini_handle, _gemini_error)

    async def _gemini_handle(self, request: Request, body: dict[str, Any]) -> Response:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            raise _Rejected(
                403,
                "Method doesn't allow unregistered callers (callers without established identity)."
                " Please use API Key or other form of API consumer identity to call this API.",
                "PERMISSION_DENIED",
            )
        if key != GEMINI_KEY:
            raise _Rejected(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")
        model = request.path_params["model"]
        if model not in GEMINI_MODELS:
            raise _Rejected(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported for generateContent.",
                "NOT_FOUND",
            )
        for name in sorted(set(body) - _GEMINI_KEYS):
            raise _Rejected(
                400, f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.', "INVALID_ARGUMENT"
            )
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Rejected(400, "* GenerateContentRequest.contents: contents is not specified", "INVALID_ARGUMENT")
        for content in contents:
            if content.get("role") not in ("user", "model"):
                raise _Rejected(400, "Please use a valid role: user, model.", "INVALID_ARGUMENT")
            if not content.get("parts"):
                raise _Rejected(
                    400,
                    "* GenerateContentRequest.contents.parts: contents.parts must not be empty.",
                    "INVALID_ARGUMENT",
                )
        system = body.get("systemInstruction")
        if system is not None and not (isinstance(system, dict) and system.get("parts")):
            raise _Rejected(400, 'Invalid JSON payload received. Unknown name "systemInstruction"', "INVALID_ARGUMENT")
        config = body.get("generationConfig") or {}
        for name in sorted(set(config) - _GEMINI_CONFIG_KEYS):
            raise _Rejected(
                400,
                f"Invalid JSON payload received. Unknown name \"{name}\" at 'generation_config': Cannot find field.",
                "INVALID_ARGUMENT",
            )
        if "responseSchema" in config and "responseJsonSchema" in config:
            raise _Rejected(400, "responseSchema and responseJsonSchema cannot both be set.", "INVALID_ARGUMENT")
        if ("responseSchema" in config or "responseJsonSchema" in config) and config.get(
            "responseMimeType"
        ) != "application/json":
            raise _Rejected(
                400, "response_mime_type must be application/json when a response schema is set.", "INVALID_ARGUMENT"
            )
        if "responseSchema" in config:
            bad = _find_keys(config["responseSchema"], _NOT_IN_RESPONSE_SCHEMA)
            if bad:
                raise _Rejected(
                    400,
                    f'Invalid JSON payload received. Unknown name "{bad}"'
                    " at 'generation_config.response_schema': Cannot find field.",
                    "INVALID_ARGUMENT",
                )
        prompt_tokens, candidate_tokens = self._usage()
        usage: dict[str, int] = {"promptTokenCount": prompt_tokens}
        if self.gemini_block_reason:
            return JSONResponse(
                {
                    "promptFeedback": {"blockReason": self.gemini_block_reason},
                    "usageMetadata": usage,
                    "modelVersion": model,
                }
            )
        usage["candidatesTokenCount"] = candidate_tokens
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        usage["totalTokenCount"] = sum(usage.values())
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": self._reply()}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": usage,
                "modelVersion": f"{model}-001",
                "responseId": "fake-response",
            }
        )

    # -- Ollama -------------------------------------------------------------------------------

    async def _ollama(self, request: Request) -> Response:
        return await self._serve(request, "ollama", self._ollama_handle, _ollama_error)

    async def _ollama_handle(self, request: Request, body: dict[str, Any]) -> Response:
        model = body.get("model")
        if not model:
            raise _Rejected(400, "model is required")
        if model not in OLLAMA_MODELS:
            raise _Rejected(404, f'model "{model}" not found, try pulling it first')
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _Rejected(400, "messages must be a list")
        for message in messages:
            if message.get("role") not in ("system", "user", "assistant", "tool"):
                raise _Rejected(400, f"invalid role: {message.get('role')}")
        fmt = body.get("format")
        if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
            raise _Rejected(400, 'invalid format: expected "json" or a JSON schema')
        if not isinstance(body.get("options", {}), dict):
            raise _Rejected(400, "options must be an object")
        prompt_tokens, eval_tokens = self._usage()
        final = {
            "model": model,
            "created_at": "2024-11-01T12:00:00.000000Z",
            "message": {"role": "assistant", "content": self._reply()},
            "done_reason": "stop",
            "done": True,
            "total_duration": 5_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": 1_000_000,
            "eval_count": eval_tokens,
            "eval_duration": 2_000_000,
        }
        if body.get("stream", True) is not False:  # Ollama streams NDJSON unless told not to
            chunk = {**final, "done": False, "message": {"role": "assistant", "content": self._reply()}}
            lines = [
                json.dumps(chunk) + "\n",
                json.dumps({**final, "message": {"role": "assistant", "content": ""}}) + "\n",
            ]
            return StreamingResponse(iter(lines), media_type="application/x-ndjson")
        return JSONResponse(final)


async def _ready(response: Response) -> Response:
    return response


def _check_response_format(fmt: Any, messages: list[dict[str, Any]]) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        if not any("json" in json.dumps(m.get("content", "")).lower() for m in messages):
            raise _Rejected(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                "invalid_request_error",
            )
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not spec.get("name") or not isinstance(spec.get("schema"), dict):
            raise _Rejected(
                400, "Missing required parameter: 'response_format.json_schema.name'.", "missing_required_parameter"
            )
        if spec.get("strict"):
            problem = _strict_problem(spec["schema"], "()")
            if problem:
                raise _Rejected(
                    400, f"Invalid schema for response_format '{spec['name']}': {problem}", "invalid_request_error"
                )
    elif kind != "text":
        raise _Rejected(
            400,
            f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
            "invalid_value",
        )


def _strict_problem(schema: dict[str, Any], where: str) -> str | None:
    if where == "()" and schema.get("type") != "object":
        return "schema must be a JSON Schema of 'type: \"object\"', got 'type: \"" + str(schema.get("type")) + "\"'."
    if schema.get("type") == "object":
        if schema.get("additionalProperties") is not False:
            return f"In context={where}, 'additionalProperties' is required to be supplied and to be false."
        properties = schema.get("properties") or {}
        missing = sorted(set(properties) - set(schema.get("required") or []))
        if missing:
            return (
                f"In context={where}, 'required' is required to be supplied and to be an array"
                f" including every key in properties. Missing '{missing[0]}'."
            )
        for name, child in properties.items():
            problem = _strict_problem(child, f"('properties', '{name}')")
            if problem:
                return problem
    if isinstance(schema.get("items"), dict):
        return _strict_problem(schema["items"], f"{where}, 'items'")
    return None


def _find_keys(schema: Any, names: set[str]) -> str | None:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in names:
                return str(key)
            found = _find_keys(value, names)
            if found:
                return found
    if isinstance(schema, list):
        for item in schema:
            found = _find_keys(item, names)
            if found:
                return found
    return None


def _openai_error(exc: _Rejected) -> Response:
    code = {429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}.get(exc.status, exc.kind or None)
    kind = {429: "requests", 500: "server_error", 503: "server_error"}.get(exc.status, "invalid_request_error")
    if exc.kind == "injected" and exc.status == 429:
        message = "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1."
    else:
        message = exc.message
    error = {"message": message, "type": kind, "param": None, "code": code}
    return JSONResponse({"error": error}, exc.status)


def _azure_error(exc: _Rejected) -> Response:
    return JSONResponse({"error": {"code": exc.kind or str(exc.status), "message": exc.message}}, exc.status)


_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error",
}  # fmt: skip


def _anthropic_error(exc: _Rejected) -> Response:
    kind = _ANTHROPIC_TYPES.get(exc.status, "api_error") if exc.kind in ("", "injected") else exc.kind
    message = {529: "Overloaded", 429: "Number of requests has exceeded your rate limit."}.get(exc.status, exc.message)
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, exc.status)


_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL", 503: "UNAVAILABLE",
}  # fmt: skip


def _gemini_error(exc: _Rejected) -> Response:
    status = exc.kind if exc.kind not in ("", "injected", "invalid_request_error") else _GOOGLE_STATUS.get(exc.status)
    error: dict[str, Any] = {"code": exc.status, "message": exc.message, "status": status}
    if exc.status == 429:
        error["message"] = "You exceeded your current quota, please check your plan and billing details."
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]
    return JSONResponse({"error": error}, exc.status)


def _ollama_error(exc: _Rejected) -> Response:
    return JSONResponse({"error": exc.message}, exc.status)
