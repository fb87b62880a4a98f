"""A webhook's payload schema: the quick validator lets through exactly what jsonschema does; errors read the same."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from jsonschema.validators import validator_for

from weir.server.hooks import HookRoute, _quick_validator

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["service", "metrics"],
    "additionalProperties": False,
    "properties": {
        "service": {"type": "string", "pattern": "^[a-z-]+$", "maxLength": 20},
        "metrics": {
            "type": "object",
            "required": ["error_rate"],
            "properties": {"error_rate": {"type": "number", "minimum": 0}, "window": {"enum": ["1m", "5m"]}},
        },
        "contact": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "count": {"type": "integer"},
    },
}

PAYLOADS = [
    {"service": "checkout", "metrics": {"error_rate": 42.5, "window": "5m"}},
    {"service": "checkout", "metrics": {"error_rate": -1}},
    {"service": "Checkout!", "metrics": {"error_rate": 1}},
    {"service": "checkout", "metrics": {}},
    {"service": 3, "metrics": {"error_rate": "high"}},
    {"service": "checkout", "metrics": {"error_rate": 1, "window": "2h"}},
    {"service": "checkout", "metrics": {"error_rate": 1}, "extra": True},
    {"service": "checkout", "metrics": {"error_rate": 1}, "contact": "not an address"},  # formats are annotations
    {"service": "checkout", "metrics": {"error_rate": 1}, "tags": ["a", "a"]},
    {"service": "checkout", "metrics": {"error_rate": 1}, "count": 2**80},  # wider than 64 bits
    {"service": "checkout", "metrics": {"error_rate": 1}, "count": 1.5},
    {"service": "checkout", "metrics": {"error_rate": 1}, "count": 2.0},
    [],
    "text",
    None,
]


def route(quick: bool) -> HookRoute:
    return HookRoute(
        path="alerts",
        workflow="alerts",
        hook=None,  # type: ignore[arg-type]  # schema checks do not read the hook
        secret=None,
        validator=validator_for(SCHEMA)(SCHEMA),
        enabled=True,
        quick=_quick_validator(SCHEMA) if quick else None,
    )


def test_the_quick_validator_compiles_the_schema() -> None:
    assert _quick_validator(SCHEMA) is not None


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_quick_validator_agrees_with_jsonschema(payload: Any) -> None:
    assert route(quick=True).schema_errors(payload) == route(quick=False).schema_errors(payload)


def test_errors_name_the_path_and_what_is_wrong() -> None:
    errors = route(quick=True).schema_errors({"service": 3, "metrics": {}})
    assert errors == [
        {"path": "/metrics", "message": "'error_rate' is a required property"},
        {"path": "/service", "message": "3 is not of type 'string'"},
    ]


def test_a_schema_with_a_remote_reference_is_never_fetched() -> None:
    fetched: list[str] = []

    class Schemas(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            body = json.dumps({"type": "string"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Schemas)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = {"$ref": f"http://127.0.0.1:{server.server_port}/schema.json"}
        quick = _quick_validator(remote)
        if quick is not None:
            with contextlib.suppress(Exception):
                quick.is_valid(5)
    finally:
        server.shutdown()
        server.server_close()
    assert fetched == []
