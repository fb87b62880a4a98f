"""The OpenAPI 3.1 document of the HTTP API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from weir import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _op(
    summary: str,
    *,
    ok: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (),
    params: Any = None,
    secured: bool = True,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": ok or {"type": "object"}}}}
    }
    for status in (*errors, *((401,) if secured else ())):
        responses[str(status)] = {"description": "Error", "content": {"application/json": {"schema": _ERROR}}}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if not secured:
        op["security"] = []
    return op


def openapi_document() -> dict[str, Any]:
    name_param = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "weir", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": _op("Liveness", secured=False)},
            "/readyz": {"get": _op("Readiness: a revision is applied", errors=(503,), secured=False)},
            "/api/status": {"get": _op("Applied revision, last rejected revision and its findings, last sync")},
            "/api/workflows": {"get": _op("Workflows with triggers and next fire times", errors=(503,))},
            "/api/workflows/{name}": {"get": _op("One workflow", errors=(404, 503), params=name_param)},
        },
    }
