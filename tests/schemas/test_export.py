"""The committed JSON Schemas match the models, and they accept and reject what the models do."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from weir.schemas.export import schema_texts
from weir.schemas.repo import RepoConfig
from weir.schemas.workflow import Workflow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["workflow.schema.json", "repo.schema.json"])
def test_export_committed_schema_matches_models(name: str) -> None:
    committed = (ROOT / "schemas" / name).read_text(encoding="utf-8")
    assert committed == schema_texts()[name], f"schemas/{name} is stale: run `weir schema --out schemas`"


def _all_properties(node: object) -> list[dict[str, object]]:
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            found.extend(node["properties"].values())
        for value in node.values():
            found.extend(_all_properties(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_all_properties(value))
    return found


@pytest.mark.parametrize("name", ["workflow.schema.json", "repo.schema.json"])
def test_export_every_field_has_a_description(name: str) -> None:
    schema = json.loads(schema_texts()[name])
    undocumented = [p for p in _all_properties(schema) if "description" not in p]
    assert undocumented == []


WORKFLOW = """
[params.who]
type = "string"
default = "world"

[[on.schedule]]
cron = "0 9 * * 1-5"
timezone = "Europe/Berlin"

[[on.webhook]]
path = "hello"
auth = { type = "token", token = "{{ secrets.HELLO_TOKEN }}" }

[[steps]]
id = "greet"
uses = "log"
with = { message = "Hello {{ params.who }}" }
retry = { attempts = 3, delay = "2s" }
timeout = 30
"""


def test_export_schema_accepts_what_the_model_accepts() -> None:
    data = tomllib.loads(WORKFLOW)
    Workflow.model_validate(data)
    jsonschema.Draft202012Validator(json.loads(schema_texts()["workflow.schema.json"])).validate(data)


@pytest.mark.parametrize(
    "patch",
    [
        {"nonsense": 1},
        {"steps": []},
        {"version": 2},
        {"concurrency": {"policy": "sometimes"}},
    ],
    ids=["unknown-key", "no-steps", "version", "bad-enum"],
)
def test_export_schema_rejects_what_the_model_rejects(patch: dict[str, object]) -> None:
    data = {**tomllib.loads(WORKFLOW), **patch}
    validator = jsonschema.Draft202012Validator(json.loads(schema_texts()["workflow.schema.json"]))
    assert list(validator.iter_errors(data)), "the schema accepted a document the model rejects"
    with pytest.raises(ValueError, match="validation error"):
        Workflow.model_validate(data)


def test_export_repo_schema_accepts_connections() -> None:
    data = {"connections": {"wh": {"type": "db", "url": "{{ secrets.WAREHOUSE_URL }}"}}, "defaults": {"timeout": "60s"}}
    RepoConfig.model_validate(data)
    jsonschema.Draft202012Validator(json.loads(schema_texts()["repo.schema.json"])).validate(data)
