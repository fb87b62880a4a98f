"""The params form: which input each param type gets, and how the form's strings become typed params."""

from __future__ import annotations

import pytest

from weir.schemas.workflow import Param
from weir.server.ui.forms import param_fields, parse_form, parse_params

PARAMS = {
    "name": Param(type="string", default="world"),
    "count": Param(type="integer", required=True),
    "ratio": Param(type="number"),
    "dry": Param(type="boolean", default=True),
    "labels": Param(type="array", default=["a"]),
    "extra": Param(type="object"),
    "level": Param(type="string", enum=["info", "warning"], default="info"),
    "size": Param(type="integer", enum=[1, 2]),
}


def test_param_fields_pick_an_input_per_type_and_prefill_defaults() -> None:
    fields = {f.name: f for f in param_fields(PARAMS)}
    assert {n: f.widget for n, f in fields.items()} == {
        "name": "text",
        "count": "text",
        "ratio": "text",
        "dry": "checkbox",
        "labels": "json",
        "extra": "json",
        "level": "select",
        "size": "select",
    }
    assert fields["name"].value == "world"
    assert fields["dry"].checked is True
    assert fields["labels"].value == '[\n  "a"\n]'
    assert fields["count"].inputmode == "numeric"
    assert fields["ratio"].inputmode == "decimal"
    assert fields["level"].options == [('"info"', "info"), ('"warning"', "warning")]
    assert fields["level"].value == '"info"'
    assert fields["size"].options == [("", "— none —"), ("1", "1"), ("2", "2")]


def test_param_fields_keep_what_was_submitted_and_show_errors() -> None:
    submitted = {"param.count": "many", "param.name": ""}
    fields = {f.name: f for f in param_fields(PARAMS, submitted, {"count": "must be a whole number"})}
    assert fields["count"].value == "many"
    assert fields["count"].error == "must be a whole number"
    assert fields["name"].value == ""
    assert fields["dry"].checked is False  # a submitted form without the box means unchecked


def test_parse_params_converts_each_type() -> None:
    form = {
        "param.name": " Ada ",
        "param.count": " 3 ",
        "param.ratio": "2.5",
        "param.labels": '["x", "y"]',
        "param.extra": '{"k": 1}',
        "param.level": '"warning"',
        "param.size": "2",
    }
    values, errors = parse_params(PARAMS, form)
    assert errors == {}
    assert values == {
        "name": " Ada ",
        "count": 3,
        "ratio": 2.5,
        "dry": False,
        "labels": ["x", "y"],
        "extra": {"k": 1},
        "level": "warning",
        "size": 2,
    }


def test_parse_params_leaves_blank_fields_out_so_defaults_apply() -> None:
    values, errors = parse_params(PARAMS, {"param.name": "", "param.count": " ", "param.dry": "true"})
    assert (values, errors) == ({"dry": True}, {})


@pytest.mark.parametrize(
    ("name", "raw", "problem"),
    [
        ("count", "1.5", "must be a whole number, like 3 (got '1.5')"),
        ("ratio", "nan", "must be a number, like 2.5 (got 'nan')"),
        ("ratio", "1e999", "must be a number, like 2.5 (got '1e999')"),
        ("labels", '{"a": 1}', "must be an array, like [1, 2]"),
        ("extra", "[1]", 'must be an object, like {"key": 1}'),
        (
            "extra",
            "{",
            "is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ("level", "info", "must be one of ['info', 'warning']"),
    ],
)
def test_parse_params_names_each_field_it_cannot_read(name: str, raw: str, problem: str) -> None:
    values, errors = parse_params(PARAMS, {f"param.{name}": raw})
    assert errors == {name: problem}
    assert name not in values


def test_parse_form_reads_urlencoded_bodies() -> None:
    assert parse_form(b"csrf=ab&param.name=%3Cb%3E+x&param.name=y&empty=") == {
        "csrf": "ab",
        "param.name": "y",
        "empty": "",
    }
