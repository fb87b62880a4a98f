"""Where keys sit in TOML and JSON text: the positions every finding points at."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from weir.connectors.registry import ConnectorRegistry
from weir.workflows.locator import Duplicate, duplicate_keys, key_positions, locate
from weir.workflows.source import read_directory
from weir.workflows.validation import validate_tree

TOML = """\
# alert routing, with comments that hold = and [brackets]
name = "alert-routing"  # name = "other"
description = \"\"\"
Route alerts.
[not.a.table]
key = "not a key"
\"\"\"
tags = [
  "ops",  # first = 1
  "pager[duty]",
]
"quoted.key" = 'C:\\temp\\'
site."eu-west".region = "eu"
defaults = { timeout = "30s", retry = { attempts = 3, on = ["transient", "timeout"] } }

[params.error_rate]
type = "number"

[[steps]]
id = "analyze"
uses = "transform"

[[steps]]
id = "page"
uses = "pagerduty.event"
  [steps.retry]
  attempts = 3

[[steps]]
id = "notify"
uses = 'slack.post_message'
with = { text = "a = b [c] \\" } ]", channel = "#x" }
"""

JSON = """\
{
  "name": "alert-routing",
  "description": "say \\"hi\\", then {\\"key\\": [1, 2]}",
  "steps": [
    {"id": "analyze", "uses": "transform", "with": {"output": {"severity": "info"}}},
    {
      "id": "notify",
      "uses": "slack.post_message",
      "with": {"channel": "#alerts", "blocks": [{"type": "section"}, {"type": "divider"}]}
    }
  ],
  "tags": [
    "ops",
    ["nested", "list"]
  ]
}
"""


def test_locator_samples_are_valid_documents() -> None:
    assert tomllib.loads(TOML)["steps"][2]["with"]["text"] == 'a = b [c] " } ]'
    assert json.loads(JSON)["description"] == 'say "hi", then {"key": [1, 2]}'


@pytest.mark.parametrize(
    ("path", "position"),
    [
        (("name",), (2, 1)),
        (("description",), (3, 1)),  # the '=' and '[' inside the multi-line string are text
        (("tags",), (8, 1)),
        (("tags", 0), (9, 3)),
        (("tags", 1), (10, 3)),  # the comment after "ops" holds '='
        (("quoted.key",), (12, 1)),  # a quoted key with a dot is one key
        (("site", "eu-west", "region"), (13, 16)),  # dotted keys, one of them quoted
        (("site", "eu-west"), (13, 6)),
        (("defaults", "retry", "attempts"), (14, 41)),  # inline tables
        (("defaults", "retry", "on", 1), (14, 74)),
        (("params", "error_rate"), (16, 1)),  # a [table] header
        (("params", "error_rate", "type"), (17, 1)),
        (("steps", 0), (19, 1)),  # arrays of tables
        (("steps", 0, "uses"), (21, 1)),
        (("steps", 1, "id"), (24, 1)),
        (("steps", 1, "retry"), (26, 3)),  # [steps.retry] belongs to the [[steps]] above it
        (("steps", 1, "retry", "attempts"), (27, 3)),
        (("steps", 2), (29, 1)),
        (("steps", 2, "uses"), (31, 1)),  # a literal string
        (("steps", 2, "with", "text"), (32, 10)),
        (("steps", 2, "with", "channel"), (32, 37)),  # after a string holding '=', '[', '}' and \\"
    ],
)
def test_locator_toml_positions(path: tuple[str | int, ...], position: tuple[int, int]) -> None:
    assert key_positions(TOML, "toml")[path] == position


@pytest.mark.parametrize(
    ("path", "position"),
    [
        (("name",), (2, 3)),
        (("description",), (3, 3)),
        (("steps",), (4, 3)),
        (("steps", 0), (5, 5)),
        (("steps", 0, "with", "output", "severity"), (5, 64)),
        (("steps", 1), (6, 5)),
        (("steps", 1, "uses"), (8, 7)),
        (("steps", 1, "with", "blocks"), (9, 38)),
        (("steps", 1, "with", "blocks", 1, "type"), (9, 71)),
        (("tags",), (12, 3)),  # after a string holding escaped quotes, '{' and '['
        (("tags", 1, 1), (14, 16)),  # nested arrays
    ],
)
def test_locator_json_positions(path: tuple[str | int, ...], position: tuple[int, int]) -> None:
    assert key_positions(JSON, "json")[path] == position


def test_locator_falls_back_to_the_nearest_ancestor() -> None:
    positions = key_positions(TOML, "toml")

    assert locate(positions, ("steps", 1, "retry", "delay")) == (26, 3)
    assert locate(positions, ("steps", 0, "with", "output")) == (19, 1)
    assert locate(positions, ("nowhere",)) == (1, 1)


def test_locator_counts_nested_arrays_of_tables_per_parent() -> None:
    text = "[[a]]\n[[a.b]]\nx = 1\n[[a.b]]\nx = 2\n[[a]]\n[[a.b]]\nx = 3\n"
    assert tomllib.loads(text)["a"][1]["b"][0]["x"] == 3

    positions = key_positions(text, "toml")

    assert positions[("a", 0, "b", 1, "x")] == (5, 1)
    assert positions[("a", 1, "b", 0, "x")] == (8, 1)


def test_locator_handles_crlf_line_endings() -> None:
    text = '[[steps]]\r\nid = "a"\r\nuses = "transform"\r\n'

    assert key_positions(text, "toml")[("steps", 0, "uses")] == (3, 1)
    assert key_positions('{\r\n  "steps": []\r\n}', "json")[("steps",)] == (2, 3)


@pytest.mark.parametrize(
    ("text", "duplicate"),
    [
        ('timeout = "10s"\ntimeout = "20s"\n', Duplicate(("timeout",), (2, 1), (1, 1))),
        (
            '[[steps]]\nid = "a"\n[steps.with]\nx = 1\n[steps.with]\n',
            Duplicate(("steps", 0, "with"), (5, 1), (3, 1), True),
        ),
        ("[[steps]]\nwith = { x = 1 }\n[steps.with]\n", Duplicate(("steps", 0, "with"), (3, 1), (2, 1), True)),
        ("with = { x = 1, x = 2 }\n", Duplicate(("with", "x"), (1, 17), (1, 10))),
        ("with = { x = 1 }\nwith.y = 2\n", Duplicate(("with",), (2, 1), (1, 1))),
        ("[[steps]]\n[steps]\n", Duplicate(("steps",), (2, 1), (1, 1), True)),
    ],
)
def test_locator_finds_toml_duplicates(text: str, duplicate: Duplicate) -> None:
    assert duplicate_keys(text, "toml") == [duplicate]


def test_locator_accepts_toml_tables_that_only_look_repeated() -> None:
    text = "[a.b]\nx = 1\n[a]\ny = 2\n[[steps]]\n[steps.retry]\n[[steps]]\n[steps.retry]\nsite.eu = 1\nsite.us = 2\n"
    tomllib.loads(text)

    assert duplicate_keys(text, "toml") == []


def test_locator_finds_json_duplicates_in_their_own_object() -> None:
    text = (
        '{"steps": [\n  {"id": "a", "uses": "log"},\n  {"id": "b", "uses": "log"},\n'
        '  {"id": "c", "uses": "log", "id": "d"}\n]}'
    )

    assert duplicate_keys(text, "json") == [Duplicate(("steps", 2, "id"), (4, 30), (4, 4))]


def test_locator_finding_in_third_step_points_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "alert-routing.toml").write_text(
        "\n".join(
            [
                'description = "Route alerts"',
                "",
                "[[steps]]",
                'id = "analyze"',
                'uses = "transform"',
                'with.output = { severity = "warning" }',
                "",
                "[[steps]]",
                'id = "record"',
                'uses = "log"',
                'with = { message = "analyzed" }',
                "",
                "[[steps]]",
                'id = "notify"',
                'uses = "log"',
                'needs = ["record"]',
                'with = { message = "{{ steps.analyze.output.severity }}", levl = "warning" }',
                "",
            ]
        ),
        encoding="utf-8",
    )

    findings = validate_tree(read_directory(tmp_path), ConnectorRegistry()).findings

    assert [str(f) for f in findings] == [
        "alert-routing.toml:17:10: warning W303 step 'notify' reads steps.analyze but does not need it, "
        "so it may run first; add 'analyze' to its needs",
        "alert-routing.toml:17:59: error W501 unknown key 'levl' in 'with' of step 'notify' (log) "
        "(did you mean 'level'?)",
    ]


@pytest.mark.parametrize(
    "text",
    ["a = 1\na = 2\n]\n", "a = 1\na = 2\n}}}\n", "a = 1\na = 2\n,\n", "[t]\nx = 1\nx = 2\n] = 3\n"],
    ids=["bracket", "braces", "comma", "after-a-table"],
)
def test_a_duplicate_followed_by_text_the_scanner_cannot_read_is_still_located(text: str) -> None:
    # The scanner used to stop advancing at such a character and grew its list of duplicates until memory ran out.
    with pytest.raises(tomllib.TOMLDecodeError, match="Cannot overwrite a value"):
        tomllib.loads(text)
    duplicates = duplicate_keys(text, "toml")
    assert duplicates
    assert duplicates[0].position[0] in (2, 3)


@pytest.mark.parametrize("text", ['{"a":1,"a":[1,}2]}', "[}", "{]", '{"a":]}', "[[[}}}"])
def test_the_json_scanner_steps_over_what_it_cannot_read(text: str) -> None:
    assert isinstance(duplicate_keys(text, "json"), list)  # returns (it used to loop forever on a '}' in an array)


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text(alphabet='ab=.[]{},"\n #1', max_size=60), fmt=st.sampled_from(["toml", "json"]))
def test_the_scanners_end_on_any_text(text: str, fmt: str) -> None:
    assert isinstance(duplicate_keys(text, fmt), list)
