"""Payload data through fixed templates: rendered as data, never evaluated.

The templates are the workflow author's; the values are what a webhook sender controls. Random
payloads (strings with ``{{``, ``{%``, unicode, very deep nesting) come out exactly as they went
in: a payload string ``{{ 7*7 }}`` renders as ``{{ 7*7 }}``, never ``49``, and a template that
reads a payload never raises anything but ``TemplateError``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings, strategies as st

from tests.fuzz.strategies import TRICKY_TEXT, examples, outcome
from weir.errors import TemplateError
from weir.workflows.templating import Templates, base_scope

INJECTIONS = [
    "{{ 7*7 }}",
    "{{7*7}}",
    "{% for i in range(3) %}x{% endfor %}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{{ secrets.TOKEN }}",
    "{{ params }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ 'a' * 10**9 }}",
    "{% raw %}{{ x }}{% endraw %}",
    "{# comment #}",
    "{%- if true -%}yes{%- endif -%}",
    "${7*7}",
    "#{7*7}",
    "<%= 7*7 %>",
    "{{",
    "{%",
    "}}",
    "%}",
]
SECRET = "s3cr3t-token-value"

strings = st.one_of(
    st.sampled_from(INJECTIONS + TRICKY_TEXT),
    st.text(),
    st.lists(st.sampled_from(INJECTIONS) | st.text(max_size=5), max_size=5).map("".join),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    strings,
)
payloads = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(strings, children, max_size=4),
    max_leaves=15,
)


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for index in range(depth):
        value = [value] if index % 2 else {"a": value}
    return value


deep_payloads = st.builds(nested, st.integers(50, 20_000), strings)
TEMPLATES = Templates()


def scope(value: Any, key: Any = "value") -> dict[str, Any]:
    return {
        **base_scope(failed=False),
        "payload": {"value": value},
        "key": key,
        "params": {"name": "ada"},
        "secrets": {"TOKEN": SECRET},
    }


@settings(max_examples=examples(200))
@given(payloads)
@example("{{ 7*7 }}")
@example({"{{ 7*7 }}": "{% for i in range(3) %}x{% endfor %}"})
def test_a_whole_expression_gives_the_payload_value_itself(value: Any) -> None:
    assert TEMPLATES.render_string("{{ payload.value }}", scope(value)) == value
    assert TEMPLATES.render_string("{{ payload['value'] }}", scope(value)) == value
    assert TEMPLATES.render_value({"a": ["{{ payload.value }}"]}, scope(value)) == {"a": [value]}


@settings(max_examples=examples(200))
@given(strings)
@example("{{ 7*7 }}")
@example("{{ secrets.TOKEN }}")
def test_payload_text_inside_a_template_stays_literal(value: str) -> None:
    rendered = TEMPLATES.render_string("<{{ payload.value }}> for {{ params.name }}", scope(value))
    assert rendered == f"<{value}> for ada"
    assert SECRET not in rendered
    assert TEMPLATES.render_text("{{ payload.value }}", scope(value)) == value
    assert TEMPLATES.evaluate("payload.value == expected", {**scope(value), "expected": value}) is True


@settings(max_examples=examples(200))
@given(payloads)
def test_payloads_round_trip_through_tojson(value: Any) -> None:
    rendered = TEMPLATES.render_string("{{ payload.value | tojson }}", scope(value))
    assert json.loads(rendered) == value
    assert SECRET not in rendered


@settings(max_examples=examples(150))
@given(st.dictionaries(strings, strings, max_size=6))
def test_loops_over_payload_keys_and_values_render_them_as_text(value: dict[str, str]) -> None:
    rendered = TEMPLATES.render_string(
        "{% for k, v in payload.value | dictsort %}{{ k }}={{ v }};{% endfor %}", scope(value)
    )
    assert rendered == "".join(f"{k}={v};" for k, v in sorted(value.items(), key=lambda kv: kv[0].lower()))


@settings(max_examples=examples(150))
@given(st.dictionaries(strings, payloads, min_size=1, max_size=4), st.data())
def test_payload_keys_are_looked_up_as_data(value: dict[str, Any], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(value)))
    assert TEMPLATES.render_string("{{ payload.value[key] }}", scope(value, key)) == value[key]


FIXED = [
    "{{ payload.value }}",
    "text {{ payload.value }} text",
    "{{ payload.value | tojson }}",
    "{{ payload.value | length }}",
    "{{ payload.value | string | upper }}",
    "{{ payload.value | default('none') }}",
    "{{ payload.value | first }}",
    "{{ payload.value | join(', ') }}",
    "{{ payload.value | b64encode }}",
    "{{ payload.value | fromjson }}",
    "{{ payload.value | duration }}",
    "{{ payload.value | isoformat }}",
    "{{ payload.value | replace('a', 'bb') }}",
    "{{ payload.value ~ '!' }}",
    "{{ payload.value * 3 }}",
    "{{ payload.value + payload.value }}",
    "{{ payload.value.items() | list }}",
    "{{ payload.value[0] }}",
    "{{ payload.value.a.b.c }}",
    "{{ payload.value[key] }}",
    "{% for item in payload.value %}{{ item }}{% endfor %}",
    "{% if payload.value %}yes{% else %}no{% endif %}",
    "{{ payload.value is string and payload.value.startswith('{{') }}",
    "{{ '%s' % payload.value }}",
    "{{ '{}'.format(payload.value) }}",
]


@settings(max_examples=examples(300))
@given(st.sampled_from(FIXED), payloads | deep_payloads, strings)
@example("text {{ payload.value }} text", nested(5000, "{{ 7*7 }}"), "a")
@example("{{ payload.value | tojson }}", nested(5000, "x"), "a")
@example("{{ payload.value | string | upper }}", nested(20_000, "x"), "a")
def test_rendering_payloads_raises_only_template_errors(template: str, value: Any, key: str) -> None:
    result = outcome(lambda: TEMPLATES.render_string(template, scope(value, key)), TemplateError)
    if isinstance(result, TemplateError):
        assert str(result).startswith("template error in "), str(result)
        assert SECRET not in str(result)
        return
    if isinstance(result, str):
        assert SECRET not in result
    if isinstance(value, str) and template == "text {{ payload.value }} text":
        assert result == f"text {value} text"


@settings(max_examples=examples(40))
@given(deep_payloads)
def test_deep_payloads_pass_through_untouched_or_fail_with_a_template_error(value: Any) -> None:
    assert TEMPLATES.render_string("{{ payload.value }}", scope(value)) is value
    for template in ("x{{ payload.value }}", "{{ payload.value | tojson }}", "{{ [payload.value] }}"):
        result = outcome(lambda: TEMPLATES.render_string(template, scope(value)), TemplateError)  # noqa: B023
        assert not isinstance(result, TemplateError) or str(result).startswith("template error in ")


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan, 10**5000], ids=["inf", "-inf", "nan", "10**5000"])
def test_payload_numbers_out_of_json_range_render_or_fail_cleanly(number: Any) -> None:
    for template in FIXED:
        result = outcome(lambda: TEMPLATES.render_string(template, scope(number)), TemplateError)  # noqa: B023
        assert not isinstance(result, TemplateError) or str(result).startswith("template error in ")
