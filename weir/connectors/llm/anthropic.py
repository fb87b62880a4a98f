"""The Anthropic Messages API wire format: ``POST {base_url}/v1/messages``.

Headers ``x-api-key`` and ``anthropic-version: 2023-06-01``; ``system`` is a
top-level field and messages alternate user and assistant. The answer is a list
of content blocks. Structured output uses a forced tool: the schema is the tool's
``input_schema``, ``tool_choice`` names it, and the ``tool_use`` block's
``input`` is the answer. Errors arrive as ``{"type": "error", "error": {"type",
"message"}}``; 529 ``overloaded_error`` is transient like any 5xx.
"""

from __future__ import annotations

import json
from typing import Any

from weir.connectors.llm.common import Answer, AnswerProblem, ChatCall, Endpoint, WireFormat, WireRequest, tokens

API_VERSION = "2023-06-01"
TOOL_NAME = "output"


def build(endpoint: Endpoint, call: ChatCall) -> WireRequest:
    body: dict[str, Any] = {
        "model": call.model,
        "max_tokens": call.max_tokens,
        "messages": [{"role": turn.role, "content": turn.content} for turn in call.turns],
    }
    if call.system:
        body["system"] = call.system
    if call.temperature is not None:
        body["temperature"] = call.temperature
    if call.schema is not None:
        description = "Record the answer in the required structure."
        body["tools"] = [{"name": TOOL_NAME, "description": description, "input_schema": call.schema}]
        body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
    headers = {"x-api-key": endpoint.api_key or "", "anthropic-version": API_VERSION}
    return WireRequest(url=f"{endpoint.base_url.rstrip('/')}/v1/messages", headers=headers, body=body)


def parse(data: Any, call: ChatCall) -> Answer:
    if data["type"] != "message":
        raise ValueError("not a message")
    blocks = data["content"]
    usage = data["usage"]
    # input_tokens excludes prompt-cache reads and writes; all three are input the call consumed.
    input_tokens = sum(
        tokens(usage.get(key)) for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    model, output_tokens = str(data.get("model") or call.model), tokens(usage.get("output_tokens"))
    if call.schema is not None:
        for block in blocks:
            if block["type"] == "tool_use" and block["name"] == TOOL_NAME:
                value = block["input"]
                text = json.dumps(value, ensure_ascii=False)
                return Answer(text, model, input_tokens, output_tokens, structured=value, has_structured=True)
        raise AnswerProblem(f"Anthropic answered without the structured output (stop_reason {data.get('stop_reason')})")
    text = "".join(block["text"] for block in blocks if block["type"] == "text")
    if not isinstance(text, str):
        raise TypeError("text blocks hold no text")
    if not text and data.get("stop_reason") == "refusal":
        raise AnswerProblem("the model refused to answer (stop_reason refusal)")
    return Answer(text, model, input_tokens, output_tokens)


def error_message(data: Any) -> str | None:
    error = data["error"]
    kind, message = error.get("type"), error.get("message")
    return f"{kind}: {message}" if kind and message else (message or kind)


ANTHROPIC = WireFormat("Anthropic", build, parse, error_message, object_schema_only=True)
