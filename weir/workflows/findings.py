"""Findings: what ``weir check`` reports about a file, as data.

A finding is never raised. Validation gathers every finding of every file and
returns them, so one bad file never hides another. Each finding has a stable code
from ``CODES``; documentation and tooling rely on the codes not changing meaning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from weir.text import did_you_mean
from weir.types import SourceLocation

__all__ = ["CODES", "Finding", "Severity", "did_you_mean", "has_errors"]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


CODES: dict[str, str] = {
    # files
    "W100": "file cannot be read (too large, unreadable, or not a regular file)",
    "W101": "TOML syntax error",
    "W102": "JSON syntax error",
    "W103": "file is not UTF-8 text",
    "W104": "duplicate key",
    "W105": "document nested too deeply",
    "W106": "symbolic link or path outside the automation directory",
    "W107": "file name is not a valid workflow name and no 'name' is set",
    "W108": "unsupported file format version",
    "W109": "the automation directory has no workflow files",
    # structure and references
    "W200": "unknown key",
    "W201": "wrong type or invalid value",
    "W202": "missing required key",
    "W203": "step needs an unknown step",
    "W204": "steps depend on each other in a cycle",
    "W205": "duplicate step id",
    "W206": "duplicate workflow name",
    "W207": "duplicate webhook path",
    "W208": "subflow calls an unknown workflow",
    "W209": "subflows call each other recursively",
    "W210": "unknown connection",
    "W211": "connection is of the wrong type for the action",
    "W212": "action needs a connection",
    "W213": "param value does not fit the declared param",
    "W214": "option has no effect",
    # templates
    "W300": "template does not parse",
    "W301": "template refers to an unknown param",
    "W302": "template refers to an unknown step",
    "W303": "template reads a step that may not have run yet",
    "W304": "template inside SQL text",
    "W305": "template refers to an unknown name",
    "W306": "expression does not parse",
    # triggers
    "W400": "invalid cron expression",
    "W401": "unknown time zone",
    "W402": "invalid duration",
    "W403": "invalid webhook",
    "W404": "cron restricts both day of month and day of week",
    # actions
    "W500": "unknown action",
    "W501": "action input does not fit the action's schema",
    "W502": "missing action input",
    "W503": "script file not found",
    "W504": "script file outside the automation directory",
    # repo config
    "W600": "invalid connection settings",
    "W601": "unknown connection type",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one place. ``message`` is a full sentence that says how to fix it."""

    code: str
    severity: Severity
    location: SourceLocation
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.severity} {self.code} {self.message}"

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.location.file, self.location.line, self.location.column, self.code)


def has_errors(findings: Iterable[Finding], *, strict: bool = False) -> bool:
    """True when any finding fails the check: errors always, warnings too when ``strict``."""
    return any(f.severity is Severity.ERROR or strict for f in findings)
