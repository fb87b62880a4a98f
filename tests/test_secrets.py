from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from weir.errors import ConfigError, SecretMissing, TemplateError
from weir.secrets import Masker, SecretResolver
from weir.workflows.templating import Templates

SECRET = 's3cr3t/+&="x'  # has characters that URL, JSON and base64 encodings all change


def write(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


# --- SecretResolver --------------------------------------------------------------------------


def test_resolver_reads_weir_secret_environment_variables() -> None:
    resolver = SecretResolver({"WEIR_SECRET_TOKEN": "tok-1", "WEIR_SECRET_": "nameless", "HOME": "/root"})

    assert resolver.get("TOKEN") == "tok-1"
    assert resolver.values() == {"tok-1"}
    assert "TOKEN" in resolver
    assert "HOME" not in resolver


def test_resolver_environment_wins_over_file(tmp_path: Path) -> None:
    file = write(tmp_path, "secrets.env", "TOKEN=from-file\nOTHER=only-in-file\n")

    resolver = SecretResolver({"WEIR_SECRET_TOKEN": "from-env"}, file)

    assert resolver.get("TOKEN") == "from-env"
    assert resolver.get("OTHER") == "only-in-file"
    assert resolver.values() == {"from-env", "only-in-file"}


def test_resolver_reads_toml_file(tmp_path: Path) -> None:
    file = write(tmp_path, "secrets.toml", 'SLACK_BOT_TOKEN = "xoxb-1"\n"dashed-name" = \'raw\\value\'\n')

    resolver = SecretResolver({}, file)

    assert resolver.get("SLACK_BOT_TOKEN") == "xoxb-1"
    assert resolver.get("dashed-name") == "raw\\value"


def test_resolver_rejects_non_string_toml_value(tmp_path: Path) -> None:
    file = write(tmp_path, "secrets.toml", 'TOKEN = "ok"\nPORT = 5432\n')

    with pytest.raises(ConfigError) as caught:
        SecretResolver({}, file)

    assert str(caught.value) == f"secret 'PORT' in {file} must be a string, not int: write PORT = \"...\""


def test_resolver_rejects_invalid_toml(tmp_path: Path) -> None:
    file = write(tmp_path, "secrets.toml", "TOKEN = \n")

    with pytest.raises(ConfigError) as caught:
        SecretResolver({}, file)

    assert str(caught.value) == f"the secrets file {file} is not valid TOML: Invalid value (at line 1, column 9)"


def test_resolver_parses_dotenv_file(tmp_path: Path) -> None:
    text = (
        "# a comment\n"
        "\n"
        "PLAIN=abc\n"
        "export EXPORTED = spaced  \n"
        "   INDENTED=1\n"
        'DOLLAR="\\$HOME"\n'
        'DOUBLE="line\\nnext\\t\\"q\\" \\\\ \\x # kept"  # comment\n'
        "SINGLE='no \\n escapes # here'\n"
        "INLINE=value # comment\n"
        "HASH=a#b\n"
        "EQUALS=a=b==\n"
        "EMPTY=\n"
        'EMPTY_QUOTED=""\n'
    )
    resolver = SecretResolver({}, write(tmp_path, ".env", text))

    values = {name: resolver.get(name) for name in ("PLAIN", "EXPORTED", "INDENTED", "DOUBLE", "SINGLE")}
    assert values == {
        "PLAIN": "abc",
        "EXPORTED": "spaced",
        "INDENTED": "1",
        "DOUBLE": 'line\nnext\t"q" \\ \\x # kept',
        "SINGLE": "no \\n escapes # here",
    }
    assert resolver.get("DOLLAR") == "$HOME"
    assert resolver.get("INLINE") == "value"
    assert resolver.get("HASH") == "a#b"
    assert resolver.get("EQUALS") == "a=b=="
    assert resolver.get("EMPTY") == ""
    assert resolver.get("EMPTY_QUOTED") == ""


def test_resolver_dotenv_line_without_equals_names_file_and_line(tmp_path: Path) -> None:
    file = write(tmp_path, "prod.env", "# header\nTOKEN=abc\nghp_pasted_alone\n")

    with pytest.raises(ConfigError) as caught:
        SecretResolver({}, file)

    assert str(caught.value) == (
        f"{file}:3: expected NAME=value but the line has no '='; fix it or comment it out with '#'"
    )
    assert "ghp_pasted_alone" not in str(caught.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('TOKEN="abc', "the quoted value of TOKEN is not closed, or has text after the quote"),
        ("TOKEN='abc' extra", "the quoted value of TOKEN is not closed, or has text after the quote"),
        ("MY TOKEN=abc", "'MY TOKEN' is not a secret name; use letters, digits and '_' before the '='"),
        ("=abc", "'' is not a secret name; use letters, digits and '_' before the '='"),
    ],
    ids=["unclosed", "after-quote", "space-in-name", "no-name"],
)
def test_resolver_dotenv_bad_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    file = write(tmp_path, ".env", f"OK=1\n{line}\n")

    with pytest.raises(ConfigError) as caught:
        SecretResolver({}, file)

    assert str(caught.value) == f"{file}:2: {message}"


def test_resolver_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        SecretResolver({}, tmp_path / "nope.env")

    assert str(caught.value) == f"the secrets file {tmp_path / 'nope.env'} does not exist; check --secrets-file"


def test_resolver_unreadable_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        SecretResolver({}, tmp_path)

    assert str(caught.value) == f"cannot read the secrets file {tmp_path}: Is a directory"


def test_resolver_warns_when_the_file_is_open_to_group_or_others(tmp_path: Path) -> None:
    loose = write(tmp_path, "loose.env", "TOKEN=abc\n", mode=0o644)
    tight = write(tmp_path, "tight.env", "TOKEN=abc\n", mode=0o600)

    assert SecretResolver({}, loose).file_warnings() == [
        f"the secrets file {loose} is open to group or others (mode 0644); run: chmod 600 {loose}"
    ]
    assert SecretResolver({}, tight).file_warnings() == []
    assert SecretResolver({}).file_warnings() == []


def test_resolver_get_raises_secret_missing() -> None:
    resolver = SecretResolver({})

    with pytest.raises(SecretMissing) as caught:
        resolver.get("SLACK_BOT_TOKEN", "connection 'slack'")

    assert caught.value.name == "SLACK_BOT_TOKEN"
    assert str(caught.value) == (
        "secret 'SLACK_BOT_TOKEN' (used by connection 'slack') is not set: "
        "export WEIR_SECRET_SLACK_BOT_TOKEN or add SLACK_BOT_TOKEN to the --secrets-file"
    )


# --- the `secrets` template variable -----------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ secrets.TOKEN }}", "tok-123"),
        ("Bearer {{ secrets.TOKEN }}", "Bearer tok-123"),
        ("{{ secrets['TOKEN'] }}", "tok-123"),
        ("{{ secrets|attr('TOKEN') }}", "tok-123"),
        ("{{ 'TOKEN' in secrets }}", True),
        ("{{ 'OTHER' in secrets }}", False),
        ("all: {{ secrets }}", "all: <secrets>"),
    ],
)
def test_scope_renders_through_templates(template: str, expected: Any) -> None:
    resolver = SecretResolver({"WEIR_SECRET_TOKEN": "tok-123"})

    assert Templates().render_value(template, {"secrets": resolver.scope()}) == expected


def test_scope_renders_secrets_inside_nested_values() -> None:
    scope = {"secrets": SecretResolver({"WEIR_SECRET_TOKEN": "tok-123"}).scope()}

    rendered = Templates().render_value({"headers": {"Authorization": "Bearer {{ secrets.TOKEN }}"}}, scope)

    assert rendered == {"headers": {"Authorization": "Bearer tok-123"}}


@pytest.mark.parametrize("template", ["{{ secrets.NOPE }}", "Bearer {{ secrets['NOPE'] }}"])
def test_scope_unknown_secret_raises_secret_missing(template: str) -> None:
    scope = {"secrets": SecretResolver({"WEIR_SECRET_TOKEN": "tok-123"}).scope("step 'notify'")}

    with pytest.raises(SecretMissing) as caught:
        Templates().render_value(template, scope)

    assert str(caught.value) == (
        "secret 'NOPE' (used by step 'notify') is not set: export WEIR_SECRET_NOPE or add NOPE to the --secrets-file"
    )


def test_scope_whole_expression_is_the_scope_not_its_values() -> None:
    scope = SecretResolver({"WEIR_SECRET_TOKEN": "tok-123"}).scope()

    rendered = Templates().render_value("{{ secrets }}", {"secrets": scope})

    assert rendered is scope
    assert repr(rendered) == str(rendered) == "<secrets>"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ secrets|list }}", "the secrets cannot be listed; name the one you need, as secrets.NAME"),
        (
            "{% for name in secrets %}{{ name }}{% endfor %}",
            "the secrets cannot be listed; name the one you need, as secrets.NAME",
        ),
        ("{{ secrets|tojson }}", "SecretScope is not JSON serializable"),
        ("{{ secrets|length }}", "object of type 'SecretScope' has no len()"),
        ("{{ secrets._values }}", "access to attribute '_values' of 'SecretScope' object is unsafe."),
    ],
    ids=["list", "for", "tojson", "length", "private"],
)
def test_scope_cannot_be_listed_or_opened(template: str, message: str) -> None:
    scope = {"secrets": SecretResolver({"WEIR_SECRET_TOKEN": "tok-123"}).scope()}

    with pytest.raises(TemplateError) as caught:
        Templates().render_value(template, scope)

    assert str(caught.value) == f"template error in '{template}': {message}"
    assert "tok-123" not in str(caught.value)


def test_scope_keys_and_items_are_secret_names() -> None:
    scope = {"secrets": SecretResolver({"WEIR_SECRET_TOKEN": "tok-123"}).scope()}

    with pytest.raises(SecretMissing) as caught:
        Templates().render_value("{{ secrets.items() }}", scope)

    assert caught.value.name == "items"


# --- Masker ------------------------------------------------------------------------------------


def test_masker_masks_inside_longer_strings() -> None:
    masker = Masker(["hunter22"])

    assert masker.mask_text("login hunter22 failed; hunter22hunter22!") == "login *** failed; ******!"


def test_masker_masks_json_bodies() -> None:
    masker = Masker(["tok-123", "hunter22"])
    body = {
        "auth": {"token": "Bearer tok-123", "tok-123": ["a", "x hunter22 y", ("hunter22", 3)]},
        "list": [{"password": "hunter22"}, 1, 2.5, True, None],
    }

    assert masker.mask(body) == {
        "auth": {"token": "Bearer ***", "***": ["a", "x *** y", ("***", 3)]},
        "list": [{"password": "***"}, 1, 2.5, True, None],
    }


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        base64.b64encode(b"hunter22").decode(),
        base64.b64encode(b"hunter22").decode().rstrip("="),
    ],
    ids=["standard", "url-safe", "url-safe-unpadded", "padded", "unpadded"],
)
def test_masker_masks_base64(encoded: str) -> None:
    masker = Masker([SECRET, "hunter22"])

    assert masker.mask_text(f"data={encoded};") == "data=***;"


@pytest.mark.parametrize(
    ("prefix", "suffix", "expected"),
    [
        (b"user:", b"", "Basic dXNlcjp***"),
        (b"ab:", b"", "Basic YWI6***"),
        (b"abc:", b"", "Basic YWJjOm***"),
        (b"user:", b":more", "Basic dXNlcjp***jptb3Jl"),
    ],
    ids=["offset-5", "offset-3", "offset-4", "followed"],
)
def test_masker_masks_secret_inside_basic_auth(prefix: bytes, suffix: bytes, expected: str) -> None:
    masker = Masker(["hunter22"])
    header = "Basic " + base64.b64encode(prefix + b"hunter22" + suffix).decode()

    assert masker.mask_text(header) == expected


@pytest.mark.parametrize("encoded", [quote(SECRET, safe=""), quote_plus(SECRET), quote_plus("pass word+1")])
def test_masker_masks_percent_encoded(encoded: str) -> None:
    masker = Masker([SECRET, "pass word+1"])

    assert masker.mask_text(f"https://api.test/?key={encoded}&x=1") == "https://api.test/?key=***&x=1"


def test_masker_masks_json_escaped() -> None:
    masker = Masker([SECRET, "ü\\pass"])
    text = json.dumps({"a": SECRET, "b": "ü\\pass"}) + json.dumps("ü\\pass", ensure_ascii=False)

    assert masker.mask_text(text) == '{"a": "***", "b": "***"}"***"'


def test_masker_ignores_values_shorter_than_four_characters() -> None:
    masker = Masker(["a", "42", "xyz", "abcd"])

    assert masker.mask_text("a 42 xyz abcd") == "a 42 xyz ***"
    assert Masker(["a", "42"]).mask({"a": "42"}) == {"a": "42"}


def test_masker_prefers_the_longest_match() -> None:
    masker = Masker(["secret", "secret-and-more"])

    assert masker.mask_text("secret-and-more / secret-and") == "*** / ***-and"


def test_masker_does_not_mutate_its_input() -> None:
    body = {"tok-123": ["tok-123", {"k": ("tok-123",)}]}
    before = copy.deepcopy(body)

    masked = Masker(["tok-123"]).mask(body)

    assert body == before
    assert masked == {"***": ["***", {"k": ("***",)}]}
    assert masked["***"] is not body["tok-123"]


def test_masker_with_no_secrets_returns_values_unchanged() -> None:
    body = {"token": "tok-123", "n": [1, 2]}

    assert Masker.empty().mask(body) is body
    assert Masker.empty().mask_text("tok-123") == "tok-123"
    assert Masker(["abc", ""]).mask(body) is body


def test_masker_masks_large_outputs() -> None:
    rows = [{"id": index, "note": f"row {index} with tok-123 inside", "tags": ["a", "b"]} for index in range(20_000)]

    masked = Masker(["tok-123", "hunter22", SECRET]).mask(rows)

    assert masked[19_999] == {"id": 19_999, "note": "row 19999 with *** inside", "tags": ["a", "b"]}
    assert "tok-123" not in json.dumps(masked)
