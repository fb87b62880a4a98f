"""Read the followed repository: commits, refs and the automation directory of a commit.

What is deployed is what was committed, so files are read as Git objects of a commit, never
from the working tree. A blob's bytes are read only when validation asks for them. Symbolic
links and submodules are listed with a problem instead of being followed, so nothing outside
the automation directory can reach a revision.

A remote repository is mirrored by ``RemoteClone``: a bare clone in the state directory whose
``refs/remotes/origin/*`` a fetch refreshes; its commits are then read like a local repository's.

Every failure to read the repository (no repository, an unknown ref, a missing directory, a
fetch that fails) raises ``GitSyncError`` with a message that says what to fix. A password in
a URL never reaches a message: ``mask_url`` replaces it with ``***``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from weir.errors import GitSyncError
from weir.text import did_you_mean
from weir.workflows.source import SYMLINK, Entry, SourceTree

if TYPE_CHECKING:
    from git import Commit, Repo, Tree

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


_Listing = tuple[tuple[str, str | None, int, str | None], ...]
"""The files below a Git tree: (path relative to it, blob sha, size, problem), hidden ones left out."""
_Listed = tuple[_Listing, frozenset[str]]
"""A tree's listing and the shas of the trees below it (kept in the cache along with it)."""


class ObjectCache:
    """The blobs and trees of the last commit read, by sha, so what did not change is not read from Git again.

    A commit that changes one file of a thousand has 999 blobs and most trees the commit before it
    already had. A sha names an object's content, so the bytes of those blobs and the listings of
    those trees come from here: only the changed blob and the trees above it are read. Reading a
    commit drops what its tree does not hold, so the cache holds at most the objects of one commit
    (and blobs read since).
    """

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._trees: dict[str, _Listed] = {}
        self._lock = threading.Lock()
        self.blob_reads = 0
        """Blobs read from Git so far (the others came from the cache)."""
        self.tree_reads = 0
        """Tree objects read from Git so far."""

    def blob(self, sha: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(sha)

    def put_blob(self, sha: str, data: bytes) -> None:
        with self._lock:
            self._blobs[sha] = data
            self.blob_reads += 1

    def tree(self, sha: str) -> _Listed | None:
        with self._lock:
            return self._trees.get(sha)

    def put_tree(self, sha: str, listing: _Listed) -> None:
        with self._lock:
            self._trees[sha] = listing
            self.tree_reads += 1

    def retain(self, trees: Set[str], blobs: Set[str]) -> None:
        """Forget every tree and blob the commit just read does not hold."""
        with self._lock:
            self._trees = {sha: listing for sha, listing in self._trees.items() if sha in trees}
            self._blobs = {sha: data for sha, data in self._blobs.items() if sha in blobs}

    def __len__(self) -> int:
        with self._lock:
            return len(self._blobs) + len(self._trees)


def read_commit_tree(
    repo_path: Path,
    ref: str,
    path: str,
    *,
    prefix: str = "",
    source: str | None = None,
    cache: ObjectCache | None = None,
) -> SourceTree:
    """The files below ``path`` ("." for the root) in the commit ``ref``, as a SourceTree.

    Hidden files and folders are skipped, as ``read_directory`` does. Raises GitSyncError when
    the ref or the directory does not exist in the commit; its message names the repository as
    ``source`` (a remote's masked URL) when given, else as ``repo_path``. Each entry's ``key`` is
    its blob's sha; with ``cache``, trees and blobs already in it are not read from Git again.
    """
    relpath = _clean_path(path)
    where = source or repo_path
    # Not closed when it succeeds: the entries read their blobs on demand through this Repo, and it
    # closes its ``git cat-file`` processes when the tree is garbage-collected.
    repo = _open(repo_path)
    try:
        commit = _commit(repo, repo_path, ref)
        root = commit.tree
        if relpath != ".":
            try:
                found = commit.tree / relpath
            except KeyError:
                raise GitSyncError(
                    f"directory '{relpath}' does not exist in {ref} ({commit.hexsha[:7]}) of {where}; "
                    "commit the automation directory or pass the right --path"
                ) from None
            if found.type != "tree":
                raise GitSyncError(
                    f"'{relpath}' in {ref} ({commit.hexsha[:7]}) of {where} is a {found.type}, not a directory; "
                    "pass the automation directory with --path"
                )
            root = found
        listing, below = _list(root, cache)
        entries = {
            rel: Entry(size, _loader(repo, sha, cache), key=sha) if sha is not None else Entry(0, bytes, problem)
            for rel, sha, size, problem in listing
        }
        if cache is not None:
            cache.retain(below | {root.hexsha}, {sha for _rel, sha, _size, _problem in listing if sha is not None})
    except BaseException:  # nothing will read through it: stop its git processes now, not at some collection
        repo.close()
        raise
    return SourceTree(entries, prefix)


def _list(tree: Tree, cache: ObjectCache | None) -> tuple[_Listing, frozenset[str]]:
    """Every file below ``tree`` and the shas of the trees below it, from ``cache`` when listed before."""
    if cache is not None and (known := cache.tree(tree.hexsha)) is not None:
        return known
    found: list[tuple[str, str | None, int, str | None]] = []
    below: set[str] = set()
    for item in tree:  # reads this tree object (one ``git cat-file``)
        # Submodule objects cannot tell their .name without a .gitmodules file; .path always works.
        name = PurePosixPath(item.path).name
        if name.startswith("."):
            continue
        if item.type == "tree":
            listing, subtrees = _list(item, cache)
            found += ((f"{name}/{rel}", sha, size, problem) for rel, sha, size, problem in listing)
            below |= subtrees | {item.hexsha}
        elif item.type == "submodule":
            found.append((name, None, 0, "is a submodule"))
        elif item.mode & _MODE_TYPE == _MODE_SYMLINK:
            found.append((name, None, 0, SYMLINK))
        else:
            sha = item.hexsha  # from the tree object; the size needs a look-up, saved when the bytes are cached
            cached = cache.blob(sha) if cache is not None else None
            found.append((name, sha, len(cached) if cached is not None else item.size, None))
    result = (tuple(found), frozenset(below))
    if cache is not None:
        cache.put_tree(tree.hexsha, result)
    return result


def _loader(repo: Repo, sha: str, cache: ObjectCache | None) -> Callable[[], bytes]:
    def load() -> bytes:
        from git.exc import GitError

        if cache is not None and (cached := cache.blob(sha)) is not None:
            return cached
        try:
            data = bytes(repo.odb.stream(bytes.fromhex(sha)).read())
        except (GitError, ValueError) as exc:  # validation turns OSError into a finding about the file
            raise OSError(f"blob {sha} cannot be read from the repository ({exc})") from exc
        if cache is not None:
            cache.put_blob(sha, data)
        return data

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
    except ValueError as exc:
        if "dubious ownership" in str(exc):
            raise _not_trusted(repo_path) from None
    except BrokenPipeError:
        # git's object reader exited before it was asked anything: it may have said why on stderr, but that
        # race is lost, so ask git again in a way that reports it.
        if _dubious(repo_path):
            raise _not_trusted(repo_path) from None
        message = f"git stopped while reading {repo_path}; check that `git -C {repo_path} log` works"
        raise GitSyncError(message) from None
    except (BadName, BadObject, IndexError):
        pass
    else:
        return commit
    hint = did_you_mean(ref, _ref_names(repo))
    raise GitSyncError(
        f"ref '{ref}' not found in {repo_path}{hint}; pass a branch, tag or commit that exists "
        "(a remote branch needs a fetch first)"
    )


def _not_trusted(repo_path: Path) -> GitSyncError:
    return GitSyncError(
        f'git refuses to read {repo_path}: it belongs to another user ("dubious ownership"); '
        f"trust it with: git config --global --add safe.directory {repo_path}"
    )


def _dubious(repo_path: Path) -> bool:
    """Whether git refuses the repository because another user owns it."""
    probe = subprocess.run(  # noqa: S603 - a fixed git command on a path the operator gave
        ["git", "-C", str(repo_path), "rev-parse", "--git-dir"],  # noqa: S607 - git from PATH, as GitPython uses it
        capture_output=True,
        text=True,
        check=False,
    )
    return "dubious ownership" in probe.stderr


def _ref_names(repo: Repo) -> Iterable[str]:
    try:
        return [str(ref.name) for ref in repo.refs]
    except (OSError, ValueError):  # a broken ref must not hide the real error
        return []


# Remote repositories ---------------------------------------------------------------------------

FETCH_TIMEOUT = timedelta(minutes=10)
"""A clone or fetch that takes longer is stopped and reported; the next sync tries again."""

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}  # fail on missing credentials instead of waiting for a prompt nobody sees
_ORIGIN = 'remote "origin"'
_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/\s:@]*)(?::(?P<password>[^/\s@]*))?@")
_AUTH_FAILED = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "permission denied (publickey",
    "returned error: 403",
)
_GENERIC = ("fatal: could not read from remote repository", "please make sure", "and the repository exists")
_NOT_FOUND = ("not found", "does not appear to be a git repository", "does not exist")


def is_remote(repo: str) -> bool:
    """Whether ``--repo`` is a URL (``https://``, ``ssh://``, ``file://``, ``git@host:path``) rather than a path."""
    return "://" in repo or bool(_SCP_LIKE.match(repo))


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    ``https://user:token@host/x`` becomes ``https://user:***@host/x``. An http(s) user without a
    password is masked too (``https://***@host/x``): a token is often passed as the user name.
    """

    def mask(match: re.Match[str]) -> str:
        scheme, user = match["scheme"], match["user"]
        if match["password"] is not None:
            return f"{scheme}{user}:***@"
        return f"{scheme}***@" if scheme.lower() in ("http://", "https://") else match[0]

    return _USERINFO.sub(mask, text)


@dataclass(frozen=True)
class RemoteClone:
    """A bare clone of the remote repository ``url`` at ``path``: ``fetch`` creates it, then refreshes it.

    Every branch of the remote is fetched into ``refs/remotes/origin/*``; nothing is checked out,
    since revisions are read from commits.
    """

    url: str
    path: Path

    @classmethod
    def in_state_dir(cls, url: str, state_dir: Path) -> RemoteClone:
        """The clone of ``url`` in ``state_dir/clones``, named after the URL without its credentials.

        Another URL gets another folder, so changing ``--repo`` never reads a clone of the wrong
        repository, while a new token for the same repository keeps its clone.
        """
        plain = _USERINFO.sub(lambda match: match["scheme"], url.strip())
        digest = hashlib.sha256(plain.encode()).hexdigest()[:16]
        last = re.split(r"[/:]", plain.rstrip("/"))[-1].removesuffix(".git")
        name = re.sub(r"[^\w.-]", "-", last).strip(".-") or "repo"
        return cls(url, state_dir / "clones" / f"{name}-{digest}.git")

    @property
    def display(self) -> str:
        """The URL as logs and the status show it, password masked."""
        return self.mask(self.url)

    def mask(self, text: str) -> str:
        """``text`` without the password of this URL, whether it appears inside a URL or alone."""
        from urllib.parse import unquote, urlsplit

        text = mask_url(text)
        parts = urlsplit(self.url)
        secret = parts.password or (parts.username if parts.scheme in ("http", "https") else None)
        for value in {secret, unquote(secret)} if secret and len(secret) >= 4 else ():
            text = text.replace(value, "***")
        return text

    def fetch(self) -> None:
        """Clone the remote on first use, then fetch every branch; deleted branches are pruned.

        Raises GitSyncError, naming the masked URL, the reason Git gave and what to check.
        """
        import git

        new = not (self.path / "HEAD").is_file()
        try:
            if new:
                self.path.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.init(self.path, bare=True) if new else git.Repo(self.path)
        except OSError as exc:
            raise GitSyncError(
                f"cannot create the clone of {self.display} in {self.path} ({exc.strerror or exc}); "
                "make --state-dir writable"
            ) from None
        except git.InvalidGitRepositoryError:
            raise GitSyncError(
                f"the clone of {self.display} in {self.path} is damaged; delete that folder and weir clones "
                "the repository again at the next sync"
            ) from None
        with repo:
            with repo.config_writer() as config:  # writes the file only when a value changed
                if config.get_value(_ORIGIN, "url", "") != self.url:
                    config.set_value(_ORIGIN, "url", self.url)
                if config.get_value(_ORIGIN, "fetch", "") != _REFSPEC:
                    config.set_value(_ORIGIN, "fetch", _REFSPEC)
            status, err = _run(repo, "fetch", "--prune", "--no-tags", "origin")
        if status != 0:
            raise self._failed("clone" if new else "fetch", err)

    def default_branch(self, *, refresh: bool) -> str:
        """The remote's default branch (its HEAD); ``refresh`` asks the remote, else the last answer is used."""
        with self._open() as repo:
            if refresh:  # when the remote cannot tell, the last answer (if any) stands
                _run(repo, "remote", "set-head", "origin", "--auto")
            status, target = _run(repo, "symbolic-ref", "--quiet", "refs/remotes/origin/HEAD", out=True)
        if status != 0:
            raise GitSyncError(
                f"the default branch of {self.display} is unknown (is the repository empty?); "
                "pass the branch to follow with --branch"
            )
        return target.strip().removeprefix("refs/remotes/origin/")

    def branch_ref(self, branch: str) -> str:
        """``refs/remotes/origin/<branch>``; raises GitSyncError when the remote has no such branch."""
        with self._open() as repo:
            names = sorted(
                ref.path.removeprefix("refs/remotes/origin/")
                for ref in repo.refs
                if ref.path.startswith("refs/remotes/origin/") and ref.path != "refs/remotes/origin/HEAD"
            )
        if branch in names:
            return f"refs/remotes/origin/{branch}"
        if not names:
            raise GitSyncError(f"{self.display} has no branches yet; push the automation repository to it")
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise GitSyncError(
            f"branch '{branch}' not found in {self.display}{did_you_mean(branch, names)}; "
            f"pass --branch with one of its branches ({shown})"
        )

    def _open(self) -> Repo:
        import git

        try:
            return git.Repo(self.path)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError):
            raise GitSyncError(f"{self.display} has not been cloned yet; it is cloned at the next sync") from None

    def _failed(self, action: str, stderr: str) -> GitSyncError:
        lines = [line.strip() for line in self.mask(stderr).splitlines() if line.strip()]
        useful = [line for line in lines if not line.lower().startswith(_GENERIC)] or lines
        reason = next((line for line in useful if line.startswith(("fatal:", "error:"))), useful[0] if useful else "")
        reason = reason.removeprefix("fatal: ").removeprefix("error: ").rstrip(".") or "git gave no reason"
        low = stderr.lower()
        if any(words in low for words in _AUTH_FAILED):
            hint = "check the credentials: the token in the URL (as user:TOKEN@host) or the SSH key of weir's user"
        elif low.startswith("timeout:"):
            hint = f"the remote did not answer within {FETCH_TIMEOUT}; check the network"
        elif any(words in low for words in _NOT_FOUND):
            hint = "check the URL: there is no repository there, or these credentials cannot see it"
        else:
            hint = "check the URL and that this machine reaches the remote (network, proxy, DNS)"
        return GitSyncError(f"cannot {action} {self.display}: {reason}; {hint}")


def _run(repo: Repo, *args: str, out: bool = False) -> tuple[int, str]:
    """Run ``git args`` in ``repo``: the exit status and stderr (stdout with ``out``); never raises on failure."""
    status, stdout, stderr = repo.git.execute(
        ["git", *args],
        with_extended_output=True,
        with_exceptions=False,
        kill_after_timeout=FETCH_TIMEOUT.total_seconds(),
        env=_GIT_ENV,
    )
    return status, stdout if out else stderr
