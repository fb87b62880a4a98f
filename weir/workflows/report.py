"""Findings as text, JSON, GitHub workflow commands or SARIF 2.1.0."""

from __future__ import annotations

import json
from collections.abc import Sequence

from weir import __version__
from weir.workflows.findings import CODES, Finding, Severity

FORMATS = ("text", "json", "github", "sarif")


def render_findings(findings: Sequence[Finding], fmt: str) -> str:
    """The findings in ``fmt``; text and github print one line per finding, json and sarif one document."""
    if fmt == "json":
        return json.dumps([_as_json(f) for f in findings], indent=2)
    if fmt == "github":
        return "\n".join(_as_github(f) for f in findings)
    if fmt == "sarif":
        return json.dumps(_as_sarif(findings), indent=2)
    return "\n".join(str(f) for f in findings)


def summary(findings: Sequence[Finding], files: int) -> str:
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = len(findings) - errors
    noun = "file" if files == 1 else "files"
    if not findings:
        return f"{files} {noun} checked, no problems"
    return f"{files} {noun} checked: {errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"


def _as_json(f: Finding) -> dict[str, object]:
    return {
        "code": f.code,
        "severity": str(f.severity),
        "file": f.location.file,
        "line": f.location.line,
        "column": f.location.column,
        "message": f.message,
    }


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _as_github(f: Finding) -> str:
    command = "error" if f.severity is Severity.ERROR else "warning"
    props = [f"file={_escape_property(f.location.file)}"]
    if f.location.line:
        props.append(f"line={f.location.line}")
    if f.location.column:
        props.append(f"col={f.location.column}")
    props.append(f"title={f.code}")
    return f"::{command} {','.join(props)}::{_escape_data(f.message)}"


def _as_sarif(findings: Sequence[Finding]) -> dict[str, object]:
    used = sorted({f.code for f in findings})
    rules = [{"id": code, "name": code, "shortDescription": {"text": CODES.get(code, code)}} for code in used]
    results = []
    for f in findings:
        region: dict[str, int] = {}
        if f.location.line:
            region["startLine"] = f.location.line
        if f.location.column:
            region["startColumn"] = f.location.column
        location: dict[str, object] = {"artifactLocation": {"uri": f.location.file}}
        if region:
            location["region"] = region
        results.append(
            {
                "ruleId": f.code,
                "ruleIndex": used.index(f.code),
                "level": "error" if f.severity is Severity.ERROR else "warning",
                "message": {"text": f.message},
                "locations": [{"physicalLocation": location}],
            }
        )
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "weir",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
