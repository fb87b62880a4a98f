"""The "Run" form of a workflow: one field per ``[params]`` entry, and the form's strings back to typed values.

string, number and integer are text inputs (numbers get a numeric keyboard on phones), boolean a
checkbox, object and array a textarea holding JSON, and a param with ``enum`` a select whose option
values are the JSON of each allowed value. A blank field means "not given", so the default applies
(or the run is refused when the param is required). The browser does no validation of its own:
every problem comes from the server and is shown next to its field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from weir.schemas.workflow import Param

PREFIX = "param."
MAX_FORM_BYTES = 1024 * 1024


@dataclass
class ParamField:
    """What the template needs to draw one param's input."""

    name: str
    type: str
    widget: str
    """text | checkbox | json | select"""
    required: bool
    description: str | None
    default: Any
    value: str = ""
    checked: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)
    """(value, label) pairs of a select; the value is the JSON of the allowed value."""
    error: str | None = None

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "param-" + self.name

    @property
    def inputmode(self) -> str | None:
        return {"integer": "numeric", "number": "decimal"}.get(self.type)


def param_fields(
    params: Mapping[str, Param], submitted: Mapping[str, str] | None = None, errors: Mapping[str, str] | None = None
) -> list[ParamField]:
    """The fields of the form: defaults prefilled, or what was submitted when the form comes back with errors."""
    fields = []
    for name, param in params.items():
        widget = "select" if param.enum is not None else _WIDGETS[param.type]
        entry = ParamField(name, param.type, widget, param.required, param.description, param.default)
        raw = None if submitted is None else submitted.get(PREFIX + name)
        if widget == "checkbox":
            entry.checked = bool(param.default) if submitted is None else raw is not None
        elif raw is not None:
            entry.value = raw
        elif param.default is not None:
            entry.value = _show(param.default, widget)
        if widget == "select":
            blank = "— choose —" if param.required and param.default is None else "— none —"
            entry.options = [("", blank)] if param.default is None else []
            entry.options += [(json.dumps(v), v if isinstance(v, str) else json.dumps(v)) for v in param.enum or []]
        entry.error = (errors or {}).get(name)
        fields.append(entry)
    return fields


def parse_params(params: Mapping[str, Param], form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The typed params of a submitted form and the fields that could not be read (name -> problem)."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, param in params.items():
        raw = form.get(PREFIX + name)
        if param.type == "boolean" and param.enum is None:
            values[name] = raw is not None
            continue
        if raw is None or not raw.strip():
            continue  # not given: the default applies, or the engine says it is required
        try:
            values[name] = _parse(param, raw)
        except ValueError as exc:
            errors[name] = str(exc)
    return values, errors


def parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; a repeated key keeps its last value."""
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


_WIDGETS = {
    "string": "text",
    "number": "text",
    "integer": "text",
    "boolean": "checkbox",
    "object": "json",
    "array": "json",
}


def _show(value: Any, widget: str) -> str:
    if widget == "select":
        return json.dumps(value)
    if widget == "json":
        return json.dumps(value, indent=2, ensure_ascii=False)
    return value if isinstance(value, str) else json.dumps(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value; write null or a number")


def _json(text: str) -> Any:
    """Strict JSON: no NaN/Infinity, no unpaired surrogate escape, no nesting deep enough to overflow the parser.

    Any of those would be stored with the run and then break every page and API answer that shows it.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except UnicodeEncodeError:
        raise ValueError(
            "a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not Unicode"
        ) from None
    return value


def _parse(param: Param, raw: str) -> Any:
    if param.enum is not None:
        try:
            return _json(raw)
        except ValueError:
            raise ValueError(f"must be one of {param.enum}") from None
    text = raw.strip()
    if param.type == "string":
        return raw
    if param.type == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"must be a whole number, like 3 (got {text!r})") from None
    if param.type == "number":
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"must be a number, like 2.5 (got {text!r})")
        return number
    try:
        value = _json(text)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON: {exc}") from None
    expected = dict if param.type == "object" else list
    if not isinstance(value, expected):
        shape = 'an object, like {"key": 1}' if param.type == "object" else "an array, like [1, 2]"
        raise ValueError(f"must be {shape}")
    return value
