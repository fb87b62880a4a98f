"""Per-file validation results reused between revisions: same findings as a full validation, less work.

Each revision is a real commit read from a Git repository in a temp folder (or a working tree,
as ``--dev`` reads it). Every validation through the cache is compared with a validation of the
same commit without one, and ``ValidationCache.last`` says which files were parsed and checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_repo
from weir.connectors.registry import ConnectorRegistry
from weir.server.gitsync import ObjectCache, read_commit_tree
from weir.workflows.source import SourceTree, read_directory
from weir.workflows.validation import ValidationCache, validate_tree

REGISTRY = ConnectorRegistry()
FIXTURES = Path(__file__).parent.parent / "fixtures" / "checks"

CONFIG = """\
[connections.warehouse]
type = "db"
url = "sqlite://"
"""

REPORT = """\
description = "Daily report"

[[steps]]
id = "count"
uses = "db.query"
connection = "warehouse"
with = { sql = "select count(*) as n from alerts" }

[[steps]]
id = "notify"
uses = "workflow"
needs = ["count"]
with = { workflow = "notify-team", params = { team = "ops" } }
"""

NOTIFY = """\
[params.team]
type = "string"
required = true

[[steps]]
id = "say"
uses = "log"
with = { message = "hello {{ params.team }}" }
"""

CLEAN = """\
[[steps]]
id = "clean"
uses = "script"
with = { lang = "python", file = "scripts/clean.py" }
"""


def hello(message: str) -> str:
    return f'[[steps]]\nid = "hello"\nuses = "log"\nwith = {{ message = "{message}" }}\n'


FILES = {
    "workflows/weir.toml": CONFIG,
    "workflows/report.toml": REPORT,
    "workflows/notify-team.toml": NOTIFY,
    "workflows/clean.toml": CLEAN,
    "workflows/scripts/clean.py": "print('clean')\n",
    "workflows/hello.toml": hello("hi"),
}


class Follow:
    """Validates the head of a repository as the server does: one object cache, one validation cache."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.objects = ObjectCache()
        self.cache = ValidationCache()

    def commit(self, files: dict[str, str | None]) -> list[str]:
        """Commit ``files``, validate the new head through the caches; its findings, as ``weir check`` prints them.

        Fails when they differ from the findings of the same commit validated without a cache.
        """
        write_repo(self.repo, files)
        tree = read_commit_tree(self.repo, "HEAD", "workflows", prefix="workflows/", cache=self.objects)
        cached = [str(f) for f in validate_tree(tree, REGISTRY, self.cache).findings]
        fresh = read_commit_tree(self.repo, "HEAD", "workflows", prefix="workflows/")
        assert cached == [str(f) for f in validate_tree(fresh, REGISTRY).findings]
        return cached

    @property
    def parsed(self) -> list[str]:
        return self.cache.last.parsed

    @property
    def checked(self) -> list[str]:
        return sorted(self.cache.last.checked)


@pytest.fixture
def follow(tmp_path: Path) -> Follow:
    follow = Follow(tmp_path / "repo")
    assert follow.commit(FILES) == []
    assert follow.parsed == ["clean.toml", "hello.toml", "notify-team.toml", "report.toml"]
    return follow


def test_a_commit_that_changes_one_file_parses_and_checks_that_file_alone(follow: Follow) -> None:
    blobs_read = follow.objects.blob_reads

    findings = follow.commit({"workflows/hello.toml": hello("{{ params.greeting }}")})

    assert findings == [
        "workflows/hello.toml:4:10: error W301 template refers to unknown param 'greeting'; "
        "declare it under [params.greeting]"
    ]
    assert follow.parsed == ["hello.toml"]
    assert follow.checked == ["hello.toml"]
    assert follow.cache.last.reused == 3
    assert follow.objects.blob_reads == blobs_read + 1  # the new hello.toml; the other blobs were read before

    assert follow.commit({"workflows/hello.toml": hello("hi")}) == []
    assert follow.parsed == ["hello.toml"]


def test_a_weir_toml_change_finds_a_problem_in_a_workflow_that_did_not_change(follow: Follow) -> None:
    findings = follow.commit({"workflows/weir.toml": CONFIG.replace("[connections.warehouse]", "[connections.dwh]")})

    assert findings == [
        "workflows/report.toml:6:1: error W210 unknown connection 'warehouse'; "
        "connections are defined in weir.toml (dwh)"
    ]
    assert follow.parsed == []  # the workflow files are the same: parsed before, checked again
    assert follow.checked == ["clean.toml", "hello.toml", "notify-team.toml", "report.toml"]

    assert follow.commit({"workflows/weir.toml": CONFIG}) == []
    assert follow.checked == ["clean.toml", "hello.toml", "notify-team.toml", "report.toml"]
    assert follow.commit({"workflows/weir.toml": CONFIG + "\n# a comment\n"}) == []
    assert follow.checked == ["clean.toml", "hello.toml", "notify-team.toml", "report.toml"]


def test_a_renamed_workflow_is_read_under_its_new_path_and_its_callers_are_checked_again(follow: Follow) -> None:
    findings = follow.commit({"workflows/notify-team.toml": None, "workflows/notify-teams.toml": NOTIFY})

    assert findings == [
        "workflows/report.toml:13:10: error W208 subflow 'notify-team' is not a workflow in this repository "
        "(did you mean 'notify-teams'?)"
    ]
    assert follow.parsed == ["notify-teams.toml"]
    assert follow.checked == ["notify-teams.toml", "report.toml"]  # clean and hello do not call subflows

    follow.commit({"workflows/notify-teams.toml": None, "workflows/notify-team.toml": NOTIFY})
    assert follow.parsed == ["notify-team.toml"]  # as two revisions ago, and only the last two are kept
    assert follow.checked == ["notify-team.toml", "report.toml"]


def test_a_deleted_workflow_and_an_added_one_recheck_the_workflows_that_call_them(follow: Follow) -> None:
    findings = follow.commit({"workflows/notify-team.toml": None})

    assert findings == [
        "workflows/report.toml:13:10: error W208 subflow 'notify-team' is not a workflow in this repository"
    ]
    assert follow.parsed == []
    assert follow.checked == ["report.toml"]

    optional = NOTIFY.replace("required = true", 'default = "all"')
    assert follow.commit({"workflows/notify-team.toml": optional}) == []
    assert follow.parsed == ["notify-team.toml"]
    assert follow.checked == ["notify-team.toml", "report.toml"]

    findings = follow.commit({"workflows/notify-team.toml": NOTIFY.replace('type = "string"', 'type = "integer"')})
    assert findings == [
        "workflows/report.toml:13:47: error W213 the call of 'notify-team' sets param 'team' to a value that "
        "is not of type integer ('ops')"
    ]
    assert follow.checked == ["notify-team.toml", "report.toml"]  # the callee's params changed


def test_an_added_or_removed_script_file_rechecks_the_workflow_that_runs_it(follow: Follow) -> None:
    findings = follow.commit({"workflows/scripts/clean.py": None})

    assert findings == [
        "workflows/clean.toml:4:27: error W503 script file 'scripts/clean.py' does not exist in the automation "
        "directory"
    ]
    assert follow.parsed == []
    assert follow.checked == ["clean.toml"]

    assert follow.commit({"workflows/scripts/clean.py": "print('again')\n"}) == []
    assert follow.checked == ["clean.toml"]
    follow.commit({"workflows/scripts/other.py": "print('other')\n"})
    assert follow.checked == []  # clean.py was found: another script file changes nothing for clean.toml


def test_a_second_workflow_with_the_same_name_is_reported_whatever_the_cache_holds(follow: Follow) -> None:
    findings = follow.commit({"workflows/copy.toml": hello("copy").replace("[[", 'name = "hello"\n[[', 1)})

    assert findings == [
        "workflows/hello.toml:1:1: error W206 workflow name 'hello' is already used by workflows/copy.toml; "
        "set a unique 'name'"
    ]
    assert follow.parsed == ["copy.toml"]


def test_only_the_results_of_the_current_and_the_previous_revision_are_kept(follow: Follow) -> None:
    for text in ("one", "two", "three"):
        follow.commit({"workflows/hello.toml": hello(text)})
        assert len(follow.cache) == 5  # four files now, and hello.toml as the revision before had it

    follow.commit({"workflows/hello.toml": hello("one")})
    assert follow.parsed == ["hello.toml"]  # two revisions ago: dropped


def test_a_working_tree_is_keyed_by_the_content_of_its_files(tmp_path: Path) -> None:
    directory = tmp_path / "workflows"
    directory.mkdir()
    for name, text in (("hello.toml", hello("hi")), ("notify-team.toml", NOTIFY)):
        (directory / name).write_text(text, encoding="utf-8")
    cache = ValidationCache()

    def check() -> list[str]:
        cached = [str(f) for f in validate_tree(read_directory(directory), REGISTRY, cache).findings]
        assert cached == [str(f) for f in validate_tree(read_directory(directory), REGISTRY).findings]
        return cached

    assert check() == []
    (directory / "hello.toml").write_text(hello("hi"), encoding="utf-8")  # saved unchanged
    assert check() == []
    assert cache.last.parsed == []
    (directory / "hello.toml").write_text(hello("{{ oops"), encoding="utf-8")  # same size
    assert check() == [
        "hello.toml:4:10: error W300 template does not parse: unexpected end of template, "
        "expected 'end of print statement'. (line 1)"
    ]
    assert cache.last.parsed == ["hello.toml"]


def _fixture_tree(directory: Path) -> SourceTree:
    return read_directory(directory)  # the same prefix for both versions, so their common files are shared


def test_every_check_fixture_gives_the_same_findings_through_a_cache_that_saw_its_other_version() -> None:
    cache = ValidationCache()
    reused = 0
    for code_dir in sorted(path for path in FIXTURES.iterdir() if path.is_dir()):
        for version in ("good", "bad", "good", "bad"):
            tree = _fixture_tree(code_dir / version)
            cached = [str(f) for f in validate_tree(tree, REGISTRY, cache).findings]
            assert cached == [str(f) for f in validate_tree(_fixture_tree(code_dir / version), REGISTRY).findings], (
                code_dir.name,
                version,
            )
            reused += cache.last.reused
    assert reused > 0


def test_another_connector_registry_empties_the_cache(follow: Follow) -> None:
    other = ConnectorRegistry()
    tree = read_commit_tree(follow.repo, "HEAD", "workflows", prefix="workflows/")
    assert validate_tree(tree, other, follow.cache).findings == []
    assert follow.cache.last.parsed == ["clean.toml", "hello.toml", "notify-team.toml", "report.toml"]
