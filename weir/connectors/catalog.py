"""What ``weir connectors`` prints: connectors, their actions and their input schemas."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from weir.connectors.base import ActionSpec
from weir.connectors.registry import ConnectorRegistry
from weir.errors import ConnectorNotFound
from weir.text import did_you_mean


def _fields(model: type[BaseModel]) -> list[str]:
    lines = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        required = " (required)" if info.is_required() else ""
        lines.append(f"      {key}{required}: {info.description or ''}".rstrip())
    return lines


def _action_json(spec: ActionSpec) -> dict[str, Any]:
    return {
        "uses": spec.uses,
        "description": spec.description,
        "idempotent": spec.idempotent,
        "needs_connection": spec.needs_connection,
        "input_schema": spec.input_model.model_json_schema(by_alias=True),
    }


def describe_connectors(
    registry: ConnectorRegistry, name: str | None, *, builtins: Mapping[str, ActionSpec], as_json: bool
) -> tuple[str, bool]:
    """The listing of built-in actions and connectors (all, or one in full); False when ``name`` is unknown."""
    BUILTIN_ACTIONS = builtins
    catalog: dict[str, Any] = {"builtins": {n: _action_json(s) for n, s in BUILTIN_ACTIONS.items()}, "connectors": {}}
    failures = registry.errors()
    for connector_name in registry.names():
        if connector_name in failures:
            catalog["connectors"][connector_name] = {"error": failures[connector_name]}
            continue
        cls = registry.get(connector_name)
        catalog["connectors"][connector_name] = {
            "connection_required": cls.connection_required,
            "connection_schema": cls.connection_model.model_json_schema(by_alias=True),
            "actions": {a: _action_json(s) for a, s in cls.actions.items()},
            "_class": cls,
        }
    if name is not None:
        if name in BUILTIN_ACTIONS:
            selected = {"builtins": {name: catalog["builtins"][name]}, "connectors": {}}
        elif name in catalog["connectors"]:
            selected = {"builtins": {}, "connectors": {name: catalog["connectors"][name]}}
        else:
            known = [*BUILTIN_ACTIONS, *catalog["connectors"]]
            message = f"no connector or built-in action named '{name}'{did_you_mean(name, known)}"
            return str(ConnectorNotFound(message)), False
        catalog = selected
    if as_json:
        for entry in catalog["connectors"].values():
            entry.pop("_class", None)
        return json.dumps(catalog, indent=2), True
    return _as_text(catalog, builtins, full=name is not None), True


def _as_text(catalog: dict[str, Any], builtins: Mapping[str, ActionSpec], *, full: bool) -> str:
    lines: list[str] = []
    if catalog["builtins"]:
        lines.append("built-in actions (no connection):")
        for action_name, entry in catalog["builtins"].items():
            lines.append(f"  {action_name:<24} {entry['description']}")
            if full:
                lines.extend(_fields(builtins[action_name].input_model))
    for connector_name, entry in catalog["connectors"].items():
        if "error" in entry:
            lines.append(f"{connector_name}: BROKEN: {entry['error']}")
            continue
        cls = entry["_class"]
        optional = "" if cls.connection_required else ", connection optional"
        lines.append(f'{connector_name} (connection type "{connector_name}"{optional}):')
        if full:
            lines.append("    connection settings:")
            lines.extend(_fields(cls.connection_model))
        for spec in cls.actions.values():
            lines.append(f"  {spec.uses:<24} {spec.description}")
            if full:
                lines.extend(_fields(spec.input_model))
    return "\n".join(lines)
