from __future__ import annotations

import base64
import copy
import html
import io
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import markupsafe
import pytest

from weir.connectors.wire import excerpt
from weir.errors import ConfigError, PermanentError, SecretMissing, TemplateError
from weir.secrets import MIN_MASKED_LENGTH, Masker, SecretResolver, active_masker, encoded_forms, mask_active
from weir.workflows.scripts import run_script
from weir.workflows.templating import Templates

pytestmark = pytest.mark.anyio

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


@pytest.mark.parametrize("secret", ["hunter22", "hun\0ter22"], ids=["plain", "with-nul"])
def test_masker_finds_a_secret_inside_one_string_only_never_across_two(secret: str) -> None:
    masker = Masker([secret])
    head, tail = secret[:4], secret[4:]
    split = {"a": head, "b": tail, "list": [head, tail], head: tail}
    whole = {"a": "x", "nested": [{"deep": ("y", f"-{secret}-")}]}

    assert masker.mask(split) is split  # nothing to mask: the very same value comes back
    assert masker.mask(whole) == {"a": "x", "nested": [{"deep": ("y", "-***-")}]}


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


SPECIAL = "pa55 w/rd+&\"Zq7'vX\\1\u00fc\U0001f600\n"
"""A secret with every character class the escaping forms treat differently."""


def _nested_json(value: str, depth: int, *, ascii_only: bool) -> str:
    for _ in range(depth):
        value = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
    return value


@pytest.mark.parametrize("ascii_only", [True, False], ids=["ascii", "utf8"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_masker_masks_json_nested_up_to_four_deep(depth: int, ascii_only: bool) -> None:
    masker = Masker([SPECIAL])
    text = f"<{_nested_json(SPECIAL, depth, ascii_only=ascii_only)}>"

    assert masker.mask_text(text) == "<***>"


@pytest.mark.parametrize(
    "encoded",
    [
        json.dumps(SPECIAL)[1:-1].replace("/", "\\/"),  # PHP, Slack
        json.dumps(SPECIAL)[1:-1].replace("\\u00fc", "\\u00FC"),  # upper-case hex digits
        repr(SPECIAL)[1:-1],
        ascii(SPECIAL)[1:-1],
        html.escape(SPECIAL),
        html.escape(SPECIAL, quote=False),
        str(markupsafe.escape(SPECIAL)),
    ],
    ids=["json-slash", "json-upper-hex", "repr", "ascii", "html", "html-unquoted", "markupsafe"],
)
def test_masker_masks_escaped_forms(encoded: str) -> None:
    assert Masker([SPECIAL]).mask_text(f"[{encoded}]") == "[***]"


@pytest.mark.parametrize(
    "encoded",
    [
        quote(SECRET),  # keeps '/'
        Templates().render_value("{{ s | urlencode }}", {"s": SECRET}),  # Jinja's urlencode keeps '/' too
        quote(SECRET, safe="").lower(),  # lower-case hex digits
        quote(SECRET, safe="!*'()"),  # encodeURIComponent
        quote(SECRET, safe="!$&'()*+,;=:@/?~"),  # a query as httpx and browsers write it
        quote(SECRET, safe="!$&'()*+,;=:@~"),  # a path segment
        quote_plus("pass word/1", safe="/"),
    ],
    ids=["quote", "jinja-urlencode", "lower-hex", "encodeURIComponent", "query", "path", "quote-plus-slash"],
)
def test_masker_masks_more_percent_encodings(encoded: str) -> None:
    masker = Masker([SECRET, "pass word/1"])

    assert masker.mask_text(f"https://api.test/x?key={encoded}#") == "https://api.test/x?key=***#"


def test_masker_masks_base64_of_the_secret_at_every_offset_inside_a_blob() -> None:
    masker = Masker([SECRET])
    for offset in range(3):
        for tail in (b"", b"\n", b":more"):
            blob = base64.b64encode(b"p" * offset + SECRET.encode() + tail).decode()
            masked = masker.mask_text(blob)
            assert masked.count("***") == 1, (offset, tail, masked)
            assert len(masked) < len(blob) - 10, (offset, tail, masked)
            urlsafe = masker.mask_text(blob.translate(str.maketrans("+/", "-_")))
            assert urlsafe.count("***") == 1, (offset, tail, urlsafe)


def test_masker_with_many_secrets_masks_each_and_keeps_the_rest() -> None:
    secrets = [f"tok-{index:03d}-{'x' * (index % 7)}/+" for index in range(60)]
    masker = Masker(secrets)
    text = " | ".join(f"{s} {base64.b64encode(s.encode()).decode()} {quote(s, safe='')}" for s in secrets)

    assert masker.mask_text(text) == " | ".join("*** *** ***" for _ in secrets)
    assert masker.mask_text("tok-000 and tok-00 stay") == "tok-000 and tok-00 stay"


def test_encoded_forms_are_at_least_the_minimum_length() -> None:
    assert min(map(len, encoded_forms("abcd"))) >= MIN_MASKED_LENGTH
    assert encoded_forms("abcd") >= {"abcd", "YWJjZA==", "YWJjZA"}


# --- masking around cuts, and the server's log ---------------------------------------------------------


def test_excerpt_masks_before_it_cuts_a_secret_in_two() -> None:
    body = "x" * 195 + SECRET + " after"
    masker = Masker([SECRET])

    assert excerpt(body) == "x" * 195 + SECRET[:5] + "…"  # outside a step: nothing to mask with
    with masker.active():
        assert mask_active(SECRET) == "***"
        assert excerpt(body) == "x" * 195 + "*** a…"
    assert active_masker() is None
    assert mask_active(SECRET) == SECRET


async def test_scripts_mask_stderr_before_the_tail_and_the_exit_message_are_cut() -> None:
    secret = "hunter22-" + "q" * 40
    code = (  # a runaway line (logged in pieces) with the secret arriving in two reads, then a cut tail
        f"import sys, time\nsecret = {secret!r}\n"
        "sys.stderr.write('a' * 5000 + secret[:10]); sys.stderr.flush(); time.sleep(0.2)\n"
        "sys.stderr.write(secret[10:] + 'b' * 5000 + '\\n')\n"
        "sys.stderr.write(secret[:20] + '\\n' + 'z' * 4070 + secret + '\\n')\n"
        "sys.exit(4)"
    )
    lines: list[str] = []
    with Masker([secret]).active(), pytest.raises(PermanentError) as caught:
        await run_script("python", code, name="leaky", log=lines.append)

    logged = "".join(lines)
    assert len(lines) == 4  # the first piece, the rest of the runaway line, the prefix, the z line
    assert secret not in logged
    assert secret[:20] in logged  # a prefix alone is no secret: it was a line of its own
    assert logged.count("***") == 2
    assert logged.replace("***", "").replace(secret[:20], "") == "a" * 5000 + "b" * 5000 + "z" * 4070
    message = str(caught.value)
    assert message.startswith("script 'leaky' exited with code 4: ")
    assert message.endswith("z" * 100 + "***")
    assert secret not in message


def test_logging_filter_masks_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(Masker([SECRET]).logging_filter())
    logger = logging.getLogger("tests.secrets.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("GET https://api.test/?key=%s", quote_plus(SECRET))
        try:
            raise ValueError(f"bad value {SECRET!r}")
        except ValueError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)

    output = stream.getvalue()
    assert output.startswith(
        "WARNING GET https://api.test/?key=***\nERROR call failed\nTraceback (most recent call last):"
    )
    assert output.endswith("ValueError: bad value '***'\n")
    assert output.count("Traceback") == 1
