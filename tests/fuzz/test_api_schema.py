"""The HTTP API against its own OpenAPI document, with schemathesis, on real ``weir serve`` processes.

Two servers follow the same repository: one with an API token, one without (loopback only).
schemathesis reads ``/api/openapi.json`` from each and sends generated requests, valid and
invalid, to every operation. Every answer must be documented for its operation: no 5xx, a
documented status code and content type, a body that fits the documented schema, documented
headers; requests that break the document are refused with a 4xx. Path parameters are drawn from
what exists (workflow names, webhook paths, run ids, step ids) as well as at random, so the
handlers behind the 404s are reached too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.strategies import examples
from tests.helpers import write_repo
from tests.server.serve_process import ServeProcess, eventually
from tests.server.workflows import FLAKY
from weir.server.openapi import openapi_document

TOKEN = "fuzz-api-token-5f2c"
HOOK_TOKEN = "fuzz-hook-token-91ab"
GIT_SECRET = "fuzz-push-secret"

FILES = {
    "workflows/hello.toml": """
        [params.name]
        type = "string"
        default = "world"

        [[on.webhook]]
        path = "hello"
        auth = { type = "none" }
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        params = { name = "{{ payload.name | default('world') if payload is mapping else 'world' }}" }

        [[on.webhook]]
        path = "hello/sync"
        auth = { type = "none" }
        response = "sync"
        timeout = "2s"
        idempotency_key = "{{ headers['x-delivery'] | default('') }}"

        [[on.webhook]]
        path = "checked"
        auth = { type = "none" }
        schema = { type = "object", required = ["name"], properties = { name = { type = "string" } } }
        filter = "payload.name != 'ignore'"
        params = { name = "{{ payload.name }}" }

        [[on.webhook]]
        path = "guarded"
        auth = { type = "token", token = "{{ secrets.HOOK_TOKEN }}" }

        [[steps]]
        id = "greet"
        uses = "log"
        with = { message = "Hello, {{ params.name }}!" }

        [outputs]
        greeting = "Hello, {{ params.name }}!"
        """,
    "workflows/nightly.toml": """
        [concurrency]
        limit = 1
        policy = "skip"

        [[on.schedule]]
        cron = "0 3 * * *"
        timezone = "Europe/Berlin"

        [[on.schedule]]
        every = "1h"

        [[steps]]
        id = "only"
        uses = "log"
        with = { message = "nightly" }
        """,
    "workflows/flaky.toml": FLAKY,
    "workflows/approval.toml": """
        [[steps]]
        id = "ask"
        uses = "wait"
        with = { timeout = "1h" }

        [outputs]
        answer = "{{ steps.ask.output }}"
        """,
}
NAMES = ["hello", "nightly", "flaky", "approval"]
HOOK_PATHS = ["hello", "hello/sync", "checked", "guarded", "_git"]
STEP_IDS = ["ask", "greet", "first", "second", "only"]


@dataclass
class Served:
    """A running server and the runs it held when the tests started."""

    process: ServeProcess
    headers: dict[str, str]
    run_ids: list[str]


def _seed(process: ServeProcess, headers: dict[str, str]) -> list[str]:
    """Start runs in each state the API shows: succeeded, failed, waiting (and a cancelled one)."""
    with process.client(headers=headers) as client:
        ids = [client.post(f"/api/workflows/{name}/runs").json()["run_id"] for name in ("hello", "flaky", "approval")]
        ids.append(client.post("/api/workflows/approval/runs").json()["run_id"])
        assert eventually(lambda: client.get(f"/api/runs/{ids[2]}").json()["status"] == "waiting")
        assert client.post(f"/api/runs/{ids[3]}/cancel").status_code == 202
        for run_id in ids:
            assert eventually(lambda run_id=run_id: client.get(f"/api/runs/{run_id}").json()["status"] != "queued")
    return ids


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    root = tmp_path_factory.mktemp("api-schema")
    write_repo(root / "automation", {path: text.replace("\n        ", "\n") for path, text in FILES.items()})
    env = {"WEIR_SECRET_HOOK_TOKEN": HOOK_TOKEN}
    processes = {
        "token": ServeProcess(
            root / "automation",
            root / "state-token",
            args=["--api-token", TOKEN, "--git-webhook-secret", GIT_SECRET],
            env=env,
        ),
        "open": ServeProcess(root / "automation", root / "state-open", env=env),
    }
    try:
        for process in processes.values():
            process.start(ready=False)
        served = {}
        for name, process in processes.items():
            process.wait_ready()
            headers = {"Authorization": f"Bearer {TOKEN}"} if name == "token" else {}
            served[name] = Served(process, headers, _seed(process, headers))
        yield served
    finally:
        for process in processes.values():
            process.kill()


@pytest.fixture(scope="module")
def schemas(servers: dict[str, Served]) -> dict[str, Any]:
    """The document each server serves, loaded by schemathesis (requests go to that server)."""
    # Credentials are the test's to send (the token server's token, or none): schemathesis does not generate
    # or drop the Authorization header. Unknown query parameters are ignored by the API, as by most.
    generation = {"database": "none", "with-security-parameters": False, "allow-extra-parameters": False}
    config = SchemathesisConfig.from_dict({"generation": generation})
    return {
        name: schemathesis.openapi.from_url(f"{served.process.url}/api/openapi.json", config=config)
        for name, served in servers.items()
    }


DOCUMENT = openapi_document()
OPERATIONS = [(method.upper(), path) for path, operations in DOCUMENT["paths"].items() for method in operations]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


def cases(operation: Any, known: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    """Valid and invalid requests; path parameters at random, or values that exist on the server."""
    document = DOCUMENT["paths"][operation.path][operation.method.lower()]
    modes = [GenerationMode.POSITIVE]
    if document.get("parameters") or document.get("requestBody"):
        modes.append(GenerationMode.NEGATIVE)
    names = [p["name"] for p in document.get("parameters", []) if p["in"] == "path"]
    existing = st.fixed_dictionaries({name: st.sampled_from(known[name]) for name in names})
    strategies = []
    for mode in modes:
        strategies.append(operation.as_strategy(generation_mode=mode))
        if names and mode == GenerationMode.POSITIVE:
            strategies.append(
                existing.flatmap(
                    lambda values, mode=mode: operation.as_strategy(generation_mode=mode, path_parameters=values)
                )
            )
    return st.one_of(strategies)


@pytest.mark.parametrize("server", ["token", "open"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{method} {path}" for method, path in OPERATIONS])
def test_every_operation_answers_as_documented(
    servers: dict[str, Served], schemas: dict[str, Any], server: str, method: str, path: str
) -> None:
    served = servers[server]
    operation = schemas[server][path][method]
    # `follow` streams a run's log until the run finishes: only finished runs make an answer that ends.
    run_ids = served.run_ids if not path.endswith("/logs") else [served.run_ids[i] for i in (0, 1, 3)]
    known = {"name": NAMES, "path": HOOK_PATHS, "run_id": run_ids, "step_id": STEP_IDS}
    checks = [*CHECKS, ignored_auth] if served.headers else CHECKS

    @settings(max_examples=examples(12), suppress_health_check=list(HealthCheck))
    @given(case=cases(operation, known))
    def answers_as_documented(case: Any) -> None:
        case.call_and_validate(headers=served.headers, checks=checks, timeout=15)

    answers_as_documented()


def test_each_server_documents_the_auth_it_enforces(servers: dict[str, Served]) -> None:
    resume = "/api/runs/{run_id}/steps/{step_id}/resume"
    with_token = httpx.get(f"{servers['token'].process.url}/api/openapi.json", timeout=10).json()
    without = httpx.get(f"{servers['open'].process.url}/api/openapi.json", timeout=10).json()
    assert with_token == DOCUMENT
    assert with_token["security"] == [{"bearer": []}]
    assert without["security"] == []  # loopback, no token: /api/* asks for no credentials
    assert without["paths"][resume]["post"]["security"] == [{}, {"resumeSignature": []}]
    assert {k: v for k, v in without.items() if k not in ("security", "paths")} == {
        k: v for k, v in with_token.items() if k not in ("security", "paths")
    }


def test_the_token_server_refuses_the_api_without_its_token(servers: dict[str, Served]) -> None:
    url = servers["token"].process.url
    for path in ("/api/status", "/api/workflows", "/api/runs", f"/api/runs/{servers['token'].run_ids[0]}"):
        answer = httpx.get(f"{url}{path}", headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert answer.status_code == 401, path
        assert answer.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{url}/api/openapi.json", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("/api/runs?limit=%C2%B2", 400),  # '²' is a digit to str.isdigit, not to int()
        ("/api/runs?limit=99999999999999999999999", 400),
        ("/api/runs?status=", 200),
        ("/logs?after=%C2%B2", 400),
        ("/logs?after=10957809528725821005636665667078848512", 400),  # more than a 64-bit integer
        ("/steps/ask/resume?sig=%C3%A9", 401),  # hmac.compare_digest refuses non-ASCII text
    ],
)
def test_odd_query_values_get_a_4xx_not_a_server_error(servers: dict[str, Served], query: str, status: int) -> None:
    served = servers["open"]
    run_id = served.run_ids[0]
    path = query if query.startswith("/api/") else f"/api/runs/{run_id}{query}"
    method = "POST" if "/resume" in path else "GET"
    answer = httpx.request(method, f"{served.process.url}{path}", json={} if method == "POST" else None, timeout=10)
    assert answer.status_code == status, answer.text
    if status >= 400:
        assert answer.json()["error"]["message"]
