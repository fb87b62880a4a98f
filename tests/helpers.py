"""Test helpers: real Git repositories in a temporary folder.

Git runs with a fixed identity and without the user's global or system config, so a
signing hook or a different default branch on the developer's machine changes nothing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run ``git`` in ``repo`` and return its stdout without the trailing newline; fail loudly on errors."""
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **_GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.rstrip("\n")


def write_repo(
    root: Path,
    files: Mapping[str, str | None],
    *,
    message: str = "update",
    when: datetime | None = None,
) -> str:
    """Write ``files`` (relative path -> text; None deletes) into the repository at ``root`` and commit.

    The repository is created, on branch ``main``, when ``root`` holds none yet. Everything in
    the folder is committed, as ``git add -A`` does. Returns the new commit's full sha.
    """
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".git").exists():
        git(root, "init", "--quiet", "--initial-branch=main")
    for relpath, text in files.items():
        path = root / relpath
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(root, "add", "--all")
    dates = {"GIT_AUTHOR_DATE": when.isoformat(), "GIT_COMMITTER_DATE": when.isoformat()} if when else {}
    git(root, "commit", "--quiet", "--allow-empty", "--message", message, env=dates)
    return git(root, "rev-parse", "HEAD")


_GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Ada Tester",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Tester",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_TERMINAL_PROMPT": "0",
}
