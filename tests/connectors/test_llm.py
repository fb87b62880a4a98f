"""llm.chat against fakes of each provider's wire format, served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from tests.fakes import llm as fake_llm
from tests.fakes.llm import FakeLlm
from tests.fakes.server import free_port, serve_in_thread
from weir.connectors.base import ActionContext
from weir.connectors.llm import LlmConnection, LlmConnector
from weir.errors import PermanentError, TransientError

pytestmark = pytest.mark.anyio

PROVIDERS = ["openai", "azure-openai", "openai-compatible", "anthropic", "gemini", "ollama"]
KEYS = {
    "openai": fake_llm.OPENAI_KEY,
    "azure-openai": fake_llm.AZURE_KEY,
    "anthropic": fake_llm.ANTHROPIC_KEY,
    "gemini": fake_llm.GEMINI_KEY,
}
SCHEMA = {
    "type": "object",
    "properties": {"severity": {"type": "string", "enum": ["low", "high"]}, "reason": {"type": "string"}},
    "required": ["severity", "reason"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm_server() -> Iterator[tuple[FakeLlm, str]]:
    fake = FakeLlm()
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def fake(llm_server: tuple[FakeLlm, str]) -> FakeLlm:
    llm_server[0].reset()
    return llm_server[0]


@pytest.fixture
def url(llm_server: tuple[FakeLlm, str]) -> str:
    return llm_server[1]


def connection(provider: str, url: str, **overrides: Any) -> LlmConnection:
    settings: dict[str, Any] = {
        "openai": {"base_url": f"{url}/v1", "model": "gpt-4o-mini"},
        "azure-openai": {"base_url": url, "model": "gpt-4o", "deployment": fake_llm.AZURE_DEPLOYMENT},
        "openai-compatible": {"base_url": f"{url}/compat/v1", "model": "qwen2.5-7b-instruct"},
        "anthropic": {"base_url": url, "model": "claude-sonnet-4-5"},
        "gemini": {"base_url": url, "model": "gemini-2.5-flash"},
        "ollama": {"base_url": url, "model": "llama3.2"},
    }[provider]
    if provider in KEYS:
        settings["api_key"] = KEYS[provider]
    return LlmConnection.model_validate({"provider": provider, **settings, **overrides})


class Usage:
    """An add_usage callback that remembers its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, input_tokens: int, output_tokens: int) -> None:
        self.calls.append((input_tokens, output_tokens))


async def chat(conn: LlmConnection, inputs: dict[str, Any], usage: Usage | None = None) -> Any:
    ctx = ActionContext(run_id="r1", step_id="s1", add_usage=usage or Usage())
    connector = LlmConnector(conn, connection_name="ai")
    try:
        return await connector.call("chat", ctx, inputs)
    finally:
        await connector.aclose()


# -- request shapes ---------------------------------------------------------------------------


async def test_openai_request_shape(fake: FakeLlm, url: str) -> None:
    inputs = {"prompt": "Summarise.", "system": "Be brief.", "temperature": 0.2, "max_tokens": 50}
    out = await chat(connection("openai", url), inputs)

    assert out == {
        "text": "Hello from the fake.",
        "json": None,
        "model": "gpt-4o-mini-2024-08-06",
        "usage": {"input_tokens": 12, "output_tokens": 5},
    }
    received = fake.last
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {fake_llm.OPENAI_KEY}"
    assert received.json == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise."}],
        "max_completion_tokens": 50,
        "temperature": 0.2,
    }


async def test_azure_request_shape(fake: FakeLlm, url: str) -> None:
    out = await chat(connection("azure-openai", url), {"prompt": "Hi"})

    assert out["model"] == "gpt-4o-2024-11-20"
    received = fake.last
    assert received.path == f"/openai/deployments/{fake_llm.AZURE_DEPLOYMENT}/chat/completions"
    assert received.query == {"api-version": "2024-10-21"}
    assert received.headers["api-key"] == fake_llm.AZURE_KEY
    assert "authorization" not in received.headers
    assert received.json == {"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 1024}


async def test_azure_deployment_defaults_to_model(fake: FakeLlm, url: str) -> None:
    conn = LlmConnection(
        provider="azure-openai", model=fake_llm.AZURE_DEPLOYMENT, api_key=SecretStr(fake_llm.AZURE_KEY), base_url=url
    )
    await chat(conn, {"prompt": "Hi"})

    assert fake.last.path == f"/openai/deployments/{fake_llm.AZURE_DEPLOYMENT}/chat/completions"


async def test_openai_compatible_request_shape_without_key(fake: FakeLlm, url: str) -> None:
    out = await chat(connection("openai-compatible", url), {"prompt": "Hi", "max_tokens": 10})

    assert out["model"] == "qwen2.5-7b-instruct"
    assert "authorization" not in fake.last.headers
    assert fake.last.json == {
        "model": "qwen2.5-7b-instruct",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 10,
    }


async def test_openai_compatible_sends_key_when_set(fake: FakeLlm, url: str) -> None:
    await chat(connection("openai-compatible", url, api_key="local-key"), {"prompt": "Hi"})

    assert fake.last.headers["authorization"] == "Bearer local-key"


async def test_anthropic_request_shape(fake: FakeLlm, url: str) -> None:
    messages = [
        {"role": "system", "content": "You triage alerts."},
        {"role": "user", "content": "CPU 99%"},
        {"role": "assistant", "content": "Which host?"},
        {"role": "user", "content": "db-1"},
    ]
    out = await chat(connection("anthropic", url), {"messages": messages, "system": "Be brief.", "temperature": 0.5})

    assert out["text"] == "Hello from the fake."
    assert out["model"] == "claude-sonnet-4-5"
    received = fake.last
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == fake_llm.ANTHROPIC_KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "Be brief.\n\nYou triage alerts.",
        "temperature": 0.5,
        "messages": [
            {"role": "user", "content": "CPU 99%"},
            {"role": "assistant", "content": "Which host?"},
            {"role": "user", "content": "db-1"},
        ],
    }


async def test_gemini_request_shape(fake: FakeLlm, url: str) -> None:
    messages = [
        {"role": "user", "content": "CPU 99%"},
        {"role": "assistant", "content": "Which host?"},
        {"role": "user", "content": "db-1"},
    ]
    inputs = {"messages": messages, "system": "Be brief.", "temperature": 0, "max_tokens": 64}
    out = await chat(connection("gemini", url), inputs)

    assert out["model"] == "gemini-2.5-flash-001"
    received = fake.last
    assert received.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert received.headers["x-goog-api-key"] == fake_llm.GEMINI_KEY
    assert received.query == {}
    assert received.json == {
        "contents": [
            {"role": "user", "parts": [{"text": "CPU 99%"}]},
            {"role": "model", "parts": [{"text": "Which host?"}]},
            {"role": "user", "parts": [{"text": "db-1"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0},
    }


async def test_ollama_request_shape(fake: FakeLlm, url: str) -> None:
    out = await chat(connection("ollama", url), {"prompt": "Hi", "system": "Be brief.", "temperature": 0.1})

    assert out["model"] == "llama3.2"
    received = fake.last
    assert received.path == "/api/chat"
    assert "authorization" not in received.headers
    assert received.json == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "stream": False,
        "options": {"num_predict": 1024, "temperature": 0.1},
    }


async def test_model_input_overrides_connection_model(fake: FakeLlm, url: str) -> None:
    await chat(connection("gemini", url), {"prompt": "Hi", "model": "gemini-2.0-flash"})

    assert fake.last.path == "/v1beta/models/gemini-2.0-flash:generateContent"


# -- JSON mode and structured output ------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_json_mode_parses_the_answer(fake: FakeLlm, url: str, provider: str) -> None:
    fake.reply = '{"severity": "high", "reason": "disk"}'

    out = await chat(connection(provider, url), {"prompt": "Classify: disk full", "json": True})

    assert out["json"] == {"severity": "high", "reason": "disk"}
    body = fake.last.json
    wire = {
        "openai": lambda: body["response_format"] == {"type": "json_object"},
        "azure-openai": lambda: body["response_format"] == {"type": "json_object"},
        "openai-compatible": lambda: body["response_format"] == {"type": "json_object"},
        "anthropic": lambda: "tools" not in body and "JSON" in body["system"],
        "gemini": lambda: body["generationConfig"]["responseMimeType"] == "application/json",
        "ollama": lambda: body["format"] == "json",
    }[provider]
    assert wire()


async def test_json_mode_adds_the_word_json_only_when_missing(fake: FakeLlm, url: str) -> None:
    fake.reply = "{}"
    await chat(connection("openai", url), {"prompt": "Answer in JSON please.", "json": True})
    assert fake.last.json["messages"] == [{"role": "user", "content": "Answer in JSON please."}]

    await chat(connection("openai", url), {"prompt": "Classify", "system": "Be terse.", "json": True})
    assert fake.last.json["messages"][0] == {
        "role": "system",
        "content": "Be terse.\n\nAnswer with JSON only, without any text around it.",
    }


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_json_schema_structured_output(fake: FakeLlm, url: str, provider: str) -> None:
    fake.reply = '{"severity": "low", "reason": "noise"}'

    out = await chat(connection(provider, url), {"prompt": "Classify: flaky ping", "json_schema": SCHEMA})

    assert out["json"] == {"severity": "low", "reason": "noise"}
    body = fake.last.json
    if provider in ("openai", "azure-openai", "openai-compatible"):
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": SCHEMA, "strict": True},
        }
    elif provider == "anthropic":
        assert body["tools"] == [
            {"name": "output", "description": "Record the answer in the required structure.", "input_schema": SCHEMA}
        ]
        assert body["tool_choice"] == {"type": "tool", "name": "output"}
        assert out["text"] == '{"severity": "low", "reason": "noise"}'
    elif provider == "gemini":
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        assert body["generationConfig"]["responseJsonSchema"] == SCHEMA
    else:
        assert body["format"] == SCHEMA


async def test_openai_uses_strict_only_for_strict_compatible_schemas(fake: FakeLlm, url: str) -> None:
    open_schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
    fake.reply = '{"tags": ["a"]}'

    out = await chat(connection("openai", url), {"prompt": "Tag it", "json_schema": open_schema})

    assert out["json"] == {"tags": ["a"]}
    assert fake.last.json["response_format"]["json_schema"]["strict"] is False


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_non_object_schema_is_wrapped_where_the_provider_needs_an_object(
    fake: FakeLlm, url: str, provider: str
) -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    fake.reply = '{"value": ["a", "b"]}' if provider != "gemini" else '["a", "b"]'

    out = await chat(connection(provider, url), {"prompt": "List", "json_schema": schema})

    assert out["json"] == ["a", "b"]
    body = fake.last.json
    sent = {
        "openai": lambda: body["response_format"]["json_schema"]["schema"],
        "anthropic": lambda: body["tools"][0]["input_schema"],
        "gemini": lambda: body["generationConfig"]["responseJsonSchema"],
    }[provider]()
    if provider == "gemini":
        assert sent == schema
    else:
        assert sent == {
            "type": "object",
            "properties": {"value": schema},
            "required": ["value"],
            "additionalProperties": False,
        }


async def test_json_answer_in_a_code_fence_is_accepted(fake: FakeLlm, url: str) -> None:
    fake.reply = 'Here you go:\n```json\n{"severity": "high", "reason": "x"}\n```\n'

    out = await chat(connection("ollama", url), {"prompt": "Classify", "json_schema": SCHEMA})

    assert out["json"] == {"severity": "high", "reason": "x"}


@pytest.mark.parametrize("provider", ["openai", "gemini", "ollama"])
async def test_invalid_json_answer_is_permanent_and_quotes_it(fake: FakeLlm, url: str, provider: str) -> None:
    fake.reply = "Sure! The severity is high."
    usage = Usage()

    with pytest.raises(PermanentError) as caught:
        await chat(connection(provider, url), {"prompt": "Classify", "json": True}, usage)

    assert str(caught.value) == (
        "the model's answer is not valid JSON (Expecting value: line 1 column 1 (char 0)); "
        "it reads: Sure! The severity is high."
    )
    assert usage.calls == [(12, 5)]  # the tokens were spent all the same


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "ollama"])
async def test_answer_not_matching_schema_is_permanent(fake: FakeLlm, url: str, provider: str) -> None:
    fake.reply = '{"severity": "medium", "reason": "x"}'

    with pytest.raises(PermanentError) as caught:
        await chat(connection(provider, url), {"prompt": "Classify", "json_schema": SCHEMA})

    assert str(caught.value) == (
        "the model's answer does not match json_schema: 'medium' is not one of ['low', 'high'] at $.severity; "
        'it reads: {"severity": "medium", "reason": "x"}'
    )


async def test_anthropic_answer_without_the_tool_is_permanent(fake: FakeLlm, url: str) -> None:
    fake.reply = "not json"  # the fake then calls the tool with {}

    with pytest.raises(PermanentError, match="does not match json_schema: 'severity' is a required property at \\$"):
        await chat(connection("anthropic", url), {"prompt": "Classify", "json_schema": SCHEMA})


# -- usage ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_usage_is_normalised_and_reported_once(fake: FakeLlm, url: str, provider: str) -> None:
    fake.usage = (321, 45)
    usage = Usage()

    out = await chat(connection(provider, url), {"prompt": "Hi"}, usage)

    assert out["usage"] == {"input_tokens": 321, "output_tokens": 45}
    assert usage.calls == [(321, 45)]


async def test_gemini_thinking_tokens_count_as_output(fake: FakeLlm, url: str) -> None:
    fake.usage, fake.thoughts_tokens = (10, 4), 100

    out = await chat(connection("gemini", url), {"prompt": "Think"})

    assert out["usage"] == {"input_tokens": 10, "output_tokens": 104}


async def test_usage_not_reported_when_the_call_fails(fake: FakeLlm, url: str) -> None:
    fake.fail_next(1, 500)
    usage = Usage()

    with pytest.raises(TransientError):
        await chat(connection("openai", url), {"prompt": "Hi"}, usage)
    assert usage.calls == []


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("openai", "OpenAI rejected the request (HTTP 401): Incorrect API key provided: wro*****-key."),
        ("azure-openai", "Azure OpenAI rejected the request (HTTP 401): Access denied due to invalid subscription key"),
        ("anthropic", "Anthropic rejected the request (HTTP 401): authentication_error: invalid x-api-key"),
        ("gemini", "Gemini rejected the request (HTTP 400): INVALID_ARGUMENT: API key not valid."),
    ],
)
async def test_wrong_key_is_permanent_and_never_shown(url: str, fake: FakeLlm, provider: str, expected: str) -> None:
    wrong = "wrong-secret-key"

    with pytest.raises(PermanentError) as caught:
        await chat(connection(provider, url, api_key=wrong), {"prompt": "Hi"})

    assert str(caught.value).startswith(expected)
    assert wrong not in str(caught.value)
    assert caught.value.connection == "ai"
    assert caught.value.action == "llm.chat"


async def test_provider_message_echoing_the_key_is_scrubbed(fake: FakeLlm, url: str) -> None:
    fake.reply = "x"
    conn = connection("ollama", url, model=fake_llm.GEMINI_KEY, api_key=fake_llm.GEMINI_KEY)

    with pytest.raises(PermanentError) as caught:
        await chat(conn, {"prompt": "Hi"})

    assert str(caught.value) == 'Ollama rejected the request (HTTP 404): model "***" not found, try pulling it first'


async def test_bad_request_is_permanent_with_provider_message(fake: FakeLlm, url: str) -> None:
    with pytest.raises(PermanentError) as caught:
        await chat(connection("anthropic", url), {"prompt": "Hi", "temperature": 1.5})

    assert str(caught.value) == (
        "Anthropic rejected the request (HTTP 400): invalid_request_error: temperature: range: 0..1"
    )


async def test_unknown_azure_deployment_is_permanent(fake: FakeLlm, url: str) -> None:
    with pytest.raises(PermanentError, match="HTTP 404\\): The API deployment for this resource does not exist"):
        await chat(connection("azure-openai", url, deployment="nope"), {"prompt": "Hi"})


async def test_openai_429_is_transient_with_retry_after(fake: FakeLlm, url: str) -> None:
    fake.fail_next(1, 429, headers={"retry-after": "20"})

    with pytest.raises(TransientError) as caught:
        await chat(connection("openai", url), {"prompt": "Hi"})

    assert caught.value.retry_after == 20.0
    assert str(caught.value).startswith("OpenAI answered HTTP 429: Rate limit reached for gpt-4o-mini")


async def test_retry_after_ms_wins_over_retry_after(fake: FakeLlm, url: str) -> None:
    fake.fail_next(1, 429, headers={"retry-after-ms": "1500", "retry-after": "2"})

    with pytest.raises(TransientError) as caught:
        await chat(connection("openai", url), {"prompt": "Hi"})
    assert caught.value.retry_after == 1.5


async def test_gemini_429_takes_retry_delay_from_retry_info(fake: FakeLlm, url: str) -> None:
    fake.fail_next(1, 429)

    with pytest.raises(TransientError, match="RESOURCE_EXHAUSTED: You exceeded your current quota") as caught:
        await chat(connection("gemini", url), {"prompt": "Hi"})
    assert caught.value.retry_after == 17.0


async def test_anthropic_overloaded_529_is_transient(fake: FakeLlm, url: str) -> None:
    fake.fail_next(1, 529)

    with pytest.raises(TransientError) as caught:
        await chat(connection("anthropic", url), {"prompt": "Hi"})
    assert str(caught.value) == "Anthropic answered HTTP 529: overloaded_error: Overloaded; try again later"
    assert caught.value.retry_after is None


@pytest.mark.parametrize("provider", ["azure-openai", "ollama"])
async def test_5xx_is_transient(fake: FakeLlm, url: str, provider: str) -> None:
    fake.fail_next(1, 503)

    with pytest.raises(TransientError, match="answered HTTP 503"):
        await chat(connection(provider, url), {"prompt": "Hi"})


async def test_timeout_is_transient_timeout(fake: FakeLlm, url: str) -> None:
    fake.fail_next(1, 200, delay=0.5)

    with pytest.raises(TransientError, match=r"OpenAI did not answer within 0\.1s") as caught:
        await chat(connection("openai", url, timeout="100ms"), {"prompt": "Hi"})
    assert caught.value.kind == "timeout"


async def test_unreachable_ollama_is_transient() -> None:
    conn = LlmConnection(provider="ollama", model="llama3.2", base_url=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(TransientError, match=r"could not reach Ollama at http://127\.0\.0\.1:"):
        await chat(conn, {"prompt": "Hi"})


async def test_wrong_base_url_is_permanent_with_the_body_excerpt(fake: FakeLlm, url: str) -> None:
    conn = connection("openai", url, base_url=f"{url}/api")  # /api/chat/completions does not exist

    with pytest.raises(PermanentError) as caught:
        await chat(conn, {"prompt": "Hi"})

    assert str(caught.value) == "OpenAI rejected the request (HTTP 404): Not Found"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_answer_in_another_shape_is_unexpected(fake: FakeLlm, url: str, provider: str) -> None:
    fake.fail_next(1, 200)  # a 200 whose body is the provider's error shape, not an answer

    with pytest.raises(PermanentError, match=r"^unexpected response from .*: \{.*injected failure 200"):
        await chat(connection(provider, url), {"prompt": "Hi"})


async def test_gemini_blocked_prompt_is_permanent(fake: FakeLlm, url: str) -> None:
    fake.gemini_block_reason = "SAFETY"

    with pytest.raises(PermanentError, match=r"^Gemini blocked the prompt \(blockReason SAFETY\)$"):
        await chat(connection("gemini", url), {"prompt": "Hi"})


async def test_answer_larger_than_max_response_bytes_is_permanent(fake: FakeLlm, url: str) -> None:
    fake.reply = "x" * 5000

    with pytest.raises(PermanentError, match=r"larger than max_response_bytes \(1024 bytes\)"):
        await chat(connection("ollama", url, max_response_bytes="1KiB"), {"prompt": "Hi"})


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "azure-openai", "anthropic", "gemini"])
def test_connection_needs_api_key(provider: str) -> None:
    with pytest.raises(ValidationError, match=f"provider '{provider}' needs api_key"):
        LlmConnection.model_validate({"provider": provider, "model": "m", "base_url": "https://x.example"})


@pytest.mark.parametrize(
    ("provider", "example"), [("azure-openai", "https://NAME.openai.azure.com"), ("openai-compatible", "http://host")]
)
def test_connection_needs_base_url(provider: str, example: str) -> None:
    with pytest.raises(ValidationError, match=f"provider '{provider}' needs base_url, e.g. {example}"):
        LlmConnection.model_validate({"provider": provider, "model": "m", "api_key": "k"})


def test_connection_defaults_base_url_per_provider() -> None:
    conn = LlmConnection.model_validate({"provider": "anthropic", "model": "m", "api_key": "secret-anthropic"})

    assert conn.endpoint().base_url == "https://api.anthropic.com"
    assert conn.max_response_bytes == 10 * 1024 * 1024
    assert "secret-anthropic" not in repr(conn)


def test_connection_errors_hide_the_key() -> None:
    with pytest.raises(ValidationError) as caught:
        LlmConnection.model_validate({"provider": "opanai", "model": "m", "api_key": "sk-very-secret"})
    assert "sk-very-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "set exactly one of `prompt` or `messages`"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "set exactly one of `prompt` or `messages`"),
        ({"messages": [{"role": "system", "content": "b"}]}, "needs at least one user message"),
        ({"messages": [{"role": "tool", "content": "b"}]}, "messages.0.role"),
        ({"prompt": "a", "json_schema": {"type": "objekt"}}, "json_schema is not a valid JSON Schema: 'objekt'"),
        ({"prompt": "a", "temperature": 3}, "temperature"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "a", "jsn": True}, "jsn"),
    ],
    ids=["none", "both", "only-system", "bad-role", "bad-schema", "temperature", "max-tokens", "unknown-key"],
)
async def test_chat_input_validation(url: str, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        await chat(connection("ollama", url), inputs)


def test_chat_is_idempotent_and_schema_says_json() -> None:
    spec = LlmConnector.actions["chat"]
    assert spec.idempotent is True
    assert "json" in spec.input_model.model_json_schema()["properties"]
    assert spec.output_model is not None
    assert "json" in spec.output_model.model_json_schema()["properties"]
