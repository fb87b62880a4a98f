"""Apply a revision whole or not at all.

A revision with any error is rejected: the last good one keeps serving, and the
rejected sha with its findings is kept for ``/api/status``, the log and the UI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from weir.connectors.registry import ConnectorRegistry
from weir.errors import GitSyncError
from weir.workflows.findings import Finding, Severity
from weir.workflows.source import SourceTree
from weir.workflows.validation import Revision, ValidationCache, validate_tree

log = logging.getLogger("weir.deploy")


@dataclass(frozen=True)
class RevisionInfo:
    """Where a revision came from: a commit (sha, message) or the working tree in --dev mode."""

    sha: str
    message: str = ""
    author: str = ""
    committed_at: datetime | None = None

    @property
    def short(self) -> str:
        return self.sha[:12]


@dataclass(frozen=True)
class Applied:
    info: RevisionInfo
    revision: Revision
    warnings: list[Finding]
    applied_at: datetime


@dataclass(frozen=True)
class Rejected:
    info: RevisionInfo
    findings: list[Finding]
    seen_at: datetime


class ApplyFailed(GitSyncError):
    """A valid revision could not be put in place (the run database did not take it); the old one keeps serving."""


@dataclass
class Deployer:
    """Holds the active revision and the last rejected one; ``deploy`` switches atomically."""

    registry: ConnectorRegistry
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    listeners: list[Callable[[Applied], None]] = field(default_factory=list)
    rejected_listeners: list[Callable[[Rejected], None]] = field(default_factory=list)
    active: Applied | None = None
    rejected: Rejected | None = None
    cache: ValidationCache = field(default_factory=ValidationCache)
    """Per-file validation results of the last revisions: a commit that changes one file re-validates that file."""

    def deploy(self, info: RevisionInfo, tree: SourceTree) -> bool:
        """Validate ``tree``; make it active when it has no errors. Returns whether it was applied."""
        result = validate_tree(tree, self.registry, self.cache)
        now = self.clock()
        if not result.ok():
            errors = [f for f in result.findings if f.severity is Severity.ERROR]
            self.rejected = Rejected(info, result.findings, now)
            kept = self.active.info.short if self.active else "nothing"
            log.error("revision %s rejected with %d error(s); still serving %s", info.short, len(errors), kept)
            for finding in errors:
                log.error("  %s", finding)
            for notify in self.rejected_listeners:
                try:
                    notify(self.rejected)
                except Exception:
                    log.exception("revision listener failed")
            return False
        applied = Applied(info, result.revision, result.findings, now)
        for listener in self.listeners:  # the server stores and switches to it; a failure keeps the old one
            try:
                listener(applied)
            except Exception as exc:
                kept = self.active.info.short if self.active else "nothing"
                log.exception("revision %s could not be applied (%s); still serving %s", info.short, exc, kept)
                raise ApplyFailed(f"revision {info.short} could not be applied: {exc}") from exc
        self.active = applied
        if self.rejected is not None and self.rejected.info.sha == info.sha:
            self.rejected = None
        stats = self.cache.last
        log.info(
            "revision %s applied: %d workflow(s) (%d file(s) parsed, %d workflow(s) checked, %d unchanged)",
            info.short,
            len(result.revision.workflows),
            len(stats.parsed),
            len(stats.checked),
            stats.reused,
        )
        return True
