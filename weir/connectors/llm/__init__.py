"""Chat with a large language model: OpenAI, Azure OpenAI, Anthropic, Gemini, Ollama or an OpenAI-compatible server.

``llm.chat`` takes a prompt or messages and returns ``{text, json, model, usage}``.
Each provider's wire format lives in its own module (``openai``, ``anthropic``,
``gemini``, ``ollama``); ``common`` holds what they share. With ``json = true`` or
a ``json_schema`` the answer is parsed as JSON (a ```json fence is accepted) and
checked against the schema; a bad answer is a PermanentError quoting its start.
Token usage is reported to ``ctx.add_usage`` once per answered call, including
calls whose answer then fails the JSON checks, since those tokens were spent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from weir import __version__
from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, Size, action
from weir.connectors.llm.anthropic import ANTHROPIC
from weir.connectors.llm.common import (
    JSON_HINT,
    AnswerProblem as _AnswerProblem,
    ChatCall,
    Endpoint,
    Reporter,
    Turn,
    WireFormat,
    check_answer,
    exchange,
    object_root,
    parse_json_answer,
    read_answer,
    schema_error,
    wants_json_hint,
)
from weir.connectors.llm.gemini import GEMINI
from weir.connectors.llm.ollama import OLLAMA
from weir.connectors.llm.openai import AZURE, COMPATIBLE, OPENAI
from weir.schemas.common import Duration

if TYPE_CHECKING:
    import httpx

Provider = Literal["openai", "azure-openai", "anthropic", "gemini", "ollama", "openai-compatible"]

DEFAULT_TIMEOUT = timedelta(seconds=60)
DEFAULT_MAX_TOKENS = 1024
DEFAULT_API_VERSION = "2024-10-21"
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "ollama": "http://localhost:11434",
}
WIRE_FORMATS: dict[str, WireFormat] = {
    "openai": OPENAI,
    "azure-openai": AZURE,
    "openai-compatible": COMPATIBLE,
    "anthropic": ANTHROPIC,
    "gemini": GEMINI,
    "ollama": OLLAMA,
}
_KEYLESS = {"ollama", "openai-compatible"}
_ACTION = "llm.chat"


class LlmConnection(ConnectionSettings):
    """One model at one provider."""

    provider: Provider = Field(
        description="openai, azure-openai, anthropic, gemini, ollama or openai-compatible (Chat Completions)."
    )
    model: str = Field(min_length=1, description="Model name, e.g. 'gpt-4o-mini', 'claude-sonnet-4-5', 'llama3.2'.")
    api_key: SecretStr | None = Field(None, description="API key. Required except for ollama and openai-compatible.")
    base_url: str | None = Field(
        None,
        description="API root. Defaults: https://api.openai.com/v1, https://api.anthropic.com, "
        "https://generativelanguage.googleapis.com, http://localhost:11434. Required for azure-openai "
        "(the resource endpoint, https://NAME.openai.azure.com) and openai-compatible (e.g. http://host:8000/v1).",
    )
    api_version: str = Field(DEFAULT_API_VERSION, description="azure-openai: the api-version. Default 2024-10-21.")
    deployment: str | None = Field(None, description="azure-openai: the deployment name. Default: model.")
    timeout: Duration = Field(DEFAULT_TIMEOUT, description="Time allowed for each request. Default 60s.")
    max_response_bytes: Size = Field(
        MAX_RESPONSE_BYTES, gt=0, description="Largest answer accepted, bytes or e.g. '10MiB'. Default 10MiB."
    )

    @model_validator(mode="after")
    def _check_provider_needs(self) -> LlmConnection:
        if self.api_key is None and self.provider not in _KEYLESS:
            raise ValueError(f"provider '{self.provider}' needs api_key; pass it as a secret")
        if self.base_url is None and self.provider not in DEFAULT_BASE_URLS:
            example = "https://NAME.openai.azure.com" if self.provider == "azure-openai" else "http://host:8000/v1"
            raise ValueError(f"provider '{self.provider}' needs base_url, e.g. {example}")
        return self

    def endpoint(self) -> Endpoint:
        """Where requests go, with defaults applied."""
        return Endpoint(
            base_url=self.base_url or DEFAULT_BASE_URLS[self.provider],
            api_key=self.api_key.get_secret_value() if self.api_key else None,
            api_version=self.api_version,
            deployment=self.deployment or self.model,
        )


class ChatMessage(ActionInput):
    """One message of a conversation."""

    role: Literal["system", "user", "assistant"] = Field(description="system, user or assistant.")
    content: str = Field(description="The message text.")


class LlmChat(ActionInput):
    """A chat request: a prompt or a conversation, with optional JSON output."""

    prompt: str | None = Field(None, min_length=1, description="The user's message. Set this or messages.")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1, description="The conversation so far, oldest first. Set this or prompt."
    )
    system: str | None = Field(None, description="System instructions.")
    json_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema the answer must match (structured output); the parsed answer is in `json`."
    )
    json_: bool = Field(False, alias="json", description="Ask for a JSON answer; the parsed answer is in `json`.")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature. Default: the provider's.")
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, description="Most tokens the answer may use. Default 1024.")
    model: str | None = Field(None, min_length=1, description="Use this model instead of the connection's.")

    @model_validator(mode="after")
    def _check(self) -> LlmChat:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("set exactly one of `prompt` or `messages`")
        if self.messages is not None and all(message.role == "system" for message in self.messages):
            raise ValueError("`messages` needs at least one user message")
        if self.json_schema is not None:
            problem = schema_error(self.json_schema)
            if problem:
                raise ValueError(f"json_schema is not a valid JSON Schema: {problem}")
        return self


class LlmUsage(BaseModel):
    """Tokens the call consumed, normalised across providers."""

    input_tokens: int = Field(description="Prompt tokens, cached ones included.")
    output_tokens: int = Field(description="Answer tokens, thinking tokens included.")


class LlmResult(BaseModel):
    """The model's answer."""

    model_config = ConfigDict(populate_by_name=True)

    text: str = Field(description="The answer as text (for structured output, the JSON text).")
    json_: Any = Field(None, alias="json", description="The parsed JSON answer when json or json_schema was set.")
    model: str = Field(description="The model that answered, as the provider names it.")
    usage: LlmUsage = Field(description="Tokens consumed.")


class LlmConnector(Connector[LlmConnection]):
    """LLM providers: chat completions with optional JSON or schema-checked output."""

    name = "llm"
    connection_model = LlmConnection

    _http: httpx.AsyncClient | None = None

    @action("chat", input=LlmChat, output=LlmResult, idempotent=True)
    async def chat(self, ctx: ActionContext, inp: LlmChat) -> LlmResult:
        """Ask the model and return its answer, parsed as JSON when asked."""
        conn = self.connection
        wire = WIRE_FORMATS[conn.provider]
        endpoint = conn.endpoint()
        report = Reporter(self.connection_name, _ACTION, (endpoint.api_key,) if endpoint.api_key else ())
        schema, wrapped = inp.json_schema, False
        if schema is not None and wire.object_schema_only:
            schema, wrapped = object_root(schema)
        call = _chat_call(inp, model=inp.model or conn.model, schema=schema)
        timeout = conn.timeout.total_seconds()
        if ctx.timeout is not None:
            timeout = min(timeout, ctx.timeout)
        request = wire.build(endpoint, call)
        data = await exchange(
            self._client(), wire, request, seconds=timeout, max_bytes=conn.max_response_bytes, report=report
        )
        answer = read_answer(wire, data, call, report)
        ctx.add_usage(answer.input_tokens, answer.output_tokens)
        value: Any = None
        if call.json_mode:
            try:
                value = answer.structured if answer.has_structured else parse_json_answer(answer.text)
                if wrapped and isinstance(value, dict) and "value" in value:
                    value = value["value"]
                if inp.json_schema is not None:
                    check_answer(value, inp.json_schema)
            except _AnswerProblem as exc:
                raise report.permanent(str(exc)) from exc
        usage = LlmUsage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens)
        return LlmResult.model_validate({"text": answer.text, "json": value, "model": answer.model, "usage": usage})

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


def _chat_call(inp: LlmChat, *, model: str, schema: dict[str, Any] | None) -> ChatCall:
    systems = [inp.system] if inp.system else []
    turns: list[Turn] = []
    if inp.prompt is not None:
        turns.append(Turn("user", inp.prompt))
    for message in inp.messages or []:
        if message.role == "system":
            systems.append(message.content)
        else:
            turns.append(Turn(message.role, message.content))
    system = "\n\n".join(systems) or None
    json_mode = inp.json_ or inp.json_schema is not None
    if json_mode and inp.json_schema is None and wants_json_hint(system, tuple(turns)):
        system = f"{system}\n\n{JSON_HINT}" if system else JSON_HINT
    return ChatCall(
        model=model,
        system=system,
        turns=tuple(turns),
        max_tokens=inp.max_tokens,
        temperature=inp.temperature,
        json_mode=json_mode,
        schema=schema,
    )


__all__ = ["ChatMessage", "LlmChat", "LlmConnection", "LlmConnector", "LlmResult", "LlmUsage"]
