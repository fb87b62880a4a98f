from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.helpers import git, write_repo
from weir.connectors.registry import ConnectorRegistry
from weir.errors import GitSyncError
from weir.server.gitsync import (
    RemoteClone,
    _dubious,
    commit_info,
    is_remote,
    mask_url,
    merge_base,
    read_commit_tree,
    resolve_ref,
)
from weir.workflows.validation import validate_tree

HELLO = """\
[[steps]]
id = "hello"
uses = "log"
with = { message = "hi" }
"""


def loaded(repo: Path, ref: str = "HEAD", path: str = "workflows") -> dict[str, bytes]:
    tree = read_commit_tree(repo, ref, path)
    return {relpath: entry.load() for relpath, entry in tree.entries.items() if entry.problem is None}


def test_gitsync_reads_committed_content_not_the_working_tree(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": HELLO, "workflows/sub/deep.json": "{}", "README.md": "hi"})
    (tmp_path / "workflows/hello.toml").write_text("broken = [", encoding="utf-8")
    (tmp_path / "workflows/uncommitted.toml").write_text(HELLO, encoding="utf-8")

    assert loaded(tmp_path) == {"hello.toml": HELLO.encode(), "sub/deep.json": b"{}"}


def test_gitsync_reads_the_commit_a_ref_names(tmp_path: Path) -> None:
    first = write_repo(tmp_path, {"workflows/a.toml": "one"})
    write_repo(tmp_path, {"workflows/a.toml": "two", "workflows/b.toml": "new"})

    assert loaded(tmp_path, first) == {"a.toml": b"one"}
    assert loaded(tmp_path, "HEAD~1") == {"a.toml": b"one"}
    assert loaded(tmp_path, "main") == {"a.toml": b"two", "b.toml": b"new"}


def test_gitsync_entry_sizes_and_lazy_loading(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/a.toml": "12345"})
    tree = read_commit_tree(tmp_path, "HEAD", "workflows", prefix="workflows/")

    assert tree.entries["a.toml"].size == 5
    assert tree.display("a.toml") == "workflows/a.toml"
    assert tree.entries["a.toml"].load() == b"12345"
    assert tree.entries["a.toml"].load() == b"12345"  # loads again on each call


def test_gitsync_reads_the_repository_root_with_dot(tmp_path: Path) -> None:
    write_repo(tmp_path, {"hello.toml": HELLO, "sub/x.json": "{}"})

    assert sorted(read_commit_tree(tmp_path, "HEAD", ".").entries) == ["hello.toml", "sub/x.json"]
    assert sorted(read_commit_tree(tmp_path, "HEAD", "./sub/").entries) == ["x.json"]


def test_gitsync_skips_hidden_files_and_folders(tmp_path: Path) -> None:
    write_repo(
        tmp_path,
        {"workflows/a.toml": "a", "workflows/.hidden.toml": "h", "workflows/.git-crypt/key.json": "k"},
    )

    assert sorted(read_commit_tree(tmp_path, "HEAD", "workflows").entries) == ["a.toml"]


def test_gitsync_symlink_in_the_commit_becomes_w106(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": HELLO, "secret.toml": "token = 'x'"})
    os.symlink("../secret.toml", tmp_path / "workflows/link.toml")
    os.symlink("..", tmp_path / "workflows/up")
    write_repo(tmp_path, {}, message="add links")

    tree = read_commit_tree(tmp_path, "HEAD", "workflows", prefix="workflows/")
    assert tree.entries["link.toml"].problem == "is a symbolic link"
    assert tree.entries["up"].problem == "is a symbolic link"  # not followed as a folder
    findings = validate_tree(tree, ConnectorRegistry()).findings
    # Git does not say whether a link is to a file or a folder: both are reported, neither is followed.
    assert [(f.code, str(f.location)) for f in findings] == [("W106", "workflows/link.toml"), ("W106", "workflows/up")]
    assert all("is a symbolic link" in f.message for f in findings)


def test_gitsync_submodule_is_listed_with_a_problem(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": HELLO})
    git(tmp_path, "update-index", "--add", "--cacheinfo", f"160000,{'a' * 40},workflows/vendor")
    git(tmp_path, "commit", "--quiet", "-m", "add a submodule")

    tree = read_commit_tree(tmp_path, "HEAD", "workflows")
    assert tree.entries["vendor"].problem == "is a submodule"
    assert tree.contains("hello.toml")
    assert not tree.contains("vendor")


def test_gitsync_missing_ref_says_how_to_fix(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": HELLO})

    with pytest.raises(GitSyncError) as caught:
        read_commit_tree(tmp_path, "mian", "workflows")
    assert str(caught.value) == (
        f"ref 'mian' not found in {tmp_path} (did you mean 'main'?); pass a branch, tag or commit that exists "
        "(a remote branch needs a fetch first)"
    )
    for ref in ("HEAD~5", "0" * 40, "HEAD:workflows"):
        with pytest.raises(GitSyncError, match=re.escape(f"ref '{ref}' not found in")):
            resolve_ref(tmp_path, ref)


def test_gitsync_missing_directory_says_how_to_fix(tmp_path: Path) -> None:
    sha = write_repo(tmp_path, {"workflows/hello.toml": HELLO})

    with pytest.raises(GitSyncError) as caught:
        read_commit_tree(tmp_path, "HEAD", "flows")
    assert str(caught.value) == (
        f"directory 'flows' does not exist in HEAD ({sha[:7]}) of {tmp_path}; "
        "commit the automation directory or pass the right --path"
    )
    with pytest.raises(GitSyncError, match=r"'workflows/hello.toml' in HEAD \(\w+\) of .* is a blob, not a directory"):
        read_commit_tree(tmp_path, "HEAD", "workflows/hello.toml")
    with pytest.raises(GitSyncError, match=re.escape("path '../elsewhere' leaves the repository")):
        read_commit_tree(tmp_path, "HEAD", "../elsewhere")


def test_gitsync_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitSyncError, match=r"is not a Git repository; pass the root of a clone"):
        resolve_ref(tmp_path, "HEAD")
    with pytest.raises(GitSyncError, match=r"does not exist; pass the path of a Git clone"):
        resolve_ref(tmp_path / "missing", "HEAD")


def test_gitsync_empty_repository_has_no_head(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet")

    with pytest.raises(GitSyncError, match="ref 'HEAD' not found"):
        resolve_ref(tmp_path, "HEAD")


def test_gitsync_resolve_ref_and_commit_info(tmp_path: Path) -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    sha = write_repo(tmp_path, {"a.toml": "a"}, message="Add the nightly report\n\nWith a body.", when=when)
    git(tmp_path, "tag", "-a", "v1", "-m", "release")

    assert resolve_ref(tmp_path, "HEAD") == sha
    assert resolve_ref(tmp_path, "v1") == sha  # an annotated tag is peeled to its commit
    assert resolve_ref(tmp_path, sha[:8]) == sha
    info = commit_info(tmp_path, "main")
    assert (info.sha, info.short, info.message, info.author) == (sha, sha[:7], "Add the nightly report", "Ada Tester")
    assert info.committed_at == when
    assert info.committed_at.astimezone(UTC) == datetime(2025, 3, 4, 3, 6, 7, tzinfo=UTC)


def test_gitsync_merge_base(tmp_path: Path) -> None:
    fork = write_repo(tmp_path, {"a.toml": "a"})
    git(tmp_path, "checkout", "--quiet", "-b", "feature")
    write_repo(tmp_path, {"b.toml": "b"})
    git(tmp_path, "checkout", "--quiet", "main")
    write_repo(tmp_path, {"c.toml": "c"})
    git(tmp_path, "checkout", "--quiet", "--orphan", "unrelated")
    write_repo(tmp_path, {"d.toml": "d"})

    assert merge_base(tmp_path, "main", "feature") == fork
    assert merge_base(tmp_path, "main", "unrelated") is None


def test_gitsync_reads_a_large_tree(tmp_path: Path) -> None:
    # Not timed (no timed tests); a loop over 1,000 blobs must stay in one `git cat-file` session.
    files = {f"workflows/team{i % 10}/flow{i}.toml": HELLO for i in range(1000)}
    write_repo(tmp_path, files)

    tree = read_commit_tree(tmp_path, "HEAD", "workflows")
    assert len(tree.entries) == 1000
    assert all(entry.load() == HELLO.encode() for entry in tree.entries.values())


def test_gitsync_unreadable_blob_becomes_a_finding(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": HELLO})
    tree = read_commit_tree(tmp_path, "HEAD", "workflows", prefix="workflows/")
    blob = git(tmp_path, "rev-parse", "HEAD:workflows/hello.toml")
    (tmp_path / ".git/objects" / blob[:2] / blob[2:]).unlink()  # a corrupt repository

    with pytest.raises(OSError, match=f"blob {blob} cannot be read from the repository"):
        tree.entries["hello.toml"].load()
    findings = validate_tree(tree, ConnectorRegistry()).findings
    assert [(f.code, str(f.location)) for f in findings] == [("W100", "workflows/hello.toml:1:1")]


@pytest.mark.parametrize(
    ("repo", "remote"),
    [
        ("https://github.com/acme/automation.git", True),
        ("http://git.local/automation", True),
        ("ssh://git@github.com/acme/automation.git", True),
        ("git@github.com:acme/automation.git", True),
        ("file:///srv/git/automation", True),
        (".", False),
        ("/srv/automation", False),
        ("automation@2024", False),
        ("C:/work/automation", False),
    ],
)
def test_gitsync_is_remote(repo: str, remote: bool) -> None:
    assert is_remote(repo) is remote


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("https://ada:tok3n@github.com/acme/a.git", "https://ada:***@github.com/acme/a.git"),
        ("https://tok3n@github.com/acme/a.git", "https://***@github.com/acme/a.git"),
        ("https://x:@host/a", "https://x:***@host/a"),
        ("fetch 'http://u:p%40ss@h:8080/a' failed", "fetch 'http://u:***@h:8080/a' failed"),
        ("ssh://git@github.com/acme/a.git", "ssh://git@github.com/acme/a.git"),
        ("ssh://git:pw@host/a.git", "ssh://git:***@host/a.git"),
        ("git@github.com:acme/a.git", "git@github.com:acme/a.git"),
        (
            "https://github.com/acme/a.git and mail ada@example.com",
            "https://github.com/acme/a.git and mail ada@example.com",
        ),
    ],
)
def test_gitsync_mask_url(text: str, masked: str) -> None:
    assert mask_url(text) == masked


def test_gitsync_remote_clone_folder_depends_on_the_url_without_credentials(tmp_path: Path) -> None:
    clone = RemoteClone.in_state_dir("https://ada:old@github.com/acme/automation.git", tmp_path)

    assert clone.path.parent == tmp_path / "clones"
    assert re.fullmatch(r"automation-[0-9a-f]{16}\.git", clone.path.name)
    assert RemoteClone.in_state_dir("https://ada:new@github.com/acme/automation.git", tmp_path).path == clone.path
    assert RemoteClone.in_state_dir("https://github.com/acme/automation.git", tmp_path).path == clone.path
    assert RemoteClone.in_state_dir("https://github.com/other/automation.git", tmp_path).path != clone.path
    assert RemoteClone.in_state_dir("git@github.com:acme/automation.git", tmp_path).path.name.startswith("automation-")
    assert clone.display == "https://ada:***@github.com/acme/automation.git"
    long = RemoteClone.in_state_dir("https://ada:p%40ssw0rd@host/a.git", tmp_path)
    assert long.mask("tried p@ssw0rd and p%40ssw0rd") == "tried *** and ***"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the repository to another user needs root")
def test_a_repository_of_another_user_is_named_as_such_with_the_command_that_trusts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    repo = tmp_path / "automation"
    write_repo(repo, {"workflows/hello.toml": HELLO})
    shutil.chown(repo, user="nobody")
    empty = tmp_path / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))  # no safe.directory of this machine's user applies
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")

    with pytest.raises(GitSyncError) as info:
        read_commit_tree(repo, "HEAD", "workflows")
    message = str(info.value)
    assert "belongs to another user" in message
    assert f"git config --global --add safe.directory {repo}" in message
    # GitPython's reader may exit before it is written to (a broken pipe instead of git's message): the
    # cause is then asked of git again, and that answer must tell the same story.
    assert _dubious(repo)
    shutil.chown(repo, user="root")
    assert not _dubious(repo)
