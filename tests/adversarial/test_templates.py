"""Sandbox escapes and resource bombs in templates, and untrusted text that looks like a template.

Templates written in a workflow file are trusted to parse but never to reach Python: a known escape
either fails ``weir check`` (a name the sandbox does not have) or fails its step at run time with the
sandbox's exact refusal, and a bomb hits a bound within a second. Text from outside (payloads,
headers, query strings) is a value: however much it looks like a template, it arrives in params and
outputs character for character, through a real webhook.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.adversarial.conftest import GITHUB_SECRET, assert_nothing_leaked, run_count
from weir.cli import main as weir
from weir.testing import Harness

pytestmark = pytest.mark.anyio

TWO_STEPS = """
[params.x]
type = "string"
default = "x"

[[steps]]
id = "render"
uses = "transform"
with.output = {template}

[[steps]]
id = "after"
uses = "log"
needs = ["render"]
with = {{ message = "must not run" }}
"""


def snippet(template: str) -> str:
    """How an error quotes a template: whole up to 80 characters, else its first 77 and '...'."""
    return f"'{template}'" if len(template) <= 80 else f"'{template[:77]}...'"


UNSAFE = "access to attribute '{}' of '{}' object is unsafe."
REFUSED_AT_RUN_TIME = {
    "str-class-mro": ("{{ ''.__class__.__mro__ }}", UNSAFE.format("__class__", "str")),
    "subclasses-walk": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", UNSAFE.format("__class__", "str")),
    "tuple-base": ("{{ ().__class__.__base__ }}", UNSAFE.format("__class__", "tuple")),
    "namespace-init-globals": ("{{ namespace.__init__.__globals__ }}", UNSAFE.format("__init__", "type")),
    "dict-base-subclasses": ("{{ dict.__base__.__subclasses__() }}", UNSAFE.format("__base__", "type")),
    "function-globals": ("{{ now.__globals__ }}", UNSAFE.format("__globals__", "function")),
    "resume-url-globals": ("{{ run.resume_url.__globals__ }}", UNSAFE.format("__globals__", "function")),
    "datetime-class": ("{{ now().__class__ }}", UNSAFE.format("__class__", "datetime")),
    "format-string-field": ("{{ '{0.__class__}'.format(params.x) }}", UNSAFE.format("__class__", "str")),
    "attr-filter": ("{{ params.x | attr('__class__') }}", UNSAFE.format("__class__", "str")),
    "getattribute": ("{{ 'x'.__getattribute__('__class__') }}", UNSAFE.format("__getattribute__", "str")),
    "secrets-internals": ("{{ secrets._values }}", UNSAFE.format("_values", "SecretScope")),
    "secrets-class-globals": ("{{ secrets.__class__ }}", UNSAFE.format("__class__", "SecretScope")),
    "range-of-a-billion": (
        "{{ range(10**9) | list }}",
        "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).",
    ),
    "string-times-a-billion": (
        "{{ 'a' * 10**9 }}",
        "'*' would build a value of size 1,000,000,000 (the limit is 1 MiB)",
    ),
    "power-tower-with-parentheses": (
        "{{ 10**(10**10) }}",
        "'**' would build an integer of about 33,219,280,949 bits (the limit is 4,096 bits)",
    ),
    "format-width-of-a-billion": (
        "{{ '{:>1000000000}'.format(params.x) }}",
        "the format spec '>1000000000' is not allowed (nested, or over the size limit)",
    ),
    "macro-recursion": (
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "recursion is too deep (does a macro call itself?)",
    ),
    "nested-loops-of-ten-billion": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "rendering took longer than 1 s",
    ),
    "doubling-string": (
        "{% set n = namespace(s='ab') %}{% for i in range(64) %}{% set n.s = n.s ~ n.s %}{% endfor %}{{ n.s }}",
        "'~' would build a value of size 2,097,152 (the limit is 1 MiB)",
    ),
}


@pytest.mark.parametrize(("template", "detail"), list(REFUSED_AT_RUN_TIME.values()), ids=list(REFUSED_AT_RUN_TIME))
async def test_template_escape_fails_its_step_with_the_sandbox_refusal(
    tmp_path: Path, template: str, detail: str
) -> None:
    files = {"escape.toml": TWO_STEPS.format(template=json.dumps(template))}
    async with Harness(tmp_path, files, secrets={"API_KEY": GITHUB_SECRET}) as h:
        started = time.perf_counter()
        run = await h.run("escape")
        elapsed = time.perf_counter() - started
        steps = await h.steps(run.id)
    error = f"template error in {snippet(template)}: {detail}"
    assert run.status == "failed"
    assert run.error == f"step 'render' failed: {error}"
    assert (steps["render"].status, steps["render"].error, steps["render"].error_kind) == ("failed", error, "template")
    assert steps["render"].attempt == 1  # a template error is not worth a retry
    assert steps["render"].output is None
    assert steps["after"].status == "skipped"
    assert elapsed < 3
    assert_nothing_leaked(json.dumps([run.error, steps["render"].error]))


REFUSED_BY_CHECK = {
    "cycler-init-globals": ("{{ cycler.__init__.__globals__ }}", "W305 template refers to unknown name 'cycler'"),
    "lipsum-globals": ("{{ lipsum.__globals__ }}", "W305 template refers to unknown name 'lipsum'"),
    "flask-url-for-globals": ("{{ url_for.__globals__ }}", "W305 template refers to unknown name 'url_for'"),
    "template-reference-context": (
        "{{ self._TemplateReference__context }}",
        "W305 template refers to unknown name 'self'",
    ),
    "flask-config": ("{{ config.items() }}", "W305 template refers to unknown name 'config'"),
    "params-class-globals": (
        "{{ params.__class__.__init__.__globals__['os'] }}",
        "W301 template refers to unknown param '__class__'; declare it under [params.__class__]",
    ),
    "include-a-file": (
        "{% include '/etc/passwd' %}",
        "W300 template does not parse: 'include' is not supported: a template cannot load other templates (line 1)",
    ),
    "import-a-module": (
        "{% import 'os' as os %}",
        "W300 template does not parse: 'import' is not supported: a template cannot load other templates (line 1)",
    ),
}
AVAILABLE = (
    "; available here: always, env, failure, headers, now, params, payload, query, run, secrets, steps, workflow"
)


@pytest.mark.parametrize(("template", "finding"), list(REFUSED_BY_CHECK.values()), ids=list(REFUSED_BY_CHECK))
def test_template_escape_is_a_finding_of_weir_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], template: str, finding: str
) -> None:
    (tmp_path / "escape.toml").write_text(TWO_STEPS.format(template=json.dumps(template)), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert weir(["check", "."]) == 1
    expected = f"escape.toml:9:6: error {finding}" + (AVAILABLE if "unknown name" in finding else "")
    assert capsys.readouterr().out.splitlines() == [expected]


async def test_template_power_tower_is_left_associative_and_small(tmp_path: Path) -> None:
    files = {"tower.toml": TWO_STEPS.format(template=json.dumps("{{ (10**10**10) | string | length }}"))}
    async with Harness(tmp_path, files) as h:
        run = await h.run("tower")
        steps = await h.steps(run.id)
    assert run.status == "succeeded"
    assert steps["render"].output == 101  # (10**10)**10 = 10**100, as Jinja groups '**'; not 10**(10**10)


async def test_template_big_integer_output_survives_the_store_exactly(tmp_path: Path) -> None:
    files = {"tower.toml": TWO_STEPS.format(template=json.dumps("{{ 10**10**10 }}"))}
    async with Harness(tmp_path, files) as h:
        run = await h.run("tower")
        stored = await h.steps(run.id)
    assert type(stored["render"].output) is int
    assert stored["render"].output == 10**100


async def test_template_text_built_by_a_template_is_not_rendered_again(tmp_path: Path) -> None:
    workflow = """
[[steps]]
id = "build"
uses = "transform"
with.output = "{{ '{' ~ '{ 7*7 }' ~ '}' }}"

[[steps]]
id = "use"
uses = "transform"
needs = ["build"]
with.output = { again = "{{ steps.build.output }}", inside = "<{{ steps.build.output }}>" }
"""
    async with Harness(tmp_path, {"twice.toml": workflow}) as h:
        run = await h.run("twice")
        steps = await h.steps(run.id)
    assert run.status == "succeeded"
    assert steps["build"].output == "{{ 7*7 }}"
    assert steps["use"].output == {"again": "{{ 7*7 }}", "inside": "<{{ 7*7 }}>"}


# -- untrusted text through a real webhook --------------------------------------------------------------

LITERAL_NAMES = {
    "arithmetic": "{{ 7*7 }}",
    "loop-bomb": "{% for i in range(10**9) %}x{% endfor %}",
    "secret-reference": "{{ secrets.ADV_GITHUB }}",
    "class-walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "raw-block-breakout": "{% endraw %}{{ 7*7 }}{% raw %}",
    "comment-and-statement": "{# x #}{% set a = 1 %}{{ a }}",
    "expression-injection-into-filter": "skip me' or 'a' == 'a",
    "many-openers": "{{" * 5000,
}


@pytest.mark.parametrize("name", list(LITERAL_NAMES.values()), ids=list(LITERAL_NAMES))
def test_webhook_payload_that_looks_like_a_template_arrives_literally(
    hooks: httpx.Client, api: httpx.Client, name: str
) -> None:
    answer = hooks.post("/hooks/literal", json={"name": name, name: "as a key"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["status"] == "succeeded"
    assert result["outputs"] == {
        "greeting": f"Hello {name}",
        "raw": name,
        "note": "|",
        "payload": {"name": name, name: "as a key"},
    }
    run = api.get(f"/api/runs/{result['run_id']}").json()
    assert run["params"] == {"name": name, "note": "|"}
    assert_nothing_leaked(answer.text + json.dumps(run))


def test_webhook_header_and_query_text_that_looks_like_a_template_arrive_literally(
    hooks: httpx.Client, api: httpx.Client
) -> None:
    answer = hooks.post(
        "/hooks/literal",
        json={"name": "ada"},
        headers={"X-Note": "{{ secrets.ADV_GITHUB }}"},
        params={"q": "{% for x in range(3) %}{{ x }}{% endfor %}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]["note"] == "{{ secrets.ADV_GITHUB }}|{% for x in range(3) %}{{ x }}{% endfor %}"
    assert_nothing_leaked(answer.text)


FORMAT_ATTACKS = {
    "format-field-walks-to-class": (
        {"fmt": "{0.__class__.__mro__}"},
        "template error in '{{ params.fmt.format(params.times) }}': " + UNSAFE.format("__class__", "int"),
    ),
    "format-width-of-a-billion": (
        {"fmt": "{:>999999999}"},
        "template error in '{{ params.fmt.format(params.times) }}': "
        "the format spec '>999999999' is not allowed (nested, or over the size limit)",
    ),
    "repeat-count-of-a-billion": (
        {"times": 10**9},
        "template error in '{{ 'ab' * params.times }}': '*' would build a value of size 2,000,000,000 "
        "(the limit is 1 MiB)",
    ),
}


@pytest.mark.parametrize(("payload", "error"), list(FORMAT_ATTACKS.values()), ids=list(FORMAT_ATTACKS))
def test_webhook_payload_cannot_steer_a_repository_template_out_of_the_sandbox(
    hooks: httpx.Client, api: httpx.Client, payload: dict[str, object], error: str
) -> None:
    before = run_count(api, "formatted")
    started = time.perf_counter()
    answer = hooks.post("/hooks/formatted", json=payload)
    assert time.perf_counter() - started < 5
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["status"], result["outputs"]) == ("failed", None)
    run = api.get(f"/api/runs/{result['run_id']}").json()
    assert run["error"] == f"step 'shape' failed: {error}"
    assert run_count(api, "formatted") == before + 1
    healthy = hooks.post("/hooks/formatted", json={"fmt": "<{}>", "times": 2}).json()
    assert healthy["outputs"] == {"formatted": "<2>", "length": 4}
