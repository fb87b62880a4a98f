"""One real ``weir serve`` for the whole catalogue, and the helpers that every hostile request is judged with.

The server follows a Git repository holding one workflow per kind of edge (each auth type, an echo
hook, hooks that map untrusted text into templates, a script that reports its environment), runs
with an ``--api-token`` and a small ``--max-body``, and has secrets and a canary variable in its
environment. Tests count runs per workflow before and after a hostile request (nothing stored) and
look for every secret value in every answer (nothing leaked).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import write_repo
from tests.server.serve_process import ServeProcess, eventually
from tests.server.workflows import APPROVAL

API_TOKEN = "adv-api-t0ken-7c1e94"
GITHUB_SECRET = "adv-github-s3cret-41d0"
SLACK_SECRET = "adv-slack-s3cret-9f2b77"
HOOK_TOKEN = "adv-hook-t0ken-5a8e31"
HMAC_SECRET = "adv-hmac-s3cret-02c4"
MAPPED_SECRET = "adv-mapped-s3cret-6b19"
CANARY = "adv-canary-value-0d3f"
MAX_BODY = 64 * 1024
SECRETS = {
    "ADV_GITHUB": GITHUB_SECRET,
    "ADV_SLACK": SLACK_SECRET,
    "ADV_TOKEN": HOOK_TOKEN,
    "ADV_HMAC": HMAC_SECRET,
    "ADV_MAPPED": MAPPED_SECRET,
}
SECRET_VALUES = (API_TOKEN, *SECRETS.values(), CANARY)

NOTE_STEP = """
[[steps]]
id = "noted"
uses = "log"
with = {{ message = "{name} accepted" }}
"""

WORKFLOWS = {
    "approval.toml": APPROVAL,
    "echo.toml": """
description = "Accepts anything; the run's trigger shows the payload as weir parsed it"

[[on.webhook]]
path = "echo"
methods = ["POST", "PUT"]
auth = { type = "none" }
"""
    + NOTE_STEP.format(name="echo"),
    "typed.toml": """
[[on.webhook]]
path = "typed"
auth = { type = "none" }
schema = { type = "object", required = ["id"], properties = { id = { type = "integer" } } }
"""
    + NOTE_STEP.format(name="typed"),
    "gh.toml": """
[[on.webhook]]
path = "gh"
auth = { type = "github", secret = "{{ secrets.ADV_GITHUB }}" }
"""
    + NOTE_STEP.format(name="gh"),
    "slack.toml": """
[[on.webhook]]
path = "slack"
auth = { type = "slack", secret = "{{ secrets.ADV_SLACK }}" }
"""
    + NOTE_STEP.format(name="slack"),
    "bearer.toml": """
[[on.webhook]]
path = "bearer"
auth = { type = "token", token = "{{ secrets.ADV_TOKEN }}" }
"""
    + NOTE_STEP.format(name="bearer"),
    "named.toml": """
[[on.webhook]]
path = "named"
auth = { type = "token", token = "{{ secrets.ADV_TOKEN }}", header = "X-Weir-Token" }
"""
    + NOTE_STEP.format(name="named"),
    "signed.toml": """
[[on.webhook]]
path = "signed"
auth = { type = "hmac-sha256", secret = "{{ secrets.ADV_HMAC }}", header = "X-Signature", encoding = "base64" }
"""
    + NOTE_STEP.format(name="signed"),
    "unset.toml": """
[[on.webhook]]
path = "unset"
auth = { type = "github", secret = "{{ secrets.ADV_NEVER_SET }}" }
"""
    + NOTE_STEP.format(name="unset"),
    "literal.toml": """
description = "Maps untrusted payload, header and query text into params, outputs and a second step"

[params.name]
type = "string"

[params.note]
type = "string"
default = ""

[[on.webhook]]
path = "literal"
auth = { type = "none" }
params = { name = "{{ payload.name }}", note = "{{ headers['x-note'] | default('') }}|{{ query.q | default('') }}" }
filter = "payload.name != 'skip me'"
response = "sync"
timeout = "10s"

[[steps]]
id = "first"
uses = "transform"
with.output = { greeting = "Hello {{ params.name }}", raw = "{{ params.name }}", note = "{{ params.note }}" }

[[steps]]
id = "second"
uses = "transform"
needs = ["first"]
with.output = "{{ steps.first.output.raw }}"

[outputs]
greeting = "{{ steps.first.output.greeting }}"
raw = "{{ steps.second.output }}"
note = "{{ steps.first.output.note }}"
payload = "{{ payload }}"
""",
    "formatted.toml": """
description = "A template of the repository that calls methods on untrusted values"

[params.fmt]
type = "string"
default = "{}"

[params.times]
type = "integer"
default = 1

[[on.webhook]]
path = "formatted"
auth = { type = "none" }
params = { fmt = "{{ payload.fmt | default('{}') }}", times = "{{ payload.times | default(1) }}" }
response = "sync"
timeout = "10s"

[[steps]]
id = "shape"
uses = "transform"
with.output = { formatted = "{{ params.fmt.format(params.times) }}", repeated = "{{ 'ab' * params.times }}" }

[outputs]
formatted = "{{ steps.shape.output.formatted }}"
length = "{{ steps.shape.output.repeated | length }}"
""",
    "shaped.toml": """
description = "Params a form sends as JSON"

[params.data]
type = "object"
default = {}

[params.level]
type = "string"
enum = ["low", "high"]
default = "low"
"""
    + NOTE_STEP.format(name="shaped"),
    "environ.toml": """
description = "A script that reports the names of the variables it can see, and a digest of the mapped one"

[[on.webhook]]
path = "environ"
auth = { type = "none" }
response = "sync"
timeout = "20s"

[[steps]]
id = "look"
uses = "script"
timeout = "15s"
with = { lang = "python", env = { MAPPED = "{{ secrets.ADV_MAPPED }}" }, run = '''
import hashlib, json, os
print(json.dumps({"names": sorted(os.environ), "mapped": hashlib.sha256(os.environ["MAPPED"].encode()).hexdigest(),
                  "values": sorted(hashlib.sha256(v.encode()).hexdigest() for v in os.environ.values())}))
''' }

[outputs]
seen = "{{ steps.look.output }}"
""",
}


@pytest.fixture(scope="session")
def hostile_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adversarial") / "automation"
    write_repo(root, {f"workflows/{name}": text for name, text in WORKFLOWS.items()}, message="hostile edges")
    return root


@pytest.fixture(scope="session")
def server(hostile_repo: Path) -> Iterator[ServeProcess]:
    """``weir serve`` with an API token, a 64 KiB body limit, secrets and a canary in its environment."""
    env = {f"WEIR_SECRET_{name}": value for name, value in SECRETS.items()}
    env["ADV_CANARY"] = CANARY
    env.pop("WEIR_SECRET_ADV_NEVER_SET", None)
    args = ["--api-token", API_TOKEN, "--max-body", str(MAX_BODY)]
    process = ServeProcess(hostile_repo, hostile_repo.parent / "state", env=env, args=args)
    try:
        yield process.start()
    finally:
        process.kill()


@pytest.fixture(scope="session")
def api(server: ServeProcess) -> Iterator[httpx.Client]:
    """A client of the management API, with the token."""
    with httpx.Client(base_url=server.url, timeout=20, headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        yield client


@pytest.fixture(scope="session")
def hooks(server: ServeProcess) -> Iterator[httpx.Client]:
    """A client of the webhook routes: no API token, nothing it does not send on purpose."""
    with httpx.Client(base_url=server.url, timeout=20) as client:
        yield client


def run_count(api: httpx.Client, workflow: str) -> int:
    """How many runs of ``workflow`` the server's store holds."""
    answer = api.get("/api/runs", params={"workflow": workflow, "limit": 500})
    assert answer.status_code == 200, answer.text
    return len(answer.json()["runs"])


def newest_run(api: httpx.Client, workflow: str) -> dict[str, object]:
    """The newest run of ``workflow``, in full, once it has finished."""
    runs = api.get("/api/runs", params={"workflow": workflow, "limit": 1}).json()["runs"]
    assert runs, f"no run of {workflow}"
    run_id = runs[0]["id"]

    def done() -> dict[str, object] | None:
        run: dict[str, object] = api.get(f"/api/runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    found = eventually(done, timeout=10)
    assert found, f"run {run_id} did not finish"
    return found  # type: ignore[no-any-return]


def assert_nothing_leaked(text: str, *extra: str) -> None:
    """No secret of the server (and none of ``extra``) appears in ``text``."""
    for value in (*SECRET_VALUES, *(e for e in extra if e)):
        assert value not in text, f"{value!r} leaked"


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """(status, code, message) of a JSON error answer."""
    body = response.json()
    return response.status_code, body["error"]["code"], body["error"]["message"]


def pids_alive(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that still exist and are not zombies."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive
