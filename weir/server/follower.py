"""Follow the automation repository: apply its branch head now and whenever it moves.

A local repository is watched with watchfiles (its refs change when a commit lands);
``--dev`` watches the automation directory's working tree instead. Git problems are
logged and reported in the status; they never stop the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from weir.errors import ConfigError, GitSyncError
from weir.server.deploy import Deployer, RevisionInfo
from weir.settings import ServeSettings
from weir.workflows.source import SourceTree, display_prefix, read_directory

log = logging.getLogger("weir.sync")


@dataclass
class SyncState:
    last_sync: datetime | None = None
    last_error: str | None = None
    head: str | None = None


class Follower:
    """Reads the followed branch (or working tree) and hands new revisions to the deployer."""

    def __init__(self, settings: ServeSettings, deployer: Deployer) -> None:
        self.settings = settings
        self.deployer = deployer
        self.state = SyncState()
        repo = settings.repo
        if "://" in repo or repo.startswith("git@"):
            raise ConfigError(
                f"--repo {repo}: following a remote URL is not supported yet; clone it and pass the local path"
            )
        self.repo_path = Path(repo).resolve()
        if not settings.dev and not (self.repo_path / ".git").exists():
            raise ConfigError(f"--repo {self.repo_path} is not a Git repository; pass a repository path, or use --dev")
        self.branch = settings.branch
        self.prefix = display_prefix(settings.path)

    def sync(self) -> bool:
        """Read the current head; deploy it when it changed. Returns whether a new revision was applied."""
        try:
            info, tree = self._read()
        except GitSyncError as exc:
            self.state.last_error = str(exc)
            log.error("sync failed: %s", exc)
            return False
        self.state.last_sync = datetime.now(UTC)
        self.state.last_error = None
        if info.sha == self.state.head and not self.settings.dev:
            return False
        self.state.head = info.sha
        return self.deployer.deploy(info, tree)

    def _read(self) -> tuple[RevisionInfo, SourceTree]:
        from weir.server import gitsync

        if self.settings.dev:
            directory = self.repo_path / self.settings.path
            return RevisionInfo("working-tree", "uncommitted files (--dev)"), read_directory(
                directory, prefix=self.prefix
            )
        ref = self.branch or "HEAD"
        commit = gitsync.commit_info(self.repo_path, ref)
        tree = gitsync.read_commit_tree(self.repo_path, commit.sha, self.settings.path, prefix=self.prefix)
        info = RevisionInfo(commit.sha, commit.message, commit.author, commit.committed_at)
        return info, tree

    async def watch(self, stop: asyncio.Event) -> None:
        """Re-sync whenever the repository's refs (or, with --dev, the files) change, until ``stop`` is set."""
        from watchfiles import DefaultFilter, awatch

        keep: Callable[[Any, str], bool]
        if self.settings.dev:
            target, keep = self.repo_path / self.settings.path, DefaultFilter()
        else:  # the default filter drops everything under .git; keep refs and HEAD, skip object writes
            target, keep = self.repo_path / ".git", _ref_changes
        async for _changes in awatch(target, stop_event=stop, debounce=100, step=50, watch_filter=keep):
            await asyncio.to_thread(self.sync)


def _ref_changes(change: object, path: str) -> bool:
    return "/objects/" not in path and "/logs/" not in path and not path.endswith(".lock")
