"""The Chat Completions wire format: OpenAI, Azure OpenAI and OpenAI-compatible servers.

OpenAI: ``POST {base_url}/chat/completions`` with ``Authorization: Bearer``.
Azure: ``POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...``
with an ``api-key`` header; the deployment picks the model. Compatible servers
(vLLM, LM Studio, llama.cpp, LiteLLM...) take the OpenAI path, a bearer key when
one is set, and the older ``max_tokens`` name that all of them understand.
Errors arrive as ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from weir.connectors.llm.common import Answer, AnswerProblem, ChatCall, Endpoint, WireFormat, WireRequest, tokens

SCHEMA_NAME = "output"


def build_openai(endpoint: Endpoint, call: ChatCall) -> WireRequest:
    # OpenAI deprecated max_tokens; o-series and newer models reject it.
    body = {"model": call.model, **_body(call, tokens_field="max_completion_tokens")}
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}
    return WireRequest(url=f"{endpoint.base_url.rstrip('/')}/chat/completions", headers=headers, body=body)


def build_azure(endpoint: Endpoint, call: ChatCall) -> WireRequest:
    url = f"{endpoint.base_url.rstrip('/')}/openai/deployments/{quote(endpoint.deployment, safe='')}/chat/completions"
    return WireRequest(
        url=url,
        headers={"api-key": endpoint.api_key or ""},
        body=_body(call, tokens_field="max_completion_tokens"),
        params={"api-version": endpoint.api_version},
    )


def build_compatible(endpoint: Endpoint, call: ChatCall) -> WireRequest:
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    body = {"model": call.model, **_body(call, tokens_field="max_tokens")}
    return WireRequest(url=f"{endpoint.base_url.rstrip('/')}/chat/completions", headers=headers, body=body)


def parse(data: Any, call: ChatCall) -> Answer:
    choice = data["choices"][0]
    message = choice["message"]
    if message.get("refusal"):
        raise AnswerProblem(f"the model refused to answer: {message['refusal']}")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError("message content is not a string")
    if content is None and choice.get("finish_reason") == "content_filter":
        raise AnswerProblem("the provider's content filter withheld the answer (finish_reason content_filter)")
    usage = data.get("usage") or {}
    return Answer(
        text=content or "",
        model=str(data.get("model") or call.model),
        input_tokens=tokens(usage.get("prompt_tokens")),
        output_tokens=tokens(usage.get("completion_tokens")),
    )


def error_message(data: Any) -> str | None:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "") or None
    if isinstance(error, str):  # some compatible servers
        return error
    detail = (data.get("detail") or data.get("message")) if isinstance(data, dict) else None
    return str(detail) if detail else None


def strict_compatible(schema: Any) -> bool:
    """Whether OpenAI's strict mode accepts ``schema``: every object closed and every property required."""
    if isinstance(schema, list):
        return all(strict_compatible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False or set(schema.get("required") or []) != set(properties):
            return False
    children = [*(schema.get("properties") or {}).values(), *(schema.get("$defs") or {}).values()]
    children += [*(schema.get("definitions") or {}).values(), schema.get("items")]
    children += [*(schema.get("anyOf") or []), *(schema.get("allOf") or [])]
    return all(strict_compatible(child) for child in children if child is not None)


def _body(call: ChatCall, *, tokens_field: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": call.system}] if call.system else []
    messages += [{"role": turn.role, "content": turn.content} for turn in call.turns]
    body: dict[str, Any] = {"messages": messages, tokens_field: call.max_tokens}
    if call.temperature is not None:
        body["temperature"] = call.temperature
    if call.schema is not None:
        # Strict mode guarantees the shape but refuses schemas with open objects; those still
        # steer the model without it, and the connector validates the answer either way.
        spec = {"name": SCHEMA_NAME, "schema": call.schema, "strict": strict_compatible(call.schema)}
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif call.json_mode:
        body["response_format"] = {"type": "json_object"}
    return body


OPENAI = WireFormat("OpenAI", build_openai, parse, error_message, object_schema_only=True)
AZURE = WireFormat("Azure OpenAI", build_azure, parse, error_message, object_schema_only=True)
COMPATIBLE = WireFormat("the OpenAI-compatible server", build_compatible, parse, error_message, object_schema_only=True)
