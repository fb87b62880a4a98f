from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest

from weir.errors import SecretMissing, TemplateError
from weir.schemas.common import parse_duration
from weir.workflows.templating import (
    Ref,
    TemplateLimits,
    Templates,
    base_scope,
    default_templates,
    evaluate,
    expression_refs,
    is_template,
    render_string,
    render_value,
    template_refs,
)

FIXED = datetime(2025, 1, 15, 10, 20, 30, tzinfo=UTC)


@pytest.fixture
def templates() -> Templates:
    return Templates()


@pytest.fixture
def scope() -> dict[str, Any]:
    return {
        "params": {"error_rate": 60, "customer": "acme", "nothing": None},
        "steps": {"analyze": {"output": {"severity": "critical", "rows": [1, 2]}, "status": "succeeded"}},
        "payload": {"text": "{{ 7*7 }}", "block": "{% for i in range(3) %}x{% endfor %}", "metrics": {"rate": 3}},
        "item": {"name": "eu"},
        **base_scope(failed=False, clock=lambda: FIXED),
    }


def render_error(templates: Templates, text: str, scope: dict[str, Any] | None = None) -> str:
    with pytest.raises(TemplateError) as caught:
        templates.render_string(text, scope or {})
    return str(caught.value)


def snippet(text: str) -> str:
    """How an error names a template: on one line, cut at 80 characters."""
    flat = text.replace("\n", "\\n")
    return f"'{flat}'" if len(flat) <= 80 else f"'{flat[:77]}...'"


def refs(templates: Templates, text: str) -> list[tuple[str, tuple[str | int, ...], int, int]]:
    return [(ref.root, ref.path, ref.line, ref.column) for ref in templates.template_refs(text)]


# --- native values and text ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ payload.metrics }}", {"rate": 3}),
        ("{{ params.error_rate }}", 60),
        ("{{ steps.analyze.output.rows }}", [1, 2]),
        ("{{ params.nothing }}", None),
        ("{{ params.error_rate > 50 }}", True),
        ("{{ {'a': {'b': [1, 2]}} }}", {"a": {"b": [1, 2]}}),
        ("  {{ params.customer }}\n", "acme"),
        ("{{ range(3) }}", [0, 1, 2]),
        ("{{ [1, 2] | map('string') }}", ["1", "2"]),
    ],
)
def test_render_string_whole_expression_gives_native_value(
    templates: Templates, scope: dict[str, Any], text: str, expected: Any
) -> None:
    assert templates.render_string(text, scope) == expected
    assert type(templates.render_string(text, scope)) is type(expected)


def test_render_string_whole_expression_keeps_the_scope_object(templates: Templates, scope: dict[str, Any]) -> None:
    assert templates.render_string("{{ payload.metrics }}", scope) is scope["payload"]["metrics"]


@pytest.mark.parametrize(
    "path",
    [
        "payload.metrics.rate",
        "payload['metrics']['rate']",
        "payload.text",
        "payload.items",  # a dict's own attribute: Jinja gives the method, not a key
        "payload['items']",
        "steps.analyze.output.rows",
        "params.nothing",
        "range",  # a global, not in the scope
    ],
)
def test_a_plain_lookup_gives_what_the_full_template_gives(
    templates: Templates, scope: dict[str, Any], path: str
) -> None:
    scope["payload"] = {**scope["payload"], "items": "a key named like a method"}
    direct = templates.render_string("{{ " + path + " }}", scope)
    rendered = templates.render_string("{{ " + path + " if true else none }}", scope)  # not a plain lookup
    assert direct == rendered
    assert type(direct) is type(rendered)


@pytest.mark.parametrize(
    "path", ["payload.missing", "payload.metrics.rate.deeper", "nowhere.at_all", "payload.__class__"]
)
def test_a_plain_lookup_of_something_missing_fails_like_the_template(
    templates: Templates, scope: dict[str, Any], path: str
) -> None:
    direct = render_error(templates, "{{ " + path + " }}", scope)
    assert path.split(".")[-1] in direct


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Error rate {{ params.error_rate }}/min", "Error rate 60/min"),
        ("{{ params.customer }}-{{ params.error_rate }}", "acme-60"),
        ("{% if params.error_rate > 50 %}page{% else %}log{% endif %}", "page"),
        ("{% for r in steps.analyze.output.rows %}[{{ r }}]{% endfor %}", "[1][2]"),
        ("{{ params.nothing }} and text", "None and text"),
        ("line\n{{ params.customer }}\n", "line\nacme\n"),
    ],
)
def test_render_string_mixed_text_renders_to_string(
    templates: Templates, scope: dict[str, Any], text: str, expected: str
) -> None:
    assert templates.render_string(text, scope) == expected


def test_render_string_without_template_syntax_is_returned_unchanged(templates: Templates) -> None:
    text = "plain {text} with } and { and {# no #}"
    assert templates.render_string(text, {}) is text


def test_render_text_renders_a_whole_expression_as_text(templates: Templates, scope: dict[str, Any]) -> None:
    assert templates.render_text("{{ params.error_rate }}", scope) == "60"
    assert templates.render_text("{{ payload.metrics }}", scope) == "{'rate': 3}"
    assert templates.render_text("no template", scope) == "no template"


def test_render_value_walks_dicts_and_lists_without_rendering_keys(templates: Templates, scope: dict[str, Any]) -> None:
    value = {
        "{{ key }}": "{{ params.error_rate }}",
        "nested": {"list": ["{{ item.name }}", 3, None, "rate {{ payload.metrics.rate }}"], "flag": True},
        "tuple": ("{{ params.customer }}",),
    }
    assert templates.render_value(value, scope) == {
        "{{ key }}": 60,
        "nested": {"list": ["eu", 3, None, "rate 3"], "flag": True},
        "tuple": ("acme",),
    }


def test_render_value_leaves_non_strings_alone(templates: Templates) -> None:
    assert templates.render_value(42, {}) == 42
    assert templates.render_value(None, {}) is None


# --- outside data is never a template ------------------------------------------------------


def test_render_string_payload_template_text_stays_literal(templates: Templates, scope: dict[str, Any]) -> None:
    assert templates.render_string("{{ payload.text }}", scope) == "{{ 7*7 }}"
    assert templates.render_string("got: {{ payload.text }}", scope) == "got: {{ 7*7 }}"
    assert templates.render_string("{{ payload.block }}!", scope) == "{% for i in range(3) %}x{% endfor %}!"


def test_render_value_renders_nothing_twice(templates: Templates, scope: dict[str, Any]) -> None:
    inner = {"text": "{{ payload.text }}", "list": ["{{ payload.text }}"], "data": "{{ payload }}"}
    once = templates.render_value(inner, scope)
    assert once["text"] == "{{ 7*7 }}"
    assert once["list"] == ["{{ 7*7 }}"]
    assert once["data"]["text"] == "{{ 7*7 }}"


# --- expressions ---------------------------------------------------------------------------


def test_evaluate_bare_expression(templates: Templates, scope: dict[str, Any]) -> None:
    assert templates.evaluate("steps.analyze.output.severity == 'critical'", scope) is True
    assert templates.evaluate("params.error_rate > 100", scope) is False
    assert templates.evaluate("steps.analyze.output.rows | length", scope) == 2
    assert templates.evaluate(" 1 +\n 2 ", {}) == 3


def test_evaluate_accepts_a_wrapped_expression(templates: Templates, scope: dict[str, Any]) -> None:
    assert templates.evaluate("{{ params.customer == 'acme' }}", scope) is True
    assert templates.evaluate("  {{ payload.metrics }}  ", scope) == {"rate": 3}


def test_evaluate_scope_functions(templates: Templates) -> None:
    assert templates.evaluate("always()", base_scope(failed=False)) is True
    assert templates.evaluate("failure()", base_scope(failed=False)) is False
    assert templates.evaluate("failure()", base_scope(failed=True)) is True
    assert templates.evaluate("now()", base_scope(failed=False, clock=lambda: FIXED)) == FIXED


def test_base_scope_now_is_aware_utc() -> None:
    before = datetime.now(UTC)
    now = base_scope(failed=False)["now"]()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)


def test_base_scope_has_exactly_the_three_functions() -> None:
    assert sorted(base_scope(failed=True)) == ["always", "failure", "now"]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("a b", "expression does not parse: unexpected 'b' after the expression (line 1)"),
        ("", "expression does not parse: the expression is empty (line 1)"),
        ("1 +", "expression does not parse: unexpected 'end of template' (line 1)"),
        ("a\n  +\n  )", "expression does not parse: unexpected ')' (line 3)"),
        ("{{ a }} and {{ b }}", "expression does not parse: unexpected '}}' after the expression (line 1)"),
        ("x | nope", "expression does not parse: No filter named 'nope'. (line 1)"),
    ],
)
def test_check_expression_reports_syntax_errors(templates: Templates, expr: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        templates.check_expression(expr)
    assert str(caught.value) == message
    with pytest.raises(TemplateError) as caught:
        templates.evaluate(expr, {"a": 1, "b": 2, "x": 3})
    assert str(caught.value) == message


def test_is_template() -> None:
    assert is_template("{{ x }}")
    assert is_template("a {% if x %}b{% endif %}")
    assert not is_template("{ x } and {# comment #} and %}")


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ {'b': 1, 'a': [1, 'é', none]} | tojson }}", '{"b":1,"a":[1,"é",null]}'),
        ("{{ {'a': 1} | tojson(indent=2) }}", '{\n  "a": 1\n}'),
        ("{{ '<&>' | tojson }}", '"<&>"'),
        ("{{ now() | tojson }}", '"2025-01-15T10:20:30+00:00"'),
        ("{{ '{\"a\": [1, true]}' | fromjson }}", {"a": [1, True]}),
        ("{{ 'héllo' | b64encode }}", "aMOpbGxv"),
        ("{{ 'aMOpbGxv' | b64decode }}", "héllo"),
        ("{{ now() | isoformat }}", "2025-01-15T10:20:30+00:00"),
        ("{{ '2025-01-15T10:20:30Z' | isoformat }}", "2025-01-15T10:20:30+00:00"),
        ("{{ '2025-01-15 10:20' | isoformat }}", "2025-01-15T10:20:00+00:00"),
        ("{{ now() | strftime('%d.%m.%Y %H:%M') }}", "15.01.2025 10:20"),
        ("{{ '2025-01-15T10:20:30+02:00' | strftime('%H:%M %z') }}", "10:20 +0200"),
        ("{{ '1h30m' | duration }}", 5400.0),
        ("{{ '250ms' | duration }}", 0.25),
        ("{{ 90 | duration }}", 90.0),
        ("{{ '2025-01-15T10:20:30Z' | todatetime }}", FIXED),
        ("{{ '2025-01-15T10:20:30' | todatetime }}", FIXED),
        ("{{ ('2025-01-15T10:20:30Z' | todatetime) < now() }}", False),
        ("{{ 'abc' | upper }}", "ABC"),
        ("{{ params.missing | default('fallback') }}", "fallback"),
    ],
)
def test_filters(templates: Templates, text: str, expected: Any) -> None:
    scope = {"params": {}, **base_scope(failed=False, clock=lambda: FIXED)}
    assert templates.render_string(text, scope) == expected


def test_filter_duration_reports_the_duration_error(templates: Templates) -> None:
    with pytest.raises(ValueError, match="not a duration") as caught:
        parse_duration("abc")
    assert render_error(templates, "{{ 'abc' | duration }}") == (
        f"template error in '{{{{ 'abc' | duration }}}}': {caught.value}"
    )


def test_filter_b64encode_accepts_bytes(templates: Templates) -> None:
    assert templates.render_string("{{ data | b64encode }}", {"data": b"\x00\xff"}) == "AP8="


def test_filter_todatetime_keeps_the_offset(templates: Templates) -> None:
    value = templates.render_string("{{ '2025-01-15T12:20:30+02:00' | todatetime }}", {})
    assert value == FIXED
    assert value.utcoffset() == timedelta(hours=2)
    assert value.tzinfo == timezone(timedelta(hours=2))


def test_filter_tojson_gives_plain_str(templates: Templates) -> None:
    assert type(templates.render_string("{{ [1] | tojson }}", {})) is str
    assert type(templates.render_string("{{ 'a' | e }}", {})) is str


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{{ 'not json' | fromjson }}",
            "template error in '{{ 'not json' | fromjson }}': Expecting value: line 1 column 1 (char 0)",
        ),
        (
            "{{ 'tomorrow' | todatetime }}",
            "template error in '{{ 'tomorrow' | todatetime }}': Invalid isoformat string: 'tomorrow'",
        ),
        (
            "{{ [1] | isoformat }}",
            "template error in '{{ [1] | isoformat }}': expected a datetime or an ISO 8601 string, got list",
        ),
        ("{{ '%%%' | b64decode }}", "template error in '{{ '%%%' | b64decode }}': Only base64 data is allowed"),
    ],
)
def test_filters_report_bad_input(templates: Templates, text: str, message: str) -> None:
    assert render_error(templates, text) == message


# --- undefined names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{{ steps.analyze.output.severity_level }}",
            "template error in '{{ steps.analyze.output.severity_level }}': "
            "'dict object' has no attribute 'severity_level'",
        ),
        ("Hi {{ nobody }}", "template error in 'Hi {{ nobody }}': 'nobody' is undefined"),
        (
            "{{ [params.missing] }}",
            "template error in '{{ [params.missing] }}': 'dict object' has no attribute 'missing'",
        ),
        (
            "{{ {'a': params.missing} }}",
            "template error in '{{ {'a': params.missing} }}': 'dict object' has no attribute 'missing'",
        ),
        (
            "{{ steps.analyze.output.rows | map(attribute='x') | list }}",
            "template error in '{{ steps.analyze.output.rows | map(attribute='x') | list }}': "
            "'int object' has no attribute 'x'",
        ),
        ("{% if nobody %}x{% endif %}", "template error in '{% if nobody %}x{% endif %}': 'nobody' is undefined"),
    ],
)
def test_render_string_undefined_fails_with_its_name(
    templates: Templates, scope: dict[str, Any], text: str, message: str
) -> None:
    assert render_error(templates, text, scope) == message


def test_evaluate_undefined_fails(templates: Templates, scope: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as caught:
        templates.evaluate("steps.nope.output", scope)
    assert str(caught.value) == "template error in 'steps.nope.output': 'dict object' has no attribute 'nope'"


def test_render_string_undefined_can_be_tested(templates: Templates, scope: dict[str, Any]) -> None:
    assert templates.render_string("{{ params.missing is defined }}", scope) is False


def test_render_string_long_template_is_shortened_in_errors(templates: Templates) -> None:
    text = "x" * 100 + "{{ nobody }}"
    assert render_error(templates, text) == f"template error in '{'x' * 77}...': 'nobody' is undefined"


def test_render_string_weir_errors_from_the_scope_pass_through(templates: Templates) -> None:
    class Secrets(dict[str, str]):
        def __missing__(self, key: str) -> str:
            raise SecretMissing(key)

    with pytest.raises(SecretMissing) as caught:
        templates.render_string("Bearer {{ secrets.TOKEN }}", {"secrets": Secrets()})
    assert str(caught.value) == (
        "secret 'TOKEN' is not set: export WEIR_SECRET_TOKEN or add TOKEN to the --secrets-file"
    )


# --- syntax --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ 1 }", "template does not parse: unexpected '}' (line 1)"),
        ("a\n{{ x | }}", "template does not parse: expected token 'name', got 'end of print statement' (line 2)"),
        ("{% endfor %}", "template does not parse: Encountered unknown tag 'endfor'. (line 1)"),
        (
            "{% if x %}\nyes",
            "template does not parse: Unexpected end of template. Jinja was looking for the following tags: "
            "'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'. (line 1)",
        ),
        ("one\ntwo {{ x | nope }}", "template does not parse: No filter named 'nope'. (line 2)"),
        ("{{ x is nope }}", "template does not parse: No test named 'nope'. (line 1)"),
        (
            "{% include 'other.txt' %}",
            "template does not parse: 'include' is not supported: a template cannot load other templates (line 1)",
        ),
    ],
)
def test_check_syntax_reports_errors_with_line(templates: Templates, text: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        templates.check_syntax(text)
    assert str(caught.value) == message
    with pytest.raises(TemplateError) as caught:
        templates.render_string(text, {"x": 1})
    assert str(caught.value) == message


def test_check_syntax_accepts_good_templates_and_plain_text(templates: Templates) -> None:
    templates.check_syntax("{% for x in items %}{{ x | tojson }}{% endfor %}")
    templates.check_syntax("no template here {")
    templates.check_expression("payload.action == 'opened' and always()")


# --- references ----------------------------------------------------------------------------


def test_template_refs_attribute_and_subscript_chains(templates: Templates) -> None:
    assert refs(templates, "{{ steps.analyze.output['severity'] }}") == [
        ("steps", ("analyze", "output", "severity"), 1, 4)
    ]
    assert refs(templates, "Error rate {{ params.error_rate }}/min") == [("params", ("error_rate",), 1, 15)]
    assert refs(templates, "{{ items[0].name }} {{ items[-1] }}") == [
        ("items", (0, "name"), 1, 4),
        ("items", (-1,), 1, 24),
    ]


def test_template_refs_dynamic_subscript_stops_the_path(templates: Templates) -> None:
    assert refs(templates, "{{ steps[params.id].output.x }}") == [
        ("steps", (), 1, 4),
        ("params", ("id",), 1, 10),
    ]
    assert refs(templates, "{{ payload.rows[index].name }}") == [("payload", ("rows",), 1, 4), ("index", (), 1, 17)]


def test_template_refs_exclude_set_and_loop_names(templates: Templates) -> None:
    text = (
        "{% set limit = params.limit %}"
        "{% for row in payload.rows if row.n > limit %}{{ row.name }} {{ loop.index }}{% endfor %}"
        "{{ limit }}{{ row }}"
    )
    assert refs(templates, text) == [
        ("params", ("limit",), 1, 16),
        ("payload", ("rows",), 1, 45),
        ("row", (), 1, 134),
    ]


def test_template_refs_exclude_macro_call_and_with_names(templates: Templates) -> None:
    text = (
        "{% macro line(label, value=params.default) %}{{ label }}={{ value }}{{ caller() }}{% endmacro %}"
        "{% call(extra) line('a', 1) %}{{ extra }}{{ secrets.TOKEN }}{% endcall %}"
        "{% with z = item.zone %}{{ z }}{% endwith %}"
    )
    assert refs(templates, text) == [
        ("params", ("default",), 1, 28),
        ("secrets", ("TOKEN",), 1, 141),
        ("item", ("zone",), 1, 182),
    ]


def test_template_refs_report_called_functions(templates: Templates) -> None:
    assert refs(templates, "{{ now() | isoformat }} {% if always() or failure() %}x{% endif %}") == [
        ("now", (), 1, 4),
        ("always", (), 1, 31),
        ("failure", (), 1, 43),
    ]
    assert refs(templates, "{{ run.resume_url('approve') }}") == [("run", ("resume_url",), 1, 4)]


def test_template_refs_skip_jinja_globals(templates: Templates) -> None:
    assert refs(templates, "{{ range(3) | list }} {{ dict(a=1) }} {% set ns = namespace(n=0) %}{{ ns.n }}") == []


def test_template_refs_lines_in_multiline_template(templates: Templates) -> None:
    text = (
        "Report\n{{ params.a }} and {{ params.b }}\n{% if steps.s.status == 'failed' %}\n  {{ run.error }}\n{% endif %}"
    )
    assert refs(templates, text) == [
        ("params", ("a",), 2, 4),
        ("params", ("b",), 2, 23),
        ("steps", ("s", "status"), 3, 7),
        ("run", ("error",), 4, 6),
    ]


def test_template_refs_conditional_expression_in_source_order(templates: Templates) -> None:
    text = "{{ 'critical' if params.rate > 50 else 'warning' if params.rate > 20 else 'info' }}"
    assert refs(templates, text) == [("params", ("rate",), 1, 18), ("params", ("rate",), 1, 53)]


def test_template_refs_ignore_names_in_strings_and_text(templates: Templates) -> None:
    assert refs(templates, "params: {{ 'params' ~ params.x }}") == [("params", ("x",), 1, 23)]


def test_template_refs_namespace_assignment_to_unknown_name(templates: Templates) -> None:
    assert refs(templates, "{% set ns = namespace(a=1) %}{% set ns.a = 2 %}{% set other.b = 1 %}") == [
        ("other", ("b",), 1, 55)
    ]


def test_template_refs_of_plain_text_is_empty(templates: Templates) -> None:
    assert templates.template_refs("no template") == []


def test_template_refs_returns_a_fresh_list(templates: Templates) -> None:
    first = templates.template_refs("{{ params.a }}")
    first.clear()
    assert templates.template_refs("{{ params.a }}") == [Ref("params", ("a",), 1, 4)]


def test_expression_refs(templates: Templates) -> None:
    assert templates.expression_refs("steps.analyze.output.severity == 'critical'") == [
        Ref("steps", ("analyze", "output", "severity"), 1, 1)
    ]
    assert templates.expression_refs("{{ payload.action == 'opened' }}") == [Ref("payload", ("action",), 1, 4)]
    assert templates.expression_refs("always() or failure()") == [Ref("always", (), 1, 1), Ref("failure", (), 1, 13)]
    assert templates.expression_refs(" payload.a\n  and headers['x-hub-signature'] ") == [
        Ref("payload", ("a",), 1, 2),
        Ref("headers", ("x-hub-signature",), 2, 7),
    ]


def test_ref_is_frozen() -> None:
    ref = Ref("params", ("x",), 1, 4)
    with pytest.raises(AttributeError):
        ref.root = "steps"  # type: ignore[misc]


# --- sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object is unsafe."),
        ("{{ x.__globals__ }}", "'x' is undefined"),
        ("{{ now.__globals__ }}", "access to attribute '__globals__' of 'function' object is unsafe."),
        ("{{ cycler.__init__.__globals__ }}", "'cycler' is undefined"),
        ("{{ joiner() }}", "'joiner' is undefined"),
        ("{{ '{0.__class__}'.format(1) }}", "access to attribute '__class__' of 'int' object is unsafe."),
        (
            "{{ self._TemplateReference__context }}",
            "access to attribute '_TemplateReference__context' of 'TemplateReference' object is unsafe.",
        ),
        ("{{ lipsum.__globals__ }}", "'lipsum' is undefined"),
        ("{{ request.application }}", "'request' is undefined"),
        ("{{ steps.rows.append(3) }}", "access to attribute 'append' of 'list' object is unsafe."),
        ("{{ payload.update({'a': 1}) }}", "access to attribute 'update' of 'dict' object is unsafe."),
    ],
)
def test_render_string_refuses_sandbox_escapes(templates: Templates, text: str, detail: str) -> None:
    scope = {"steps": {"rows": [1, 2]}, "payload": {}, **base_scope(failed=False)}
    assert render_error(templates, text, scope) == f"template error in {snippet(text)}: {detail}"
    assert scope["steps"] == {"rows": [1, 2]}
    assert scope["payload"] == {}


# --- bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("{{ 'a' * 10**9 }}", "'*' would build a value of size 1,000,000,000 (the limit is 1 MiB)"),
        ("{{ 10**9 * 'a' }}", "'*' would build a value of size 1,000,000,000 (the limit is 1 MiB)"),
        ("{{ [1, 2] * 10**8 }}", "'*' would build a value of size 600,000,000 (the limit is 1 MiB)"),
        (
            "{{ 10 ** (10 ** 10) }}",
            "'**' would build an integer of about 33,219,280,949 bits (the limit is 4,096 bits)",
        ),
        ("{{ 9 ** (9 ** 9) }}", "'**' would build an integer of about 1,228,093,895 bits (the limit is 4,096 bits)"),
        ("{{ (2 ** 4000) * (2 ** 4000) }}", "'*' would build an integer of about 8,002 bits (the limit is 4,096 bits)"),
        (
            "{{ range(10**9) | list }}",
            "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).",
        ),
        (
            "{% set n = namespace(s='a'*1000) %}{% for i in range(30) %}{% set n.s = n.s ~ n.s %}{% endfor %}",
            "'~' would build a value of size 2,048,000 (the limit is 1 MiB)",
        ),
        (
            "{% set n = namespace(s='a'*1000) %}{% for i in range(30) %}{% set n.s = n.s + n.s %}{% endfor %}",
            "'+' would build a value of size 2,048,000 (the limit is 1 MiB)",
        ),
        (
            "{{ '%0100000000d' % 1 }}",
            "a '%' format width or precision of 100000000 is over the limit of 1 MiB",
        ),
        ("{{ '%*d' % (5, 1) }}", "a '%' format width or precision of * is over the limit of 1 MiB"),
        ("{{ '%0100000000d' | format(1) }}", "a '%' format width or precision of 100000000 is over the limit of 1 MiB"),
        (
            "{{ '{:>100000000}'.format(1) }}",
            "the format spec '>100000000' is not allowed (nested, or over the size limit)",
        ),
        (
            "{{ ('{0}' * 1000).format('x' * 2000) }}",
            "format() would build a value of size 2,003,000 (the limit is 1 MiB)",
        ),
        ("{{ 'a'.ljust(10**9) }}", "ljust() would build a value of size 1,000,000,000 (the limit is 1 MiB)"),
        (
            "{{ 'a\tb'.expandtabs(10**9) }}",
            "expandtabs() would build a value of size 1,000,000,003 (the limit is 1 MiB)",
        ),
        (
            "{{ ('a' * 1000).replace('a', 'b' * 2000) }}",
            "replace() would build a value of size 2,000,000 (the limit is 1 MiB)",
        ),
        ("{{ ('x' * 1000).join(['ab'] * 2000) }}", "join() would build a value of size 2,005,002 (the limit is 1 MiB)"),
        ("{{ 'x' | center(10**9) }}", "center would build a value of size 1,000,000,000 (the limit is 1 MiB)"),
        ("{{ 'a\nb' | indent(10**9) }}", "indent would build a value of size 2,000,000,003 (the limit is 1 MiB)"),
        ("{{ range(100000) | join('x' * 1000) }}", "join would build a value of size 100,680,278 (the limit is 1 MiB)"),
        ("{{ 'ab' | replace('', 'x' * 10**6) }}", "replace would build a value of size 3,000,002 (the limit is 1 MiB)"),
        ("{{ [1] | batch(10**9, 0) | list }}", "batch would build a value of size 1,000,000,000 (the limit is 1 MiB)"),
        ("{{ [1] | slice(10**9) | list }}", "slice would build a value of size 1,000,000,000 (the limit is 1 MiB)"),
        (
            "{{ 'a b' | wordwrap(1, wrapstring='x' * 10**6) }}",
            "wordwrap would build a value of size 5,000,003 (the limit is 1 MiB)",
        ),
    ],
)
def test_render_string_refuses_huge_values_fast(templates: Templates, text: str, detail: str) -> None:
    started = time.perf_counter()
    assert render_error(templates, text) == f"template error in {snippet(text)}: {detail}"
    assert time.perf_counter() - started < 0.5


def test_render_string_power_is_left_associative_like_jinja(templates: Templates) -> None:
    assert templates.render_string("{{ 10**10**10 }}", {}) == 10**100
    assert templates.render_string("{{ 9**9**9 }}", {}) == 9**81


def test_render_string_allows_values_under_the_bounds(templates: Templates) -> None:
    assert templates.render_string("{{ ('-' * 40) | length }}", {}) == 40
    assert templates.render_string("{{ 2 ** 4000 > 0 }}", {}) is True
    assert templates.render_string("{{ '%05.1f' % 3.14159 }}", {}) == "003.1"
    assert templates.render_string("{{ '{:>5}'.format('ab') }}", {}) == "   ab"
    assert templates.render_string("{{ 'ab'.center(6, '*') }}", {}) == "**ab**"
    assert templates.render_string("{{ ['a', 'b'] | join(', ') }}", {}) == "a, b"
    assert templates.render_string("{{ [1, 2, 3] | batch(2, 0) | list }}", {}) == [[1, 2], [3, 0]]
    assert templates.render_string("{{ [1, 2, 3] | slice(2) | list }}", {}) == [[1, 2], [3]]


def test_render_string_output_is_bounded(templates: Templates) -> None:
    text = "{% for i in range(100000) %}{% for j in range(100) %}0123456789{% endfor %}{% endfor %}"
    started = time.perf_counter()
    assert render_error(templates, text) == f"template error in {snippet(text)}: template output exceeds 1 MiB"
    assert time.perf_counter() - started < 0.5


def test_render_string_output_bound_is_configurable() -> None:
    small = Templates(TemplateLimits(max_output=10))
    assert small.render_string("{{ 'x' * 4 }}-{{ 'y' * 5 }}", {}) == "xxxx-yyyyy"
    assert render_error(small, "{{ 'x' * 5 }}-{{ 'y' * 5 }}") == (
        "template error in '{{ 'x' * 5 }}-{{ 'y' * 5 }}': template output exceeds 10"
    )


def test_render_string_native_value_from_scope_is_not_bounded() -> None:
    small = Templates(TemplateLimits(max_output=10))
    assert small.render_string("{{ payload }}", {"payload": "z" * 100}) == "z" * 100


def test_render_string_time_is_bounded() -> None:
    quick = Templates(TemplateLimits(max_seconds=0.05))
    text = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.perf_counter()
    assert render_error(quick, text) == f"template error in {snippet(text)}: rendering took longer than 0.05 s"
    assert time.perf_counter() - started < 0.5


def test_render_string_time_bound_covers_loops_over_scope_data() -> None:
    quick = Templates(TemplateLimits(max_seconds=0.05))
    text = "{% for a in rows %}{% for b in rows %}{% endfor %}{% endfor %}"
    started = time.perf_counter()
    assert render_error(quick, text, {"rows": list(range(100000))}) == (
        f"template error in {snippet(text)}: rendering took longer than 0.05 s"
    )
    assert time.perf_counter() - started < 0.5


def test_render_string_recursion_ends(templates: Templates) -> None:
    text = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"
    started = time.perf_counter()
    assert render_error(templates, text) == (
        f"template error in {snippet(text)}: recursion is too deep (does a macro call itself?)"
    )
    assert time.perf_counter() - started < 0.5


def test_render_string_exponential_macro_ends() -> None:
    quick = Templates(TemplateLimits(max_seconds=0.05))
    text = "{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}"
    started = time.perf_counter()
    assert render_error(quick, text) == f"template error in {snippet(text)}: rendering took longer than 0.05 s"
    assert time.perf_counter() - started < 0.5


def test_render_string_bounds_reset_between_renders() -> None:
    quick = Templates(TemplateLimits(max_seconds=0.05))
    for _ in range(3):
        assert quick.render_string("{% for i in range(1000) %}{% endfor %}ok", {}) == "ok"
        time.sleep(0.02)


def test_render_string_python_errors_become_template_errors(templates: Templates) -> None:
    assert render_error(templates, "{{ 1 / 0 }}") == "template error in '{{ 1 / 0 }}': division by zero"
    assert render_error(templates, "{{ 'a' + 1 }}") == (
        "template error in '{{ 'a' + 1 }}': can only concatenate str (not \"int\") to str"
    )


# --- caching and the module-level helpers ----------------------------------------------------


def test_templates_parse_once_per_source(templates: Templates, scope: dict[str, Any]) -> None:
    text = "{{ params.customer }}!"
    calls: list[str] = []
    parse = templates._env.parse

    def counting(source: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(source)
        return parse(source, *args, **kwargs)

    templates._env.parse = counting  # type: ignore[method-assign]
    for _ in range(3):
        assert templates.render_string(text, scope) == "acme!"
        templates.template_refs(text)
        templates.check_syntax(text)
    assert calls == [text, text]  # once to compile, once to analyze


def test_default_templates_is_shared() -> None:
    assert default_templates() is default_templates()


def test_module_helpers_use_default_templates(scope: dict[str, Any]) -> None:
    assert render_string("{{ params.error_rate }}", scope) == 60
    assert render_value(["{{ item.name }}"], scope) == ["eu"]
    assert evaluate("failure()", scope) is False
    assert template_refs("{{ item.name }}") == [Ref("item", ("name",), 1, 4)]
    assert expression_refs("item.name") == [Ref("item", ("name",), 1, 1)]


def test_render_string_scope_may_be_any_mapping(templates: Templates) -> None:
    assert templates.render_string("{{ params.a }}", MappingProxyType({"params": {"a": 1}})) == 1
