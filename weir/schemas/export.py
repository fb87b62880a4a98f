"""JSON Schemas of the file formats, for editors and for ``weir schema``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from weir.schemas.repo import RepoConfig
from weir.schemas.workflow import Workflow

SCHEMA_FILES: dict[str, tuple[type[BaseModel], str]] = {
    "workflow.schema.json": (Workflow, "weir workflow file (version 1)"),
    "repo.schema.json": (RepoConfig, "weir repo config (weir.toml)"),
}


def build_schema(model: type[BaseModel], title: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a file format, keys spelt as in files."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": title}


def schema_texts() -> dict[str, str]:
    """Each schema file's name and its exact text, as committed in ``schemas/``."""
    return {
        name: json.dumps(build_schema(model, title), indent=2, sort_keys=False) + "\n"
        for name, (model, title) in SCHEMA_FILES.items()
    }


def write_schemas(out: Path) -> list[Path]:
    """Write every schema file into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_texts().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
