"""Malformed workflow files become findings that say what is wrong and where, never tracebacks."""

from __future__ import annotations

import codecs
import random
from pathlib import Path

import pytest

from weir.cli import EXIT_FAILED, EXIT_OK, main
from weir.connectors.registry import ConnectorRegistry
from weir.workflows.source import MAX_FILE_BYTES, Entry, SourceTree, is_inside, parse_document, read_directory
from weir.workflows.validation import validate_tree

RECORD = '[[steps]]\nid = "record"\nuses = "log"\nwith = { message = "alert received" }\n'
NOT_CLOSED = 'end it with the same quote (use """ for text over several lines)'
BINARY = "file contains NUL bytes, so it is binary, not TOML or JSON text (UTF-16 text must be saved as UTF-8)"
TOO_DEEP = "document is nested more than 64 levels deep; flatten the data or move it into a separate file"

MALFORMED: list[tuple[str, str, bytes, str]] = [
    (
        "toml-syntax",
        "alerts.toml",
        b'description = "Route alerts"\n\n[[steps]]\nid = "record"\nuses = log\n',
        "alerts.toml:5:8: error W101 TOML syntax error: invalid value: write text in quotes "
        '("..."), numbers, true/false, [arrays] or {tables}',
    ),
    (
        "toml-unclosed-string",
        "alerts.toml",
        b'description = "Route alerts\n' + RECORD.encode(),
        "alerts.toml:1:28: error W101 TOML syntax error: a string is not closed before the end of the line: "
        f"{NOT_CLOSED}",
    ),
    (
        "json-syntax",
        "alerts.json",
        b'{\n  "steps": [\n    {"id": "record" "uses": "log"}\n  ]\n}\n',
        "alerts.json:3:21: error W102 JSON syntax error: expected ',' between two items, "
        "or the '}' or ']' that ends them",
    ),
    (
        "json-trailing-comma",
        "alerts.json",
        b'{"steps": [\n  {"id": "record", "uses": "log", "with": {"message": "hi"}},\n]}',
        "alerts.json:2:61: error W102 JSON syntax error: a comma after the last item; remove it "
        "(JSON allows no trailing comma)",
    ),
    (
        "json-single-quotes",
        "alerts.json",
        b"{'steps': []}",
        'alerts.json:1:2: error W102 JSON syntax error: expected a key in double quotes ("key")',
    ),
    (
        "json-two-documents",
        "alerts.json",
        b'{"steps": []}\n{"steps": []}\n',
        "alerts.json:2:1: error W102 JSON syntax error: extra text after the end of the top-level object; "
        "a file holds one JSON object",
    ),
    (
        "json-nan",
        "alerts.json",
        b'{"steps": [{"id": "nan", "uses": "transform", "with": {"output": NaN}}]}',
        "alerts.json:1:66: error W102 JSON syntax error: NaN is not a JSON value; write null or a number",
    ),
    (
        "toml-wrong-type",
        "alerts.toml",
        b'steps = "record"\n',
        "alerts.toml:1:1: error W201 key 'steps' in the file must be a list, not 'record'",
    ),
    (
        "json-wrong-types",
        "alerts.json",
        b'{\n  "enabled": "sometimes",\n  "steps": [{"id": 7, "uses": ["log"]}]\n}\n',
        "alerts.json:2:3: error W201 key 'enabled' in the file must be true or false, not 'sometimes'",
    ),
    (
        "json-deep-arrays",
        "alerts.json",
        b"[" * 10_000 + b"]" * 10_000,
        f"alerts.json:1:1: error W105 {TOO_DEEP}",
    ),
    (
        "toml-deep-inline-arrays",
        "alerts.toml",
        b"data = " + b"[" * 10_000 + b"]" * 10_000 + b"\n" + RECORD.encode(),
        f"alerts.toml:1:1: error W105 {TOO_DEEP}",
    ),
    (
        "json-deep-tables",
        "alerts.json",
        b'{"steps": [{"id": "a", "uses": "transform", "with": {"output": '
        + b'{"x": ' * 70
        + b"1"
        + b"}" * 70
        + b"}}]}",
        f"alerts.json:1:419: error W105 {TOO_DEEP}",
    ),
    (
        "huge-file",
        "alerts.toml",
        b'description = "' + b"x" * MAX_FILE_BYTES + b'"\n' + RECORD.encode(),
        "alerts.toml:1:1: error W100 file is 1.0 MiB (1048668 bytes); workflow files may be at most 1 MiB: "
        "split it into several workflows or move data out of it",
    ),
    (
        "random-bytes",
        "alerts.toml",
        random.Random(7).randbytes(512),  # noqa: S311 - reproducible junk, not a secret
        f"alerts.toml:1:69: error W103 {BINARY}",
    ),
    (
        "png",
        "alerts.json",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
        f"alerts.json:3:1: error W103 {BINARY}",
    ),
    (
        "toml-duplicate-key",
        "alerts.toml",
        RECORD.encode() + b'uses = "transform"\n',
        "alerts.toml:5:1: error W104 key 'uses' is already defined on line 3; keep one of the two definitions",
    ),
    (
        "toml-duplicate-table",
        "alerts.toml",
        b'[[steps]]\nid = "a"\nuses = "log"\n[steps.with]\nmessage = "x"\n[steps.with]\nlevel = "info"\n',
        "alerts.toml:6:1: error W104 table [steps.with] is already defined on line 4; merge the two into one table",
    ),
    (
        "toml-duplicate-inline-key",
        "alerts.toml",
        b'[[steps]]\nid = "a"\nuses = "log"\nwith = { message = "x", message = "y" }\n',
        "alerts.toml:4:25: error W104 key 'message' is already defined on line 4; keep one of the two definitions",
    ),
    (
        "json-duplicate-key",
        "alerts.json",
        b'{\n  "steps": [\n    {"id": "a", "uses": "log"},\n    {"id": "b", "uses": "log", "id": "c"}\n  ]\n}\n',
        "alerts.json:4:32: error W104 key 'id' is already defined on line 4; keep one of the two definitions",
    ),
    (
        "latin-1",
        "alerts.toml",
        'description = "héllo Café"\n'.encode().replace('é"'.encode(), b'\xe9"') + RECORD.encode(),
        "alerts.toml:1:25: error W103 file is not UTF-8 text (byte 0xe9 at offset 25): save it as UTF-8",
    ),
    (
        "utf-16-bom",
        "alerts.toml",
        RECORD.encode("utf-16"),
        "alerts.toml:1:1: error W103 file is UTF-16 text (it starts with a UTF-16 byte order mark): save it as UTF-8",
    ),
    (
        "utf-16-no-bom",
        "alerts.toml",
        RECORD.encode("utf-16-le"),
        f"alerts.toml:1:2: error W103 {BINARY}",
    ),
    (
        "empty-toml",
        "alerts.toml",
        b"",
        "alerts.toml:1:1: error W202 the file has no steps; a workflow needs at least one: add a [[steps]] table",
    ),
    (
        "empty-json",
        "alerts.json",
        b"",
        "alerts.json:1:1: error W102 JSON syntax error: the file is empty; a workflow file holds one JSON object",
    ),
    (
        "json-top-level-array",
        "alerts.json",
        b'[{"steps": [{"id": "record", "uses": "log", "with": {"message": "hi"}}]}]',
        "alerts.json:1:1: error W102 a workflow file holds one JSON object ({...}), not a list",
    ),
    (
        "json-huge-number",
        "alerts.json",
        b'{"steps": [{"id": "a", "uses": "transform", "with": {"output": ' + b"9" * 5000 + b"}}]}",
        "alerts.json:1:64: error W201 a number has more than 4300 digits, more than weir reads; write it as a string",
    ),
    (
        "toml-huge-number",
        "alerts.toml",
        b'[[steps]]\nid = "a"\nuses = "transform"\nwith.output = ' + b"9" * 5000 + b"\n",
        "alerts.toml:4:15: error W201 a number has more than 4300 digits, more than weir reads; write it as a string",
    ),
    (
        "json-lone-surrogate",
        "alerts.json",
        b'{"steps": [{"id": "a", "uses": "transform", "with": {"output": "\\ud800"}}]}',
        "alerts.json:1:54: error W102 a JSON string holds an unpaired surrogate escape (\\ud800-\\udfff), which is "
        "not valid Unicode; write the character itself or a complete surrogate pair",
    ),
]


def _write(directory: Path, name: str, raw: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(raw)
    return directory


@pytest.mark.parametrize(("name", "raw", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_source_malformed_file_is_one_finding(name: str, raw: bytes, expected: str, tmp_path: Path) -> None:
    findings = validate_tree(read_directory(_write(tmp_path, name, raw)), ConnectorRegistry()).findings

    assert [str(f) for f in findings][:1] == [expected]


@pytest.mark.parametrize(
    ("name", "raw"),
    [(c[1], c[2]) for c in MALFORMED if c[0] in ("toml-syntax", "json-deep-arrays", "random-bytes", "utf-16-bom")],
    ids=["toml-syntax", "json-deep-arrays", "random-bytes", "utf-16-bom"],
)
def test_source_malformed_file_fails_weir_check(
    name: str, raw: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_write(tmp_path, name, raw))

    assert main(["check", "."]) == EXIT_FAILED
    out, err = capsys.readouterr()
    assert out.startswith((f"{name}:1:", f"{name}:5:"))
    assert err == "1 file checked: 1 error, 0 warnings\n"


def test_source_utf8_bom_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(_write(tmp_path, "alerts.toml", codecs.BOM_UTF8 + RECORD.encode()))

    assert main(["check", "."]) == EXIT_OK


def test_source_utf8_bom_does_not_shift_columns() -> None:
    doc, findings = parse_document("alerts.toml", codecs.BOM_UTF8 + b'name = "x"\n' + RECORD.encode())

    assert findings == []
    assert doc is not None
    assert str(doc.locate(("steps", 0, "uses"))) == "alerts.toml:4:1"
    assert str(parse_document("a.toml", codecs.BOM_UTF8 + b"x = \xe9\n")[1][0].location) == "a.toml:1:5"


def test_source_surrogate_pairs_are_text() -> None:
    doc, findings = parse_document(
        "a.json", b'{"steps": [{"id": "a", "uses": "log", "with": {"message": "\\ud83d\\ude80"}}]}'
    )

    assert findings == []
    assert doc is not None
    assert doc.data["steps"][0]["with"]["message"] == "\N{ROCKET}"


@pytest.mark.parametrize("seed", range(20))
def test_source_random_damage_never_raises(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - reproducible damage, not a secret
    text = bytearray((Path(__file__).parent.parent / "fixtures/checks/W203/good/alert-routing.toml").read_bytes())
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(text))
        action = rng.choice(("flip", "cut", "insert"))
        if action == "flip":
            text[position] = rng.randrange(256)
        elif action == "cut":
            del text[position : position + rng.randint(1, 40)]
        else:
            text[position:position] = rng.choice([b"[", b"]", b"{", b'"', b"'''", b"=", b"\n[[steps]]\n", b"\\u"])
    for name in ("alerts.toml", "alerts.json"):
        doc, findings = parse_document(name, bytes(text))
        assert (doc is None) == bool(findings)
        if doc is not None:  # positions are only computed for findings; they must not fail either
            doc.locate(("steps", 1, "with", "text"))


def test_source_unreadable_file_is_w100() -> None:
    def unreadable() -> bytes:
        raise PermissionError(13, "Permission denied")

    tree = SourceTree({"alerts.toml": Entry(10, unreadable)})

    findings = validate_tree(tree, ConnectorRegistry()).findings

    assert [str(f) for f in findings] == [
        "alerts.toml:1:1: error W100 cannot read alerts.toml: Permission denied; "
        "check that the file is readable by the user running weir"
    ]


def test_source_special_file_is_w100(tmp_path: Path) -> None:
    tree = SourceTree({"alerts.toml": Entry(0, bytes, "is not a regular file")})

    assert [(f.code, str(f.location)) for f in validate_tree(tree, ConnectorRegistry()).findings] == [
        ("W100", "alerts.toml")
    ]


def test_source_symlinked_script_is_w106(tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_text("print('hi')\n", encoding="utf-8")
    automation = tmp_path / "workflows"
    (automation / "scripts").mkdir(parents=True)
    (automation / "scripts" / "cleanup.py").symlink_to(tmp_path / "outside.py")
    (automation / "cleanup.toml").write_text(
        '[[steps]]\nid = "cleanup"\nuses = "script"\nwith = { lang = "python", file = "scripts/cleanup.py" }\n',
        encoding="utf-8",
    )

    findings = validate_tree(read_directory(automation), ConnectorRegistry()).findings

    assert [str(f) for f in findings] == [
        "cleanup.toml:4:27: error W106 script file 'scripts/cleanup.py' is a symbolic link; "
        "scripts must be regular files inside the automation directory",
        "scripts/cleanup.py: error W106 scripts/cleanup.py is a symbolic link; workflow files must be regular files "
        "inside the automation directory: replace the link with a copy of the file",
    ]


def test_source_hidden_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.toml").write_bytes(b"\x00")
    (tmp_path / ".draft.toml").write_bytes(b"\x00")
    (tmp_path / "alerts.toml").write_text(RECORD, encoding="utf-8")

    assert sorted(read_directory(tmp_path).entries) == ["alerts.toml"]


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("scripts/cleanup.py", True),
        ("./scripts/../cleanup.py", True),
        ("../cleanup.py", False),
        ("scripts/../../cleanup.py", False),
        ("/etc/passwd", False),
        ("C:/scripts/cleanup.py", False),
        ("..\\cleanup.py", False),
    ],
)
def test_source_is_inside(path: str, inside: bool) -> None:
    assert is_inside(path) is inside
