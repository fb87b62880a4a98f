"""The OpenAPI document against a real server: every route is listed, and real answers fit its schemas."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.helpers import write_repo
from tests.server.serve_process import ServeProcess, eventually, finished
from weir.server.app import create_app
from weir.server.openapi import openapi_document
from weir.settings import build_settings

TOKEN = "openapi-test-token"
GIT_SECRET = "push-secret"
DOCUMENT_URI = "urn:weir:openapi"

HELLO = """
[params.name]
type = "string"
default = "world"

[[on.webhook]]
path = "hello"
auth = { type = "none" }
params = { name = "{{ payload.name | default('world') }}" }

[[on.webhook]]
path = "hello/sync"
auth = { type = "none" }
response = "sync"
idempotency_key = "{{ headers['x-delivery'] | default('') }}"

[[on.webhook]]
path = "checked"
auth = { type = "none" }
schema = { type = "object", required = ["name"] }
filter = "payload.name != 'ignore'"
params = { name = "{{ payload.name }}" }

[[steps]]
id = "greet"
uses = "log"
with = { message = "Hello, {{ params.name }}!" }

[[steps]]
id = "each"
uses = "transform"
foreach = [1, 2]
with.output = "{{ item * 2 }}"

[outputs]
doubled = "{{ steps.each.output }}"
"""

NIGHTLY = """
description = "scheduled"
tags = ["ops"]

[[on.schedule]]
cron = "0 3 * * *"
timezone = "Europe/Berlin"

[[on.schedule]]
every = "1h"

[[steps]]
id = "only"
uses = "log"
with = { message = "nightly" }
"""

FLAKY = """
[[steps]]
id = "first"
uses = "transform"
with.output = "done"

[[steps]]
id = "second"
uses = "fail"
needs = ["first"]
with = { message = "failed on purpose" }
"""

APPROVAL = """
[[steps]]
id = "link"
uses = "log"
with = { message = "{{ run.resume_url('ask') }}" }

[[steps]]
id = "ask"
uses = "wait"
needs = ["link"]
with = { timeout = "1h" }

[outputs]
answer = "{{ steps.ask.output.answer }}"
"""

DOCUMENT = openapi_document()
REGISTRY: Registry[Any] = Registry().with_resource(
    DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def validator(*parts: str) -> Draft202012Validator:
    """A validator of the schema at ``parts`` inside the document, with its $refs resolved in the document."""
    return Draft202012Validator({"$ref": f"{DOCUMENT_URI}#/{_pointer(*parts)}"}, registry=REGISTRY)


def check(response: httpx.Response, path: str) -> httpx.Response:
    """Assert that ``response`` is documented for ``path`` (a template of the document) and fits its schema."""
    method = response.request.method.lower()
    operation = DOCUMENT["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method.upper()} {path} answered {status}, which is not documented"
    content = operation["responses"][status]["content"]
    media = response.headers["content-type"].split(";")[0]
    assert media in content, f"{method.upper()} {path} {status} answered {media}, documented: {list(content)}"
    if media == "application/json":
        schema = ("paths", path, method, "responses", status, "content", media, "schema")
        errors = [f"{e.json_path}: {e.message}" for e in validator(*schema).iter_errors(response.json())]
        assert not errors, f"{method.upper()} {path} {status} does not fit the document: {errors}\n{response.text}"
    return response


def check_body(body: Any, path: str, method: str = "post") -> Any:
    """Assert that a request body we send fits the operation's documented request body."""
    schema = ("paths", path, method, "requestBody", "content", "application/json", "schema")
    errors = [e.message for e in validator(*schema).iter_errors(body)]
    assert not errors, f"{body!r} does not fit the request body of {method.upper()} {path}: {errors}"
    return body


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("openapi")
    files = {
        "workflows/hello.toml": HELLO,
        "workflows/nightly.toml": NIGHTLY,
        "workflows/flaky.toml": FLAKY,
        "workflows/approval.toml": APPROVAL,
    }
    write_repo(root / "automation", files, message="workflows")
    args = ["--api-token", TOKEN, "--git-webhook-secret", GIT_SECRET]
    process = ServeProcess(root / "automation", root / "state", args=args)
    try:
        yield process.start()
    finally:
        process.kill()


@pytest.fixture
def client(serve: ServeProcess) -> Iterator[httpx.Client]:
    with serve.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def test_openapi_lists_every_route_and_method_of_the_app(serve: ServeProcess, tmp_path: Path) -> None:
    app = create_app(build_settings(repo=str(serve.repo), state_dir=tmp_path / "state"))
    served: dict[str, set[str]] = {}
    for route in app.routes:
        if (route.name or "").startswith("ui:"):  # type: ignore[attr-defined]
            continue  # the web UI (docs/ui.md) is not part of the API
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # type: ignore[attr-defined]
        served.setdefault(path, set()).update(m.lower() for m in route.methods or ())  # type: ignore[attr-defined]
    documented = {path: set(ops) for path, ops in DOCUMENT["paths"].items()}
    assert set(documented) == set(served)
    for path, methods in served.items():
        # Starlette adds HEAD to every GET route; the document lists it only where a handler chose it (webhooks).
        assert methods - {"head"} <= documented[path] <= methods, path


def test_openapi_document_states_parameters_security_and_errors() -> None:
    paths = DOCUMENT["paths"]
    runs = {p["name"]: p for p in paths["/api/runs"]["get"]["parameters"]}
    assert runs["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
    assert DOCUMENT["components"]["schemas"]["RunStatus"]["enum"] == [
        "queued",
        "running",
        "waiting",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert DOCUMENT["security"] == [{"bearer": []}]
    for path in ("/healthz", "/readyz", "/api/openapi.json", "/hooks/_git"):
        assert next(iter(paths[path].values()))["security"] == [], path
    resume = paths["/api/runs/{run_id}/steps/{step_id}/resume"]["post"]
    assert resume["security"] == [{"bearer": []}, {"resumeSignature": []}]
    assert "sig" in {p["name"] for p in resume["parameters"]}
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert operation["operationId"], (method, path)
            if path.startswith("/api/") and path != "/api/openapi.json":
                assert "401" in operation["responses"], (method, path)
            for name in re.findall(r"\{(\w+)\}", path):
                assert name in {p["name"] for p in operation["parameters"] if p["in"] == "path"}, (method, path)
    assert {"400", "401", "404", "405", "413", "422", "503"} <= set(paths["/hooks/{path}"]["post"]["responses"])
    assert set(paths["/api/workflows/{name}/runs"]["post"]["responses"]) == {"202", "400", "401", "404", "409"} | {
        "422",
        "503",
    }


@pytest.mark.skipif(importlib.util.find_spec("openapi_spec_validator") is None, reason="openapi-spec-validator")
def test_openapi_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    validate(DOCUMENT)


def test_openapi_get_endpoints_answer_as_documented(serve: ServeProcess, client: httpx.Client) -> None:
    assert eventually(lambda: client.get("/readyz").status_code == 200)
    assert check(client.get("/healthz"), "/healthz").json() == {"status": "ok"}
    check(client.get("/readyz"), "/readyz")
    check(client.get("/metrics"), "/metrics")
    assert check(httpx.get(f"{serve.url}/api/openapi.json"), "/api/openapi.json").json() == DOCUMENT
    check(client.get("/api/status"), "/api/status")
    listed = check(client.get("/api/workflows"), "/api/workflows").json()
    assert [w["name"] for w in listed["workflows"]] == ["approval", "flaky", "hello", "nightly"]
    nightly = check(client.get("/api/workflows/nightly"), "/api/workflows/{name}").json()
    assert [sorted(s) for s in nightly["triggers"]["schedules"]] == [
        ["cron", "next_fire_times", "timezone"],
        ["every", "next_fire_times", "timezone"],
    ]
    check(client.get("/api/workflows/nope"), "/api/workflows/{name}")

    run_id = check(client.post("/hooks/hello", json={"name": "Ada"}), "/hooks/{path}").json()["run_id"]
    finished(client, run_id)
    run = check(client.get(f"/api/runs/{run_id}"), "/api/runs/{run_id}").json()
    assert [len(s.get("items", [])) for s in run["steps"]] == [0, 2]
    logs = check(client.get(f"/api/runs/{run_id}/logs"), "/api/runs/{run_id}/logs").json()
    assert [line["message"] for line in logs["logs"]] == ["Hello, Ada!"]
    check(client.get(f"/api/runs/{run_id}/logs", params={"after": "x"}), "/api/runs/{run_id}/logs")
    with client.stream("GET", f"/api/runs/{run_id}/logs", params={"follow": 1}) as stream:
        check(stream, "/api/runs/{run_id}/logs")
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    for event in events[:-1]:
        assert not list(validator("components", "schemas", "LogLine").iter_errors(event))
    check(client.get("/api/runs/0000/logs"), "/api/runs/{run_id}/logs")
    check(client.get("/api/runs/0000"), "/api/runs/{run_id}")

    finished(client, client.post("/hooks/hello", json={}).json()["run_id"])
    page = check(client.get("/api/runs", params={"limit": 1}), "/api/runs").json()
    assert page["next_cursor"]
    check(client.get("/api/runs", params={"cursor": page["next_cursor"], "status": "succeeded"}), "/api/runs")
    check(client.get("/api/runs", params={"workflow": "hello"}), "/api/runs")
    assert check(client.get("/api/runs", params={"status": "bogus"}), "/api/runs").status_code == 400
    assert check(client.get("/api/runs", params={"limit": 501}), "/api/runs").status_code == 400
    assert check(httpx.get(f"{serve.url}/api/runs"), "/api/runs").status_code == 401


def test_openapi_post_endpoints_answer_as_documented(serve: ServeProcess, client: httpx.Client) -> None:
    start = "/api/workflows/{name}/runs"
    body = check_body({"params": {"name": "docs"}}, start)
    accepted = check(client.post("/api/workflows/hello/runs", json=body), start)
    assert accepted.status_code == 202
    assert check(client.post("/api/workflows/hello/runs", json={"params": {"name": 5}}), start).status_code == 422
    assert check(client.post("/api/workflows/nope/runs", json={}), start).status_code == 404
    assert check(client.post("/api/workflows/hello/runs", content=b"{"), start).status_code == 400
    assert check(client.post("/api/workflows/hello/runs", json={"param": {}}), start).status_code == 400

    rerun = "/api/runs/{run_id}/rerun"
    failed = finished(client, client.post("/api/workflows/flaky/runs").json()["run_id"])
    again = check(client.post(f"/api/runs/{failed['id']}/rerun", json=check_body({"from": "failed"}, rerun)), rerun)
    assert again.status_code == 202
    assert finished(client, again.json()["run_id"])["rerun_of"] == failed["id"]
    assert check(client.post(f"/api/runs/{failed['id']}/rerun", json={"from": "middle"}), rerun).status_code == 400
    assert check(client.post("/api/runs/0000/rerun"), rerun).status_code == 404

    cancel = "/api/runs/{run_id}/cancel"
    waiting = client.post("/api/workflows/approval/runs").json()["run_id"]
    assert eventually(lambda: client.get(f"/api/runs/{waiting}").json()["status"] == "waiting")
    assert check(client.post(f"/api/runs/{waiting}/rerun"), rerun).status_code == 409
    assert check(client.post(f"/api/runs/{waiting}/cancel"), cancel).status_code == 202
    finished(client, waiting)
    assert check(client.post(f"/api/runs/{waiting}/cancel"), cancel).status_code == 409

    resume = "/api/runs/{run_id}/steps/{step_id}/resume"
    waiting = client.post("/api/workflows/approval/runs").json()["run_id"]
    assert eventually(lambda: client.get(f"/api/runs/{waiting}").json()["status"] == "waiting")
    assert check(client.post(f"/api/runs/{waiting}/steps/ask/resume?sig=00", json={}), resume).status_code == 401
    assert check(client.post(f"/api/runs/{waiting}/steps/ask/resume", content=b"{"), resume).status_code == 400
    resumed = check(client.post(f"/api/runs/{waiting}/steps/ask/resume", json={"answer": "yes"}), resume)
    assert resumed.status_code == 202
    assert finished(client, waiting)["outputs"] == {"answer": "yes"}
    assert check(client.post(f"/api/runs/{waiting}/steps/ask/resume", json={}), resume).status_code == 409

    assert check(client.post("/api/sync"), "/api/sync").json() == {"applied": False}


def test_openapi_webhook_answers_as_documented(serve: ServeProcess, client: httpx.Client) -> None:
    hook = "/hooks/{path}"
    sync = check(client.post("/hooks/hello/sync", json={}, headers={"X-Delivery": "d-1"}), hook)
    assert sync.status_code == 200
    assert sync.json()["status"] == "succeeded"
    assert check(client.post("/hooks/hello/sync", json={}, headers={"X-Delivery": "d-1"}), hook).json()["duplicate"]
    assert check(client.post("/hooks/checked", json={"name": "ignore"}), hook).json() == {"ignored": True}
    assert check(client.post("/hooks/checked", json={}), hook).status_code == 422
    assert check(client.post("/hooks/checked", json={"name": 5}), hook).status_code == 422
    assert check(client.get("/hooks/hello"), hook).status_code == 405
    assert check(client.put("/hooks/nowhere"), hook).status_code == 404
    assert check(client.post("/hooks/hello", content=b"x" * (1024 * 1024 + 1)), hook).status_code == 413

    git = "/hooks/_git"
    body = b'{"zen": "Keep it logically awesome."}'
    mac = hmac.new(GIT_SECRET.encode(), body, hashlib.sha256).hexdigest()
    signed = {"X-Hub-Signature-256": f"sha256={mac}", "Content-Type": "application/json"}
    assert check(client.post(git, content=body, headers={**signed, "X-GitHub-Event": "ping"}), git).status_code == 200
    assert check(client.post(git, content=body, headers={**signed, "X-GitHub-Event": "push"}), git).status_code == 202
    assert check(client.post(git, content=body), git).status_code == 401


def test_openapi_signed_resume_link_needs_no_api_token(serve: ServeProcess, client: httpx.Client) -> None:
    waiting = client.post("/api/workflows/approval/runs").json()["run_id"]
    assert eventually(lambda: client.get(f"/api/runs/{waiting}").json()["status"] == "waiting")
    link = client.get(f"/api/runs/{waiting}/logs").json()["logs"][0]["message"]
    assert link.startswith(f"{serve.url}/api/runs/{waiting}/steps/ask/resume?sig=")
    resumed = check(httpx.post(link, json={"answer": "signed"}), "/api/runs/{run_id}/steps/{step_id}/resume")
    assert resumed.status_code == 202
    assert finished(client, waiting)["outputs"] == {"answer": "signed"}
