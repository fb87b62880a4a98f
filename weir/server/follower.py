"""Follow the automation repository: apply its branch head now and whenever it moves.

A local repository is watched with watchfiles (its refs change when a commit lands);
``--dev`` watches the automation directory's working tree instead. A remote URL is cloned
into the state directory and fetched every ``--poll``. Either way ``request_sync`` (a push
webhook) and ``sync_now`` (``POST /api/sync``) sync at once. Git problems are logged and
reported in the status; they never stop the server, which keeps serving the last good revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from weir.errors import ConfigError, GitSyncError
from weir.schemas.common import format_duration
from weir.server import gitsync
from weir.server.deploy import Deployer, RevisionInfo
from weir.settings import ServeSettings
from weir.workflows.source import SourceTree, display_prefix, read_directory

log = logging.getLogger("weir.sync")

REF_STEP_MS = 20
"""Quiet time after a ref of the followed repository changed before it is synced: Git writes a ref at once
(a lock file renamed into place), so there is nothing to wait for but the rest of the same command."""
DEV_STEP_MS = 50
"""Quiet time after a file of the working tree changed (--dev) before it is read."""


@dataclass
class SyncState:
    last_sync: datetime | None = None
    """When the repository was last read successfully (for a remote: fetched and read)."""
    last_error: str | None = None
    """Why the last sync failed, password masked; None after a successful one."""
    head: str | None = None
    """The sha last handed to the deployer (applied or rejected)."""


class Follower:
    """Reads the followed branch (or working tree) and hands new revisions to the deployer.

    ``sync`` does the work in the calling thread (syncs never overlap); ``watch`` runs on the
    event loop and calls it in a thread whenever the repository may have moved.
    """

    def __init__(self, settings: ServeSettings, deployer: Deployer) -> None:
        self.settings = settings
        self.deployer = deployer
        self.state = SyncState()
        self.on_error: Callable[[str], None] = lambda _message: None
        """Called with the (masked) message of every failed sync, e.g. to count it in a metric."""
        self.branch = settings.branch
        """The followed branch; for a remote without --branch, its default branch once known."""
        self.prefix = display_prefix(settings.path)
        self.remote: gitsync.RemoteClone | None = None
        repo = settings.repo
        if gitsync.is_remote(repo):
            if settings.dev:
                raise ConfigError(
                    f"--dev follows the files of a local repository, and --repo {gitsync.mask_url(repo)} is a URL; "
                    "clone it and pass the local path with --dev, or drop --dev"
                )
            self.remote = gitsync.RemoteClone.in_state_dir(repo, settings.state_dir.resolve())
            self.repo_path = self.remote.path
        else:
            self.repo_path = Path(repo).resolve()
            if not settings.dev and not (self.repo_path / ".git").exists():
                raise ConfigError(
                    f"--repo {self.repo_path} is not a Git repository; pass a repository path, or use --dev"
                )
        self.objects = gitsync.ObjectCache()
        """Trees and blobs of the last commit read: only what a new commit changed is read from Git."""
        self._lock = threading.Lock()
        self._asked_default = False
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def source(self) -> str:
        """The followed repository as the status and logs show it: its path, or its URL with the password masked."""
        return self.remote.display if self.remote else str(self.repo_path)

    def sync(self) -> bool:
        """Fetch a remote, read the current head and deploy it when it changed; blocking, for a thread.

        Returns whether a new revision was applied. Failures are recorded in ``state.last_error``
        and logged, never raised. When a fetch fails before anything was applied, the commit an
        earlier run fetched is deployed, so a restart while the remote is down still serves.
        """
        with self._lock:
            fetch_error = self._fetch(self.remote) if self.remote else None
            if fetch_error is not None and self.state.head is not None:
                return False
            try:
                info = self._head(refresh=fetch_error is None)
                unchanged = info.sha == self.state.head and not self.settings.dev
                tree = None if unchanged else self._read(info)
            except GitSyncError as exc:
                if fetch_error is None:  # else already recorded, and the reason that matters
                    self._failed(exc)
                return False
            if fetch_error is None:
                self.state.last_sync = datetime.now(UTC)
                self.state.last_error = None
            if tree is None:
                return False
            if fetch_error is not None:
                log.warning("deploying %s, the commit of %s fetched before the failure", info.short, self.source)
            try:
                applied = self.deployer.deploy(info, tree)
            except GitSyncError as exc:  # valid, but it could not be stored: try again at the next sync
                self._failed(exc)
                return False
            self.state.head = info.sha
            return applied

    async def sync_now(self) -> bool:
        """Sync at once in a thread, for ``POST /api/sync``; returns whether a new revision was applied.

        A sync already running (a poll, a webhook) finishes first, then this one runs, so the
        answer reflects the head as it is now. The reason of a failure is in ``state.last_error``.
        """
        return await asyncio.to_thread(self.sync)

    def request_sync(self) -> None:
        """Ask ``watch`` to sync at once (a push webhook); returns without waiting.

        Call it from the event loop thread (another thread works too). Requests made while a
        sync runs coalesce into one more sync after it; a request made before ``watch`` starts
        is served when it starts.
        """
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self._wake.set)
        else:
            self._wake.set()

    async def watch(self, stop: asyncio.Event) -> None:
        """Re-sync until ``stop`` is set: on ``request_sync``, and when the repository may have moved.

        A remote is fetched every ``--poll``; a local repository's refs (with --dev, its files)
        are watched. Each sync runs in a thread, so Git never blocks the event loop.
        """
        pending = self._wake.is_set()
        self._wake = asyncio.Event()  # bound to this loop, whatever loop made the Follower
        if pending:
            self._wake.set()
        self._loop = asyncio.get_running_loop()
        watcher = None if self.remote else asyncio.create_task(self._watch_files(stop))
        poll = self.settings.poll.total_seconds() if self.remote else None
        try:
            while await self._woken(stop, poll):
                self._wake.clear()
                await asyncio.to_thread(self.sync)
        finally:
            self._loop = None
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _woken(self, stop: asyncio.Event, poll: float | None) -> bool:
        """Wait for a request, ``poll`` seconds or ``stop``; False when stopped."""
        waits = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(waits, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return not stop.is_set()

    async def _watch_files(self, stop: asyncio.Event) -> None:
        from watchfiles import DefaultFilter, awatch

        keep: Callable[[Any, str], bool]
        if self.settings.dev:  # an editor may write a file in several steps: wait until it has been quiet a while
            target, keep, step = self.repo_path / self.settings.path, DefaultFilter(), DEV_STEP_MS
        else:  # the default filter drops everything under .git; keep HEAD and the refs, nothing else moves a branch
            target, keep, step = self.repo_path / ".git", _ref_changes, REF_STEP_MS
        # A batch is handed over once nothing changed for ``step`` ms (at most ``debounce`` ms after the
        # first change). Waking early is harmless: a sync first reads the branch's sha and stops there
        # when it has not moved, and a change during a sync wakes it once more after.
        async for _changes in awatch(target, stop_event=stop, debounce=100, step=step, watch_filter=keep):
            self._wake.set()

    def _fetch(self, remote: gitsync.RemoteClone) -> GitSyncError | None:
        try:
            remote.fetch()
        except GitSyncError as exc:
            self._failed(exc)
            return exc
        return None

    def _failed(self, exc: GitSyncError) -> None:
        message = self.remote.mask(str(exc)) if self.remote else str(exc)
        self.state.last_error = message
        self.on_error(message)
        kept = self.deployer.active.info.short if self.deployer.active else "nothing yet"
        retry = f"retrying in {format_duration(self.settings.poll)}" if self.remote else "retrying at the next commit"
        log.error("sync failed: %s (serving %s; %s)", message, kept, retry)

    def _head(self, *, refresh: bool) -> RevisionInfo:
        """The commit the followed branch points at (the working tree with --dev), without reading its files."""
        if self.settings.dev:
            return RevisionInfo("working-tree", "uncommitted files (--dev)")
        ref = self._remote_ref(self.remote, refresh=refresh) if self.remote else self.branch or "HEAD"
        commit = gitsync.commit_info(self.repo_path, ref)
        return RevisionInfo(commit.sha, commit.message, commit.author, commit.committed_at)

    def _read(self, info: RevisionInfo) -> SourceTree:
        if self.settings.dev:
            return read_directory(self.repo_path / self.settings.path, prefix=self.prefix)
        return gitsync.read_commit_tree(
            self.repo_path,
            info.sha,
            self.settings.path,
            prefix=self.prefix,
            source=self.remote.display if self.remote else None,
            cache=self.objects,
        )

    def _remote_ref(self, remote: gitsync.RemoteClone, *, refresh: bool) -> str:
        if self.settings.branch is not None:
            return remote.branch_ref(self.settings.branch)
        if self.branch is None or (refresh and not self._asked_default):  # asked once per process
            self.branch = remote.default_branch(refresh=refresh)
            self._asked_default = refresh
        return remote.branch_ref(self.branch)


def _ref_changes(change: object, path: str) -> bool:
    """Whether a change under ``.git`` can move a branch: HEAD, a ref, packed-refs (not objects, logs, the index)."""
    name = path.replace("\\", "/").rsplit("/.git/", 1)[-1]
    return (name in ("HEAD", "packed-refs") or name.startswith("refs/")) and not name.endswith(".lock")
