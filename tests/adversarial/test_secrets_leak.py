"""Secret values never leave a real ``weir serve`` unmasked, whatever form a step gives them.

One workflow uses every connector (http, db on SQLite, email through aiosmtpd, Slack, PagerDuty and
an LLM through the fakes of ``tests/fakes``) and script steps. Each sees the secret ``LEAK`` and
echoes it raw, base64-encoded (also inside HTTP basic auth), percent-encoded and JSON-escaped into
its output, the run's log and its error; the services echo it back in answers and error bodies, a
database error and a connector crash repeat it, and a ``fail`` step fails the run with it. The
server runs on a file-backed SQLite state directory. Afterwards no form of any secret (nor of the
connections' credentials) may appear in the bytes of the database and its write-ahead log, in the
API answers (``/api/runs``, ``/api/runs/{id}``, ``/api/runs/{id}/logs``) or in the UI pages (``/``
and ``/runs/{id}``), and the tracebacks in the server's log are masked. The outputs, logs and errors
show ``***`` where the secret was, which proves that the secret did reach each of them.
"""

from __future__ import annotations

import base64
import inspect
import json
import math
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests import examples_support
from tests.examples_support import SMTP_PASSWORD, SMTP_USER, Services
from tests.fakes import llm as fake_llm, pagerduty as fake_pagerduty, slack as fake_slack
from tests.fakes.server import serve_in_thread
from tests.helpers import write_repo
from tests.server.serve_process import ServeProcess, finished

served = examples_support.served
"""The local Slack, PagerDuty, LLM and SMTP services, made visible to pytest in this module."""

LEAK = 'pa55 w/rd+&"Zq7vXw9K"=\u00fc\\1'
"""The secret every step echoes: base64, percent-encoding and JSON escaping all change it."""
CORE = "Zq7vXw9K"
"""The part of ``LEAK`` that its raw, JSON-, Python-, HTML- and percent-encoded forms all keep as it is."""
HOOK_TOKEN = "hook-t0ken-Wq83Lr5y"
CHILD_SECRET = "child-s3cret-Tz61Mv0p"
STORED_BEFORE_RUNNING = {"HOOK_TOKEN": HOOK_TOKEN, "CHILD_SECRET": CHILD_SECRET}
"""Secrets only the run-starting test uses (a webhook token, a child run's param): they are kept out of the
other tests' checks, which look at the workflow that runs the connectors."""
USER = "user"


def forms(secret: str) -> dict[str, str]:
    """The forms a step echoes the secret in (this function's source also runs inside the script steps)."""
    import base64
    import json
    import urllib.parse

    data = secret.encode("utf-8")
    return {
        "raw": secret,
        "b64": base64.b64encode(data).decode(),
        "b64url": base64.urlsafe_b64encode(data).decode().rstrip("="),
        "basic": "Basic " + base64.b64encode(b"user:" + data).decode(),
        "quote": urllib.parse.quote(secret, safe=""),
        "quote_plus": urllib.parse.quote_plus(secret),
        "json": json.dumps(secret),
    }


BASIC_PREFIX = base64.b64encode(f"{USER}:".encode() + LEAK.encode()).decode()[:7]
"""The base64 characters of ``user:`` that carry no bit of the secret; the masker keeps them."""
MASKED = dict.fromkeys(forms(LEAK), "***") | {"basic": f"Basic {BASIC_PREFIX}***", "json": '"***"'}
"""``forms(LEAK)`` as every stored text must show it."""
MASKED_LINES = [f"{name}={value}" for name, value in MASKED.items()]
TEMPLATE_FORMS = (
    "raw={{ secrets.LEAK }} b64={{ secrets.LEAK | b64encode }} url={{ secrets.LEAK | urlencode }}"
    " json={{ secrets.LEAK | tojson }}"
)
"""The forms a template can give the secret: as is, ``b64encode``, ``urlencode`` (which keeps '/') and ``tojson``."""
TEMPLATE_MASKED = 'raw=*** b64=*** url=*** json="***"'

SCRIPT = textwrap.dedent(inspect.getsource(forms)) + textwrap.dedent(
    """
    import json, os, sys
    values = forms(os.environ["LEAK"])
    for name, value in values.items():
        print(f"{name}={value}", file=sys.stderr)
    print(json.dumps(values))
    sys.exit(int(os.environ.get("EXIT_CODE", "0")))
    """
)


def base64_pieces(secret: str) -> set[str]:
    """The base64 characters that carry only bits of ``secret``, at each of the three byte offsets it can sit at."""
    data = secret.encode("utf-8")
    pieces = set()
    for offset in range(3):
        blob = base64.b64encode(bytes(offset) + data).decode()
        piece = blob[math.ceil(offset * 8 / 6) : (offset + len(data)) * 8 // 6]
        pieces |= {piece, piece.translate(str.maketrans("+/", "-_"))}
    return pieces


def needles(secret: str) -> set[str]:
    """Texts whose presence means ``secret`` leaked: itself, or its percent/JSON forms, and its base64."""
    plain = {CORE} if secret == LEAK else {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}
    return plain | base64_pieces(secret)


# --- the services the steps talk to, besides the fakes ----------------------------------------------


@dataclass
class Echo:
    """An HTTP service that answers with what it received, also in its errors (Slack- and PagerDuty-shaped)."""

    received: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/echo", self._echo, methods=["GET", "POST"]),
                Route("/fail", self._fail, methods=["GET", "POST"]),
                Route("/slack/chat.postMessage", self._slack, methods=["POST"]),
                Route("/pagerduty/v2/enqueue", self._pagerduty, methods=["POST"]),
            ]
        )

    async def _seen(self, request: Request) -> dict[str, Any]:
        seen = {
            "path": request.url.path,
            "query": request.url.query,
            "token": request.query_params.get("token"),
            "headers": dict(request.headers),
            "body": (await request.body()).decode("utf-8", "replace"),
        }
        self.received.append(seen)
        return seen

    async def _echo(self, request: Request) -> Response:
        return JSONResponse(await self._seen(request))

    async def _fail(self, request: Request) -> Response:
        seen = await self._seen(request)
        return PlainTextResponse(f"token rejected: ?{seen['query']} ({seen['token']})", status_code=400)

    async def _slack(self, request: Request) -> Response:
        text = json.loads((await self._seen(request))["body"]).get("text", "")
        messages = [f"[ERROR] cannot render the text: {text}"]
        return JSONResponse({"ok": False, "error": "invalid_blocks", "response_metadata": {"messages": messages}})

    async def _pagerduty(self, request: Request) -> Response:
        summary = json.loads((await self._seen(request))["body"])["payload"]["summary"]
        errors = [f"summary is not allowed: {summary}"]
        return JSONResponse({"status": "invalid event", "message": "Event object is invalid", "errors": errors}, 400)


# --- the automation repository ---------------------------------------------------------------------------

WEIR_TOML = """
[connections.echo]
type = "http"
base_url = "{{ env.WEIR_VAR_ECHO_URL }}"
auth = { type = "basic", username = "user", password = "{{ secrets.LEAK }}" }

[connections.warehouse]
type = "db"
url = "{{ secrets.WAREHOUSE_URL }}"

# SQLite reads the URI's own percent-escapes after SQLAlchemy has read the URL's: encoded twice, the
# mode arrives whole, and SQLite's error repeats it.
[connections.bad_mode]
type = "db"
url = "sqlite:///file:{{ env.WEIR_VAR_DB_PATH }}?mode={{ secrets.LEAK | urlencode | urlencode }}&uri=true"

# An option the SQLite driver cannot read: SQLAlchemy raises a ValueError that repeats it.
[connections.bad_option]
type = "db"
url = "sqlite:///{{ env.WEIR_VAR_DB_PATH }}?timeout={{ secrets.LEAK | urlencode }}"

[connections.slack]
type = "slack"
token = "{{ secrets.SLACK_BOT_TOKEN }}"
base_url = "{{ env.WEIR_VAR_SLACK_URL }}"

[connections.slack_echo]
type = "slack"
token = "{{ secrets.SLACK_BOT_TOKEN }}"
base_url = "{{ env.WEIR_VAR_ECHO_URL }}/slack"

[connections.pagerduty]
type = "pagerduty"
routing_key = "{{ secrets.PAGERDUTY_ROUTING_KEY }}"
base_url = "{{ env.WEIR_VAR_PAGERDUTY_URL }}"

[connections.pagerduty_echo]
type = "pagerduty"
routing_key = "{{ secrets.PAGERDUTY_ROUTING_KEY }}"
base_url = "{{ env.WEIR_VAR_ECHO_URL }}/pagerduty"

[connections.smtp]
type = "email"
host = "localhost"
port = {{ smtp_port }}
security = "starttls"
ca_file = "{{ ca_file }}"
username = "{{ secrets.SMTP_USERNAME }}"
password = "{{ secrets.SMTP_PASSWORD }}"
from = "Weir <weir@example.com>"

[connections.openai]
type = "llm"
provider = "openai"
model = "gpt-4o-mini"
base_url = "{{ env.WEIR_VAR_LLM_URL }}/v1"
api_key = "{{ secrets.OPENAI_API_KEY }}"
"""

LEAKY = f"""
description = "Every connector and a script echo the secret LEAK in several forms"

[params.fail]
type = "boolean"
default = true

[[steps]]
id = "script_echo"
uses = "script"
with = {{ lang = "python", env = {{ LEAK = "{{{{ secrets.LEAK }}}}" }}, run = '''
{SCRIPT}''' }}

[[steps]]
id = "log_forms"
uses = "log"
with = {{ message = "{TEMPLATE_FORMS}" }}

[[steps]]
id = "foreach_forms"
uses = "transform"
foreach = ["{{{{ secrets.LEAK }}}}", "{{{{ secrets.LEAK | b64encode }}}}", "{{{{ secrets.LEAK | urlencode }}}}"]
with = {{ output = "{{{{ index }}}}:{{{{ item }}}}" }}

[[steps]]
id = "cached"
uses = "transform"
cache = {{ key = "{{{{ secrets.LEAK }}}}", ttl = "1h" }}
with = {{ output = "{{{{ secrets.LEAK | b64encode }}}}" }}

[[steps]]
id = "http_echo"
uses = "http.request"
connection = "echo"
[steps.with]
method = "POST"
url = "/echo"
query = {{ token = "{{{{ secrets.LEAK }}}}" }}
headers = {{ X-Note = "{{{{ secrets.LEAK | b64encode }}}}" }}
json = {{ text = "{TEMPLATE_FORMS}" }}

[[steps]]
id = "http_fail"
uses = "http.request"
connection = "echo"
on_error = "continue"
with = {{ url = "/fail", query = {{ token = "{{{{ secrets.LEAK }}}}" }} }}

[[steps]]
id = "http_bad_url"
uses = "http.request"
on_error = "continue"
with = {{ url = "http://[::1/x?token={{{{ secrets.LEAK }}}}" }}

[[steps]]
id = "db_echo"
uses = "db.query"
connection = "warehouse"
[steps.with]
sql = "SELECT :raw AS raw, :b64 AS b64, :url AS url, :js AS js"
[steps.with.params]
raw = "{{{{ secrets.LEAK }}}}"
b64 = "{{{{ secrets.LEAK | b64encode }}}}"
url = "{{{{ secrets.LEAK | urlencode }}}}"
js = "{{{{ secrets.LEAK | tojson }}}}"

[[steps]]
id = "db_bad_mode"
uses = "db.query"
connection = "bad_mode"
on_error = "continue"
with = {{ sql = "SELECT 1" }}

[[steps]]
id = "db_bad_option"
uses = "db.query"
connection = "bad_option"
on_error = "continue"
with = {{ sql = "SELECT 1" }}

[[steps]]
id = "slack_post"
uses = "slack.post_message"
connection = "slack"
with = {{ channel = "C0ALERTS", text = "{TEMPLATE_FORMS}" }}

[[steps]]
id = "slack_fail"
uses = "slack.post_message"
connection = "slack_echo"
on_error = "continue"
with = {{ channel = "C0ALERTS", text = "{TEMPLATE_FORMS}" }}

[[steps]]
id = "pagerduty_event"
uses = "pagerduty.event"
connection = "pagerduty"
with = {{ summary = "{TEMPLATE_FORMS}", dedup_key = "{{{{ secrets.LEAK | b64encode }}}}" }}

[[steps]]
id = "pagerduty_fail"
uses = "pagerduty.event"
connection = "pagerduty_echo"
on_error = "continue"
with = {{ summary = "{TEMPLATE_FORMS}" }}

[[steps]]
id = "llm_chat"
uses = "llm.chat"
connection = "openai"
with = {{ prompt = "Repeat: {TEMPLATE_FORMS}" }}

[[steps]]
id = "llm_json_fail"
uses = "llm.chat"
connection = "openai"
on_error = "continue"
with = {{ prompt = "Repeat as JSON: {TEMPLATE_FORMS}", json = true }}

[[steps]]
id = "email_send"
uses = "email.send"
connection = "smtp"
with = {{ to = "ops@example.com", subject = "forms", text = "{TEMPLATE_FORMS}" }}

[[steps]]
id = "email_fail"
uses = "email.send"
connection = "smtp"
on_error = "continue"
with = {{ to = "{{{{ secrets.LEAK }}}}", subject = "forms", text = "x" }}

[[steps]]
id = "script_fail"
uses = "script"
on_error = "continue"
with = {{ lang = "python", env = {{ LEAK = "{{{{ secrets.LEAK }}}}", EXIT_CODE = "3" }}, run = '''
{SCRIPT}''' }}

[[steps]]
id = "boom"
uses = "fail"
if = "params.fail"
with = {{ message = "{TEMPLATE_FORMS}" }}

[outputs]
echoed = "{{{{ steps.script_echo.output }}}}"
raw = "{{{{ secrets.LEAK }}}}"
answer = "{{{{ steps.llm_chat.output.text }}}}"
"""

CHILD = """
[params.token]
type = "string"

[[steps]]
id = "noop"
uses = "transform"
with = { output = "ok" }
"""

PARENT = """
[[steps]]
id = "start_child"
uses = "workflow"
with = { workflow = "child", params = { token = "{{ secrets.CHILD_SECRET }}" } }
"""

HOOKED = """
[[on.webhook]]
path = "hooked"
auth = { type = "token", token = "{{ secrets.HOOK_TOKEN }}", header = "X-Hook-Token" }

[[steps]]
id = "noop"
uses = "transform"
with = { output = "ok" }
"""

LLM_REPLY = "Here it is: " + " ".join(f"{name}={value}" for name, value in forms(LEAK).items())
"""What the model answers: it repeats the secret in every form."""


@dataclass
class Leaky:
    server: ServeProcess
    services: Services
    echo: Echo
    secrets: dict[str, str]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The finished runs, by name: ``ok`` (fail = false) and ``failed``."""


@pytest.fixture(scope="module")
def leaky(served: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leaky]:
    root = tmp_path_factory.mktemp("leak")
    warehouse = root / "warehouse.db"
    warehouse.touch()
    config = WEIR_TOML.replace("{{ smtp_port }}", str(served.smtp_port)).replace("{{ ca_file }}", served.ca_file)
    files = {
        "workflows/weir.toml": config,
        "workflows/leaky.toml": LEAKY,
        "workflows/child.toml": CHILD,
        "workflows/parent.toml": PARENT,
        "workflows/hooked.toml": HOOKED,
    }
    repo = root / "automation"
    write_repo(repo, files, message="leaky workflows")
    secrets = {
        "LEAK": LEAK,
        "WAREHOUSE_URL": f"sqlite:///{warehouse}",
        "SLACK_BOT_TOKEN": fake_slack.TOKEN,
        "PAGERDUTY_ROUTING_KEY": fake_pagerduty.ROUTING_KEY,
        "SMTP_USERNAME": SMTP_USER,
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "OPENAI_API_KEY": fake_llm.OPENAI_KEY,
    }
    echo = Echo()
    served.llm.reply = LLM_REPLY
    with serve_in_thread(echo.app) as echo_url:
        env = {f"WEIR_SECRET_{name}": value for name, value in (secrets | STORED_BEFORE_RUNNING).items()}
        env |= {
            "WEIR_VAR_ECHO_URL": echo_url,
            "WEIR_VAR_DB_PATH": str(warehouse),
            "WEIR_VAR_SLACK_URL": f"{served.slack_url}/api",
            "WEIR_VAR_PAGERDUTY_URL": served.pagerduty_url,
            "WEIR_VAR_LLM_URL": served.llm_url,
        }
        fixture = Leaky(ServeProcess(repo, root / "state", env=env), served, echo, secrets)
        try:
            fixture.server.start()
            with fixture.server.client() as client:
                for name, fail in (("ok", False), ("failed", True)):
                    started = client.post("/api/workflows/leaky/runs", json={"params": {"fail": fail}})
                    assert started.status_code == 202, started.text
                    fixture.runs[name] = finished(client, started.json()["run_id"], timeout=60)
            yield fixture
        finally:
            fixture.server.kill()
            served.llm.reset()


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    found = [entry for entry in run["steps"] if entry["id"] == step_id]
    assert len(found) == 1, f"step {step_id} appears {len(found)} times in run {run['id']}"
    return found[0]


def assert_no_secret(where: str, text: str | bytes, secrets: dict[str, str]) -> None:
    """No needle of any secret (see ``needles``) is in ``text``; the message names the secret and the form."""
    for name, value in secrets.items():
        for needle in needles(value):
            at = text.find(needle.encode()) if isinstance(text, bytes) else text.find(needle)
            context = text[max(0, at - 200) : at + 100] if at >= 0 else ""
            assert at < 0, f"secret {name} leaked into {where} as {needle!r}: ...{context!r}..."


# --- the secret reached every step and service ------------------------------------------------------------


def test_every_service_received_the_secret(leaky: Leaky) -> None:
    """The steps really sent the secret: what the services received holds it, unmasked."""
    services, seen = leaky.services, {r["path"]: r for r in leaky.echo.received}
    assert seen["/echo"]["token"] == LEAK
    assert seen["/echo"]["headers"]["authorization"] == forms(LEAK)["basic"]
    assert base64.b64decode(seen["/echo"]["headers"]["x-note"]).decode() == LEAK
    assert seen["/fail"]["query"] == "token=" + quote_plus(LEAK)
    assert LEAK in json.loads(seen["/slack/chat.postMessage"]["body"])["text"]
    assert LEAK in json.loads(seen["/pagerduty/v2/enqueue"]["body"])["payload"]["summary"]
    assert any(r.json and LEAK in r.json["text"] for r in services.slack.requests)
    assert any(r.json and LEAK in r.json["payload"]["summary"] for r in services.pagerduty.requests)
    assert any(LEAK in message["content"] for r in services.llm.requests for message in r.json["messages"])
    assert any(LEAK in m.get_content() for m in services.mailbox.messages())


# --- what weir stored shows *** where the secret was -------------------------------------------------------


def test_outputs_and_step_records_show_the_mask(leaky: Leaky) -> None:
    run = leaky.runs["ok"]
    assert run["status"] == "succeeded", run["error"]
    answer = "Here it is: " + " ".join(MASKED_LINES)
    assert run["outputs"] == {"echoed": MASKED, "raw": "***", "answer": answer}

    assert step(run, "script_echo")["output"] == MASKED
    assert step(run, "script_echo")["input"]["env"] == {"LEAK": "***"}
    assert [item["output"] for item in step(run, "foreach_forms")["items"]] == ["0:***", "1:***", "2:***"]
    assert step(run, "foreach_forms")["input"] == ["***", "***", "***"]
    assert step(run, "cached")["output"] == "***"
    assert step(leaky.runs["failed"], "cached")["note"] == "cached"
    echoed = step(run, "http_echo")["output"]["json"]
    assert (echoed["token"], echoed["query"]) == ("***", "token=***")
    assert echoed["headers"]["authorization"] == f"Basic {BASIC_PREFIX}***"
    assert echoed["headers"]["x-note"] == "***"
    assert json.loads(echoed["body"]) == {"text": TEMPLATE_MASKED}
    assert step(run, "db_echo")["output"]["rows"] == [{"raw": "***", "b64": "***", "url": "***", "js": '"***"'}]
    assert step(run, "db_echo")["input"]["params"] == {"raw": "***", "b64": "***", "url": "***", "js": '"***"'}
    assert step(run, "slack_post")["input"]["text"] == TEMPLATE_MASKED
    assert step(run, "pagerduty_event")["output"] == {"status": "success", "dedup_key": "***"}
    assert step(run, "llm_chat")["input"]["prompt"] == f"Repeat: {TEMPLATE_MASKED}"
    assert step(run, "llm_chat")["output"]["text"] == answer
    assert step(run, "email_send")["input"]["text"] == TEMPLATE_MASKED


def test_connector_and_script_errors_show_the_mask(leaky: Leaky) -> None:
    run = leaky.runs["failed"]
    assert run["status"] == "failed"
    assert run["error"] == TEMPLATE_MASKED  # the message of the fail step
    errors = {entry["id"]: entry["error"] for entry in run["steps"] if entry["error"]}
    echo = leaky.echo.received[0]["headers"]["host"]
    assert errors["http_fail"] == (
        f"GET http://{echo}/fail returned HTTP 400 (expected 2xx): token rejected: ?token=*** (***)"
    )
    assert errors["http_bad_url"] == "url 'http://[::1/x?token=***' is not a valid URL: Invalid port: ':1'"
    assert errors["db_bad_mode"] == "db.query failed: no such access mode: ***"
    assert errors["db_bad_option"] == (
        "unexpected error in 'db.query': ValueError: could not convert string to float: '***'"
    )
    assert errors["slack_fail"] == (
        "Slack refused the message: invalid_blocks; check `blocks` against Slack's Block Kit reference"
        f" ([ERROR] cannot render the text: {TEMPLATE_MASKED})"
    )
    assert errors["pagerduty_fail"].endswith(f"summary is not allowed: {TEMPLATE_MASKED}")
    assert errors["llm_json_fail"].startswith("the model's answer is not valid JSON")
    assert errors["llm_json_fail"].endswith("it reads: Here it is: " + " ".join(MASKED_LINES))
    assert (
        errors["email_fail"]
        == "inputs of 'email.send' are invalid: to: Value error, to has '***', which is not an email address"
    )
    assert errors["script_fail"] == "script 'script_fail' exited with code 3: " + "\n".join(MASKED_LINES)
    assert errors["boom"] == TEMPLATE_MASKED
    assert set(errors) == {
        "http_fail", "http_bad_url", "db_bad_mode", "db_bad_option", "slack_fail", "pagerduty_fail",
        "llm_json_fail", "email_fail", "script_fail", "boom",
    }  # fmt: skip


def test_run_logs_show_the_mask(leaky: Leaky) -> None:
    with leaky.server.client() as client:
        for run in leaky.runs.values():
            lines = client.get(f"/api/runs/{run['id']}/logs").json()["logs"]
            by_step: dict[str, list[str]] = {}
            for line in lines:
                by_step.setdefault(line["step"], []).append(line["message"])
            assert by_step["log_forms"] == [TEMPLATE_MASKED]
            assert by_step["script_echo"] == MASKED_LINES
    assert by_step["script_fail"] == MASKED_LINES


# --- and nothing else holds the secret ---------------------------------------------------------------------


def test_no_form_of_any_secret_in_the_api_or_the_ui(leaky: Leaky) -> None:
    with leaky.server.client() as client:
        pages = {"/api/runs": client.get("/api/runs", params={"limit": 500}), "/": client.get("/")}
        for run in leaky.runs.values():
            for path in (f"/api/runs/{run['id']}", f"/api/runs/{run['id']}/logs", f"/runs/{run['id']}"):
                pages[path] = client.get(path)
            pages["follow"] = client.get(f"/api/runs/{run['id']}/logs", params={"follow": "1"})
    for path, answer in pages.items():
        assert answer.status_code == 200, (path, answer.text[:300])
        assert_no_secret(path, answer.text, leaky.secrets)
    assert "***" in pages[f"/runs/{leaky.runs['failed']['id']}"].text


def test_no_form_of_any_secret_in_the_database_files(leaky: Leaky) -> None:
    """The raw bytes of the SQLite database and its write-ahead log, as the running server left them."""
    files = {path.name: path.read_bytes() for path in leaky.server.state_dir.glob("weir.db*") if path.is_file()}
    assert {"weir.db", "weir.db-wal"} <= set(files), sorted(files)
    stored = b"".join(files.values())
    assert all(run["id"].encode() in stored for run in leaky.runs.values())  # the runs are in these bytes
    assert b"raw=***" in stored
    for name, data in files.items():
        assert_no_secret(name, data, leaky.secrets)


def test_tracebacks_in_the_server_log_are_masked(leaky: Leaky) -> None:
    log = leaky.server.log.read_text(encoding="utf-8")
    assert log.count("failed unexpectedly:\nTraceback (most recent call last):") == 2, log  # one per run
    assert log.count("ValueError: could not convert string to float: '***'") == 2, log


def test_no_form_of_any_secret_in_the_server_log(leaky: Leaky) -> None:
    assert_no_secret("the server's log", leaky.server.log.read_text(encoding="utf-8"), leaky.secrets)


# --- values the engine stores before a step runs -----------------------------------------------------------


def test_child_run_params_and_webhook_headers_are_masked(leaky: Leaky) -> None:
    with leaky.server.client() as client:
        parent = client.post("/api/workflows/parent/runs", json={"params": {}})
        assert parent.status_code == 202, parent.text
        parent_run = finished(client, parent.json()["run_id"], timeout=30)
        assert parent_run["status"] == "succeeded", parent_run["error"]
        child_id = step(parent_run, "start_child")["child_run_id"]
        hooked = client.post("/hooks/hooked", json={}, headers={"X-Hook-Token": HOOK_TOKEN})
        assert hooked.status_code == 202, hooked.text
        hooked_run = finished(client, hooked.json()["run_id"], timeout=30)
        child = client.get(f"/api/runs/{child_id}").json()
    assert hooked_run["status"] == "succeeded"
    assert child["params"] == {"token": "***"}
    assert "x-hook-token" not in hooked_run["trigger"]["headers"]  # the token auth's header is never stored
    assert_no_secret("the runs' API answers", json.dumps([child, hooked_run]), STORED_BEFORE_RUNNING)
