"""The Gemini API wire format: ``POST {base_url}/v1beta/models/{model}:generateContent``.

The key travels in ``x-goog-api-key``. Turns are ``contents`` with roles ``user``
and ``model``, system text is ``systemInstruction``, and ``generationConfig``
carries temperature, ``maxOutputTokens`` and JSON output: ``responseMimeType``
``application/json`` and, for a schema, ``responseJsonSchema``. That field takes
JSON Schema as users write it; the older ``responseSchema`` takes an OpenAPI
subset and rejects keywords such as ``additionalProperties``. Usage is
``usageMetadata``; thinking tokens are billed as output, so they count as output.
Errors arrive as ``{"error": {"code", "message", "status", "details"}}``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from weir.connectors.llm.common import Answer, AnswerProblem, ChatCall, Endpoint, WireFormat, WireRequest, tokens

_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")
_COMPLETE = {None, "STOP", "FINISH_REASON_UNSPECIFIED"}


def build(endpoint: Endpoint, call: ChatCall) -> WireRequest:
    model = call.model.removeprefix("models/")
    url = f"{endpoint.base_url.rstrip('/')}/v1beta/models/{quote(model, safe='')}:generateContent"
    body: dict[str, Any] = {
        "contents": [
            {"role": "model" if turn.role == "assistant" else "user", "parts": [{"text": turn.content}]}
            for turn in call.turns
        ]
    }
    if call.system:
        body["systemInstruction"] = {"parts": [{"text": call.system}]}
    config: dict[str, Any] = {"maxOutputTokens": call.max_tokens}
    if call.temperature is not None:
        config["temperature"] = call.temperature
    if call.json_mode:
        config["responseMimeType"] = "application/json"
    if call.schema is not None:
        config["responseJsonSchema"] = call.schema
    body["generationConfig"] = config
    return WireRequest(url=url, headers={"x-goog-api-key": endpoint.api_key or ""}, body=body)


def parse(data: Any, call: ChatCall) -> Answer:
    usage = data.get("usageMetadata") or {}
    candidates = data.get("candidates")
    if not candidates:
        reason = (data.get("promptFeedback") or {}).get("blockReason")
        if reason:
            raise AnswerProblem(f"Gemini blocked the prompt (blockReason {reason})")
        raise KeyError("candidates")
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(str(part.get("text", "")) for part in parts if not part.get("thought"))
    finish = candidate.get("finishReason")
    if not text and finish not in _COMPLETE:
        hint = "; raise max_tokens" if finish == "MAX_TOKENS" else ""
        raise AnswerProblem(f"Gemini stopped without an answer (finishReason {finish}){hint}")
    return Answer(
        text=text,
        model=str(data.get("modelVersion") or call.model),
        input_tokens=tokens(usage.get("promptTokenCount")),
        output_tokens=tokens(usage.get("candidatesTokenCount")) + tokens(usage.get("thoughtsTokenCount")),
    )


def error_message(data: Any) -> str | None:
    error = data["error"]
    status, message = error.get("status"), error.get("message")
    return f"{status}: {message}" if status and message else (message or status)


def retry_hint(data: Any) -> float | None:
    """The delay a 429 suggests in its google.rpc.RetryInfo detail, e.g. ``"retryDelay": "17s"``."""
    error = data.get("error") if isinstance(data, dict) else None
    for detail in (error or {}).get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


GEMINI = WireFormat("Gemini", build, parse, error_message, retry_hint=retry_hint)
