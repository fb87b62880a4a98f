"""Read the followed repository: commits, refs and the automation directory of a commit.

What is deployed is what was committed, so files are read as Git objects of a commit, never
from the working tree. A blob's bytes are read only when validation asks for them. Symbolic
links and submodules are listed with a problem instead of being followed, so nothing outside
the automation directory can reach a revision.

Every failure to read the repository (no repository, an unknown ref, a missing directory)
raises ``GitSyncError`` with a message that says what to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from weir.errors import GitSyncError
from weir.text import did_you_mean
from weir.workflows.source import SYMLINK, Entry, SourceTree

if TYPE_CHECKING:
    from git import Blob, Commit, Repo, Tree

_MODE_TYPE = 0o170000
_MODE_SYMLINK = 0o120000


@dataclass(frozen=True)
class CommitInfo:
    """What a person needs to recognise a commit."""

    sha: str
    """The full 40-digit hex sha."""
    short: str
    """The first 7 hex digits, as shown in headings and logs."""
    message: str
    """The first line of the commit message."""
    author: str
    """The author's name."""
    committed_at: datetime
    """When it was committed, aware, in the committer's offset."""


def resolve_ref(repo_path: Path, ref: str) -> str:
    """The full sha of the commit ``ref`` names (a branch, tag, remote branch, sha or ``HEAD~1``)."""
    with _open(repo_path) as repo:
        return str(_commit(repo, repo_path, ref).hexsha)


def commit_info(repo_path: Path, ref: str) -> CommitInfo:
    """Sha, first message line, author and commit time of ``ref``."""
    with _open(repo_path) as repo:
        commit = _commit(repo, repo_path, ref)
        message = commit.message if isinstance(commit.message, str) else commit.message.decode("utf-8", "replace")
        lines = message.strip().splitlines()
        return CommitInfo(
            sha=commit.hexsha,
            short=commit.hexsha[:7],
            message=lines[0] if lines else "",
            author=str(commit.author.name or ""),
            committed_at=commit.committed_datetime,
        )


def merge_base(repo_path: Path, a: str, b: str) -> str | None:
    """The sha of the best common ancestor of two refs, as a pull request's diff uses; None when unrelated."""
    with _open(repo_path) as repo:
        first, second = _commit(repo, repo_path, a), _commit(repo, repo_path, b)
        bases = repo.merge_base(first, second)
        return str(bases[0].hexsha) if bases and bases[0] is not None else None


def read_commit_tree(repo_path: Path, ref: str, path: str, *, prefix: str = "") -> SourceTree:
    """The files below ``path`` ("." for the root) in the commit ``ref``, as a SourceTree.

    Hidden files and folders are skipped, as ``read_directory`` does. Raises GitSyncError when
    the ref or the directory does not exist in the commit.
    """
    relpath = _clean_path(path)
    # Not closed here: the entries read their blobs on demand through this Repo, and it closes
    # its ``git cat-file`` processes when the tree is garbage-collected.
    repo = _open(repo_path)
    commit = _commit(repo, repo_path, ref)
    root = commit.tree
    if relpath != ".":
        try:
            found = commit.tree / relpath
        except KeyError:
            raise GitSyncError(
                f"directory '{relpath}' does not exist in {ref} ({commit.hexsha[:7]}) of {repo_path}; "
                "commit the automation directory or pass the right --path"
            ) from None
        if found.type != "tree":
            raise GitSyncError(
                f"'{relpath}' in {ref} ({commit.hexsha[:7]}) of {repo_path} is a {found.type}, not a directory; "
                "pass the automation directory with --path"
            )
        root = found
    entries: dict[str, Entry] = {}
    _walk(root, "", entries)
    return SourceTree(entries, prefix)


def _walk(tree: Tree, base: str, entries: dict[str, Entry]) -> None:
    for item in tree:
        # Submodule objects cannot tell their .name without a .gitmodules file; .path always works.
        name = PurePosixPath(item.path).name
        if name.startswith("."):
            continue
        rel = f"{base}{name}"
        if item.type == "tree":
            _walk(item, f"{rel}/", entries)
        elif item.type == "submodule":
            entries[rel] = Entry(0, bytes, "is a submodule")
        elif item.mode & _MODE_TYPE == _MODE_SYMLINK:
            entries[rel] = Entry(0, bytes, SYMLINK)
        else:
            entries[rel] = Entry(item.size, _loader(item))


def _loader(blob: Blob) -> Callable[[], bytes]:
    def load() -> bytes:
        from git.exc import GitError

        try:
            return bytes(blob.data_stream.read())
        except (GitError, ValueError) as exc:  # validation turns OSError into a finding about the file
            raise OSError(f"blob {blob.hexsha} cannot be read from the repository ({exc})") from exc

    return load


def _clean_path(path: str) -> str:
    raw = path.replace("\\", "/")
    clean = PurePosixPath(raw or ".")
    if clean.is_absolute() or ".." in clean.parts:
        raise GitSyncError(
            f"path '{path}' leaves the repository; pass the automation directory relative to the repository root"
        )
    return clean.as_posix()


def _open(repo_path: Path) -> Repo:
    import git

    try:
        return git.Repo(repo_path)
    except git.NoSuchPathError:
        raise GitSyncError(f"repository {repo_path} does not exist; pass the path of a Git clone") from None
    except git.InvalidGitRepositoryError:
        raise GitSyncError(
            f"{repo_path} is not a Git repository; pass the root of a clone (the folder holding .git)"
        ) from None


def _commit(repo: Repo, repo_path: Path, ref: str) -> Commit:
    from git.exc import BadName, BadObject

    try:
        commit = repo.commit(ref)
        commit.tree  # noqa: B018 - a full sha is taken on trust until the object is read
    except (BadName, BadObject, ValueError, IndexError):
        pass
    else:
        return commit
    hint = did_you_mean(ref, _ref_names(repo))
    raise GitSyncError(
        f"ref '{ref}' not found in {repo_path}{hint}; pass a branch, tag or commit that exists "
        "(a remote branch needs a fetch first)"
    )


def _ref_names(repo: Repo) -> Iterable[str]:
    try:
        return [str(ref.name) for ref in repo.refs]
    except (OSError, ValueError):  # a broken ref must not hide the real error
        return []
