"""The Ollama wire format: ``POST {base_url}/api/chat`` with ``stream: false``.

``format`` is ``"json"`` for JSON mode or the JSON Schema itself for structured
output; ``options`` carries ``temperature`` and ``num_predict`` (the token
limit). Usage is ``prompt_eval_count`` and ``eval_count``; Ollama leaves
``prompt_eval_count`` out when the whole prompt came from its cache. Errors
arrive as ``{"error": "..."}``. A key, when set, is sent as a bearer token for
servers behind an authenticating proxy.
"""

from __future__ import annotations

from typing import Any

from weir.connectors.llm.common import Answer, ChatCall, Endpoint, WireFormat, WireRequest, tokens


def build(endpoint: Endpoint, call: ChatCall) -> WireRequest:
    messages = [{"role": "system", "content": call.system}] if call.system else []
    messages += [{"role": turn.role, "content": turn.content} for turn in call.turns]
    options: dict[str, Any] = {"num_predict": call.max_tokens}
    if call.temperature is not None:
        options["temperature"] = call.temperature
    body: dict[str, Any] = {"model": call.model, "messages": messages, "stream": False, "options": options}
    if call.schema is not None:
        body["format"] = call.schema
    elif call.json_mode:
        body["format"] = "json"
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    return WireRequest(url=f"{endpoint.base_url.rstrip('/')}/api/chat", headers=headers, body=body)


def parse(data: Any, call: ChatCall) -> Answer:
    content = data["message"]["content"]
    if not isinstance(content, str):
        raise TypeError("message content is not a string")
    return Answer(
        text=content,
        model=str(data.get("model") or call.model),
        input_tokens=tokens(data.get("prompt_eval_count")),
        output_tokens=tokens(data.get("eval_count")),
    )


def error_message(data: Any) -> str | None:
    error = data.get("error")
    return str(error) if error else None


OLLAMA = WireFormat("Ollama", build, parse, error_message)
