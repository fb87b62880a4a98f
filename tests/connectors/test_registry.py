"""Every registered connector keeps the same contract; the registry reports broken plugins clearly."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action
from weir.connectors.registry import ConnectorRegistry
from weir.errors import ConnectorNotFound

REGISTRY = ConnectorRegistry()
SECRET = "s3cr3t-value-that-must-not-leak"


@pytest.fixture(params=REGISTRY.names())
def connector(request: pytest.FixtureRequest) -> type[Connector[BaseModel]]:
    return REGISTRY.get(request.param)


def test_registry_loads_every_builtin_connector() -> None:
    assert REGISTRY.names() == ["db", "email", "http", "llm", "pagerduty", "slack"]
    assert REGISTRY.errors() == {}


def test_connector_connection_model_rejects_unknown_keys(connector: type[Connector[BaseModel]]) -> None:
    with pytest.raises(ValidationError) as caught:
        connector.connection_model.model_validate({"no_such_setting": SECRET})
    assert any(e["type"] == "extra_forbidden" for e in caught.value.errors())
    assert SECRET not in str(caught.value), "validation errors must not print setting values"


def test_connector_actions_declare_documented_inputs(connector: type[Connector[BaseModel]]) -> None:
    assert connector.actions
    for spec in connector.actions.values():
        assert spec.uses == f"{connector.name}.{spec.name}"
        assert issubclass(spec.input_model, ActionInput)
        schema = spec.input_model.model_json_schema(by_alias=True)
        undocumented = [key for key, prop in schema.get("properties", {}).items() if "description" not in prop]
        assert undocumented == [], f"{spec.uses}: describe {undocumented}"
        with pytest.raises(ValidationError) as caught:
            spec.input_model.model_validate({"no_such_input": SECRET})
        assert SECRET not in str(caught.value)


def test_registry_unknown_action_suggests_the_closest() -> None:
    with pytest.raises(ConnectorNotFound) as caught:
        REGISTRY.action("slack.post_mesage")
    assert (
        str(caught.value)
        == "connector 'slack' has no action 'post_mesage' (did you mean 'post_message'?); it has: post_message"
    )
    with pytest.raises(ConnectorNotFound, match=r"no connector named 'slak' is installed \(did you mean 'slack'\?\)"):
        REGISTRY.action("slak.post_message")


class _Settings(ConnectionSettings):
    pass


class _Echo(BaseModel):
    text: str


class _Input(ActionInput):
    text: str


class EchoConnector(Connector[_Settings]):
    name = "echo"
    connection_model = _Settings

    @action("say", input=_Input, output=_Echo, idempotent=True)
    async def say(self, ctx: ActionContext, inp: _Input) -> _Echo:
        """Answer with the text."""
        return _Echo(text=f"{ctx.idempotency_key}: {inp.text}")


class Misnamed(EchoConnector):
    name = "other"


@pytest.mark.anyio
async def test_registry_accepts_a_plugin_class_and_calls_its_action() -> None:
    registry = ConnectorRegistry(discover=False, extra={"echo": EchoConnector})
    assert registry.names() == ["echo"]
    spec = registry.action("echo.say")
    assert (spec.idempotent, spec.needs_connection, spec.description) == (True, True, "Answer with the text.")
    out = await EchoConnector(_Settings()).call(
        "say", ActionContext(run_id="r1", step_id="s", item_index=2), {"text": "hi"}
    )
    assert out == {"text": "r1:s:2: hi"}


def test_registry_refuses_a_class_registered_under_another_name() -> None:
    with pytest.raises(TypeError, match="is registered as 'echo' but its class says name = 'other'"):
        ConnectorRegistry(discover=False, extra={"echo": Misnamed})
