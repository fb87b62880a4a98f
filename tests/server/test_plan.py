from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import git, write_repo
from weir.connectors.registry import ConnectorRegistry
from weir.errors import GitSyncError
from weir.server.plan import plan_refs
from weir.workflows.plan import PlanDiff, RouteChange, ScheduleChange, WorkflowChange, diff_revisions
from weir.workflows.source import read_directory
from weir.workflows.validation import Revision, validate_tree

NOW = datetime(2025, 1, 15, 10, 20, 30, 123456, tzinfo=UTC)  # a Wednesday
STEP = """
[[steps]]
id = "hello"
uses = "log"
with = { message = "hi" }
"""
REGISTRY = ConnectorRegistry()


def flow(head: str = "", steps: str = STEP) -> str:
    return head + steps


def plan(repo: Path, base: str | None = "main", head: str = "HEAD", path: str = "workflows") -> tuple[str, bool]:
    return plan_refs(repo, base=base, head=head, path=path, registry=REGISTRY, now=NOW)


def branch(repo: Path, name: str) -> None:
    git(repo, "checkout", "--quiet", "-b", name)


def section(text: str, title: str) -> list[str]:
    """The list items of one ``### title`` section."""
    lines = text.splitlines()
    start = lines.index(f"### {title}") + 2
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("- ")), len(lines))
    return lines[start:end]


def revision(tmp_path: Path, files: dict[str, str]) -> Revision:
    folder = tmp_path / f"tree{len(list(tmp_path.iterdir()))}"
    for relpath, text in files.items():
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_text(text, encoding="utf-8")
    result = validate_tree(read_directory(folder, prefix="workflows/"), REGISTRY)
    assert result.ok(), result.findings
    return result.revision


# --- workflows ---------------------------------------------------------------------------------


def test_plan_lists_added_removed_and_changed_workflows(tmp_path: Path) -> None:
    sync = '[params.region]\ntype = "string"\ndefault = "eu"\n'
    write_repo(
        tmp_path,
        {
            "workflows/old.toml": flow(),
            "workflows/sync.toml": flow(sync, STEP + STEP.replace("hello", "gone")),
            "workflows/same.toml": flow(),
        },
    )
    branch(tmp_path, "feature")
    write_repo(
        tmp_path,
        {
            "workflows/old.toml": None,
            "workflows/new.toml": flow(),
            "workflows/sync.toml": flow(
                'description = "Sync"\n' + sync.replace("eu", "us") + '[params.dry]\ntype = "boolean"\n',
                STEP.replace('"hi"', '"hello"') + STEP.replace("hello", "notify"),
            ),
            "workflows/same.toml": '"$schema" = "../schemas/workflow.schema.json"\n' + flow(),
        },
    )

    text, ok = plan(tmp_path)

    assert ok
    assert section(text, "Workflows") == [
        "- added `new` (`workflows/new.toml`)",
        "- removed `old` (`workflows/old.toml`)",
        "- changed `sync` (`workflows/sync.toml`): description; params added: `dry`; params changed: `region`; "
        "steps added: `notify`; steps removed: `gone`; steps changed: `hello`",
    ]
    assert "### Schedules" not in text
    assert "### Webhook routes" not in text


def test_plan_schedules_in_a_time_zone_exact_markdown(tmp_path: Path) -> None:
    base = write_repo(tmp_path, {"workflows/hello.toml": flow()})
    branch(tmp_path, "feature")
    head = write_repo(
        tmp_path,
        {
            "workflows/report.toml": flow(
                '[[on.schedule]]\ncron = "30 2 * * 1-5"\ntimezone = "Europe/Berlin"\n'
                '\n[[on.schedule]]\nevery = "6h"\ntimezone = "Asia/Tokyo"\n'
            )
        },
    )

    text, ok = plan(tmp_path)

    assert ok
    assert text == (
        f"## weir plan `{base[:7]}..{head[:7]}`\n"
        "\n"
        f"Deploying `HEAD` (`{head[:7]}`) over its merge base with `main` (`{base[:7]}`), directory `workflows`.\n"
        "\n"
        "### Workflows\n"
        "\n"
        "- added `report` (`workflows/report.toml`)\n"
        "\n"
        "### Schedules\n"
        "\n"
        "- added `report`: cron '30 2 * * 1-5' in Europe/Berlin; "
        "next: 2025-01-16T02:30:00+01:00, 2025-01-17T02:30:00+01:00, 2025-01-20T02:30:00+01:00\n"
        "- added `report`: every 6h; "
        "next: 2025-01-15T21:00:00+09:00, 2025-01-16T03:00:00+09:00, 2025-01-16T09:00:00+09:00\n"
    )


def test_plan_schedule_changes_pair_by_timing(tmp_path: Path) -> None:
    write_repo(
        tmp_path,
        {
            "workflows/a.toml": flow('[[on.schedule]]\ncron = "0 2 * * *"\n'),
            "workflows/b.toml": flow('[[on.schedule]]\ncron = "0 2 * * *"\n\n[[on.schedule]]\nevery = "1h"\n'),
            "workflows/c.toml": flow('[[on.schedule]]\ncron = "@daily"\n\n[[on.schedule]]\nevery = "1h"\n'),
            "workflows/gone.toml": flow('[[on.schedule]]\nevery = "1d"\n'),
        },
    )
    branch(tmp_path, "feature")
    write_repo(
        tmp_path,
        {
            "workflows/a.toml": flow('[[on.schedule]]\ncron = "0 3 * * *"\ntimezone = "America/New_York"\n'),
            "workflows/b.toml": flow(
                '[[on.schedule]]\nevery = "1h"\n\n[[on.schedule]]\ncron = "0 2 * * *"\nparams = { x = 1 }\n'
                '\n[params.x]\ntype = "integer"\n'
            ),
            "workflows/c.toml": flow('[[on.schedule]]\nevery = "1h"\n\n[[on.schedule]]\ncron = "@daily"\n'),
            "workflows/gone.toml": None,
        },
    )

    text, _ = plan(tmp_path)

    assert section(text, "Schedules") == [
        "- removed `gone`: every 1d",
        "- changed `a`: cron '0 3 * * *' in America/New_York (was cron '0 2 * * *' in UTC); "
        "next: 2025-01-16T03:00:00-05:00, 2025-01-17T03:00:00-05:00, 2025-01-18T03:00:00-05:00",
        "- changed `b`: cron '0 2 * * *' in UTC; changed: params; "
        "next: 2025-01-16T02:00:00+00:00, 2025-01-17T02:00:00+00:00, 2025-01-18T02:00:00+00:00",
    ]  # c only reordered its schedules: nothing changes


def test_plan_disabled_workflow_schedules_will_not_fire(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/nightly.toml": flow('[[on.schedule]]\ncron = "@daily"\n')})
    branch(tmp_path, "feature")
    write_repo(
        tmp_path,
        {
            "workflows/nightly.toml": flow('enabled = false\n[[on.schedule]]\ncron = "@daily"\n'),
            "workflows/new.toml": flow('enabled = false\n[[on.schedule]]\ncron = "0 6 * * *"\n'),
        },
    )

    text, _ = plan(tmp_path)

    assert section(text, "Workflows") == [
        "- added `new` (`workflows/new.toml`)",
        "- changed `nightly` (`workflows/nightly.toml`): disabled",
    ]
    assert section(text, "Schedules") == [
        "- added `new`: cron '0 6 * * *' in UTC (disabled: will not fire)",
        "- changed `nightly`: cron '@daily' in UTC; changed: workflow disabled (disabled: will not fire)",
    ]


# --- webhook routes ----------------------------------------------------------------------------


def hook(path: str, auth: str = '{ type = "none" }', extra: str = "") -> str:
    return f'[[on.webhook]]\npath = "{path}"\nauth = {auth}\n{extra}'


def test_plan_webhook_route_changes(tmp_path: Path) -> None:
    write_repo(
        tmp_path,
        {
            "workflows/a.toml": flow(hook("alerts") + hook("old")),
            "workflows/b.toml": flow(hook("moving", extra='methods = ["GET"]\n')),
            "workflows/c.toml": flow(hook("c", auth='{ type = "token", token = "{{ secrets.ONE }}" }')),
        },
    )
    branch(tmp_path, "feature")
    write_repo(
        tmp_path,
        {
            "workflows/a.toml": flow(
                hook(
                    "alerts",
                    auth='{ type = "github", secret = "{{ secrets.GH }}" }',
                    extra='methods = ["POST", "PUT"]\n',
                )
                + hook("moving")
            ),
            "workflows/b.toml": flow(hook("/hooks-b/new/")),
            "workflows/c.toml": flow(
                hook("c", auth='{ type = "token", token = "{{ secrets.TWO }}" }', extra='filter = "true"\n')
            ),
        },
    )

    text, ok = plan(tmp_path)

    assert ok
    assert section(text, "Webhook routes") == [
        "- added `POST /hooks/hooks-b/new` → `b`, auth none",
        "- removed `POST /hooks/old` → `a`, auth none",
        "- changed `POST,PUT /hooks/alerts` → `a`, auth github; changed: methods (was POST), auth (was none)",
        "- changed `POST /hooks/c` → `c`, auth token; changed: auth settings, filter",
        "- changed `POST /hooks/moving` → `a`, auth none; changed: workflow (was `b`), methods (was GET)",
    ]
    assert "secrets.TWO" not in text  # auth settings may hold secrets: only key names are shown


# --- refusals, warnings and edge cases ---------------------------------------------------------


def test_plan_refuses_an_invalid_head_with_its_findings(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": flow()})
    branch(tmp_path, "feature")
    head = write_repo(tmp_path, {"workflows/bad.toml": flow('[[on.schedule]]\ncron = "0 25 * * *"\n')})

    text, ok = plan(tmp_path)

    assert not ok
    assert text.splitlines()[4:] == [
        "**Deploying head would be refused:** 1 error. The server would keep running the last good revision.",
        "",
        "```text",
        "workflows/bad.toml:2:1: error W400 hour field '25' is out of range 0-23",
        "```",
    ]
    assert text.startswith(f"## weir plan `{git(tmp_path, 'rev-parse', '--short=7', 'main')}..{head[:7]}`\n")
    assert "### Workflows" not in text


def test_plan_lists_warnings_of_head(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": flow()})
    branch(tmp_path, "feature")
    write_repo(tmp_path, {"workflows/both.toml": flow('[[on.schedule]]\ncron = "0 9 1 * 1"\n')})

    text, ok = plan(tmp_path)

    assert ok
    warnings = text.split("### Warnings\n\n", 1)[1].splitlines()
    assert warnings[0] == "```text"
    assert warnings[1].startswith("workflows/both.toml:2:1: warning W404 cron '0 9 1 * 1' restricts both")
    assert warnings[2] == "```"


def test_plan_with_nothing_to_deploy(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": flow()})
    branch(tmp_path, "feature")
    write_repo(tmp_path, {"README.md": "docs only", "workflows/hello.toml": "# a comment\n" + flow()})

    text, ok = plan(tmp_path)

    assert ok
    assert text.endswith("directory `workflows`.\n\nNo changes to deploy.\n")


def test_plan_base_without_the_automation_directory(tmp_path: Path) -> None:
    write_repo(tmp_path, {"README.md": "start"})
    branch(tmp_path, "feature")
    write_repo(tmp_path, {"workflows/hello.toml": flow(hook("hello"))})

    text, ok = plan(tmp_path)

    assert ok
    assert "`workflows` does not exist at the base: everything in it is new." in text
    assert section(text, "Workflows") == ["- added `hello` (`workflows/hello.toml`)"]
    assert section(text, "Webhook routes") == ["- added `POST /hooks/hello` → `hello`, auth none"]


def test_plan_base_with_errors_is_noted(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": "broken = ["})
    branch(tmp_path, "feature")
    write_repo(tmp_path, {"workflows/hello.toml": flow()})

    text, ok = plan(tmp_path)

    assert ok
    assert "The base has 1 error; workflows that did not load there are shown as added." in text
    assert section(text, "Workflows") == ["- added `hello` (`workflows/hello.toml`)"]


def test_plan_base_schedules_that_never_parsed(tmp_path: Path) -> None:
    write_repo(
        tmp_path,
        {
            "workflows/a.toml": flow('[[on.schedule]]\ncron = "0 25 * * *"\n'),
            "workflows/b.toml": flow('[[on.schedule]]\nevery = "500ms"\n'),
        },
    )
    branch(tmp_path, "feature")
    write_repo(
        tmp_path,
        {
            "workflows/a.toml": flow('[[on.schedule]]\ncron = "0 23 * * *"\n'),
            "workflows/b.toml": flow('[[on.schedule]]\nevery = "5s"\n'),
        },
    )

    text, ok = plan(tmp_path)

    assert ok
    assert "The base has 2 errors; workflows that did not load there are shown as added." in text
    assert section(text, "Schedules") == [
        "- changed `a`: cron '0 23 * * *' in UTC (was cron '0 25 * * *' in UTC); "
        "next: 2025-01-15T23:00:00+00:00, 2025-01-16T23:00:00+00:00, 2025-01-17T23:00:00+00:00",
        "- changed `b`: every 5s (was every 500ms); "
        "next: 2025-01-15T10:20:35+00:00, 2025-01-15T10:20:40+00:00, 2025-01-15T10:20:45+00:00",
    ]


def test_plan_missing_head_directory_is_an_error(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": flow()})

    with pytest.raises(GitSyncError, match="directory 'flows' does not exist in"):
        plan(tmp_path, path="flows")


def test_plan_reads_the_repository_root_and_config_changes(tmp_path: Path) -> None:
    write_repo(tmp_path, {"hello.toml": flow(), "weir.toml": '[connections.old]\ntype = "http"\n'})
    branch(tmp_path, "feature")
    write_repo(
        tmp_path,
        {
            "weir.toml": '[connections.crm]\ntype = "http"\nbase_url = "https://crm.example.com"\n'
            '\n[defaults]\ntimeout = "30s"\n'
        },
    )

    text, ok = plan(tmp_path / "hello.toml", path=".")  # any path inside the repository finds its root

    assert ok
    assert "directory `.`." in text
    assert section(text, "Repo config (`weir.toml`)") == [
        "- connections added: `crm`",
        "- connections removed: `old`",
        "- defaults changed",
    ]


# --- which base ------------------------------------------------------------------------------


def test_plan_default_base_is_main(tmp_path: Path) -> None:
    base = write_repo(tmp_path, {"workflows/hello.toml": flow()})
    branch(tmp_path, "feature")
    write_repo(tmp_path, {"workflows/new.toml": flow()})

    text, _ = plan(tmp_path, base=None)

    assert f"over its merge base with `main` (`{base[:7]}`)" in text
    assert section(text, "Workflows") == ["- added `new` (`workflows/new.toml`)"]


def test_plan_default_base_prefers_origin_head(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    base = write_repo(upstream, {"workflows/hello.toml": flow()})
    git(tmp_path, "clone", "--quiet", str(upstream), "clone")
    clone = tmp_path / "clone"
    write_repo(clone, {"workflows/local.toml": flow()})  # main moved locally; origin/HEAD did not

    text, _ = plan(clone, base=None)

    assert f"over its merge base with `origin/HEAD` (`{base[:7]}`)" in text
    assert section(text, "Workflows") == ["- added `local` (`workflows/local.toml`)"]


def test_plan_without_any_default_base(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet", "--initial-branch=trunk")
    write_repo(tmp_path, {"workflows/hello.toml": flow()})

    with pytest.raises(GitSyncError) as caught:
        plan(tmp_path, base=None)
    assert str(caught.value) == (
        f"no base to compare with: none of origin/HEAD, origin/main, main, origin/master, master exists in "
        f"{tmp_path}; pass --base REF"
    )


def test_plan_compares_with_the_merge_base(tmp_path: Path) -> None:
    fork = write_repo(tmp_path, {"workflows/a.toml": flow()})
    branch(tmp_path, "feature")
    write_repo(tmp_path, {"workflows/b.toml": flow()})
    git(tmp_path, "checkout", "--quiet", "main")
    write_repo(tmp_path, {"workflows/c.toml": flow(hook("c")), "workflows/a.toml": None})  # main moves on

    text, _ = plan(tmp_path, head="feature")

    assert f"(`{fork[:7]}`)" in text
    assert section(text, "Workflows") == ["- added `b` (`workflows/b.toml`)"]  # c and a are not reported
    assert "### Webhook routes" not in text


# --- the pure diff -------------------------------------------------------------------------------


def test_diff_revisions_is_data_for_the_server(tmp_path: Path) -> None:
    old = revision(tmp_path, {"a.toml": flow(hook("a")), "b.toml": flow('[[on.schedule]]\nevery = "1h"\n')})
    new = revision(tmp_path, {"a.toml": flow(STEP.replace("hello", "second")), "b.toml": flow()})

    diff = diff_revisions(old, new, now=NOW)

    assert diff == PlanDiff(
        workflows=(
            WorkflowChange("changed", "a", "workflows/a.toml", ("webhooks", "steps added: `second`")),
            WorkflowChange("changed", "b", "workflows/b.toml", ("schedules",)),
        ),
        schedules=(ScheduleChange("removed", "b", 0, "every 1h", enabled=True),),
        routes=(RouteChange("removed", "a", "a", ("POST",), "none", enabled=True),),
    )
    assert diff_revisions(new, new, now=NOW).empty
    assert not diff.empty


def test_diff_revisions_reports_reordered_steps(tmp_path: Path) -> None:
    two = STEP + STEP.replace("hello", "second")
    old = revision(tmp_path, {"a.toml": flow(steps=two)})
    new = revision(tmp_path, {"a.toml": flow(steps=STEP.replace("hello", "second") + STEP)})

    assert diff_revisions(old, new, now=NOW).workflows == (
        WorkflowChange("changed", "a", "workflows/a.toml", ("steps reordered",)),
    )


def test_diff_revisions_from_nothing(tmp_path: Path) -> None:
    new = revision(tmp_path, {"a.toml": flow('[[on.schedule]]\ncron = "0 12 * * *"\ntimezone = "Asia/Kolkata"\n')})

    diff = diff_revisions(None, new, now=NOW)

    assert diff.workflows == (WorkflowChange("added", "a", "workflows/a.toml"),)
    assert [moment.isoformat() for moment in diff.schedules[0].next_fires] == [
        "2025-01-16T12:00:00+05:30",
        "2025-01-17T12:00:00+05:30",
        "2025-01-18T12:00:00+05:30",
    ]


# --- the command ---------------------------------------------------------------------------------


def weir(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weir", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_plan_prints_the_plan(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": flow()})
    branch(tmp_path, "feature")
    write_repo(tmp_path, {"workflows/new.toml": flow()})

    result = weir(tmp_path, "plan", "--base", "main")

    assert result.returncode == 0, result.stderr
    assert "- added `new` (`workflows/new.toml`)" in result.stdout.splitlines()


def test_cli_plan_fails_when_head_is_invalid(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": flow()})
    branch(tmp_path, "feature")
    write_repo(tmp_path, {"workflows/hello.toml": "broken = ["})

    result = weir(tmp_path / "workflows", "plan", "--base", "main")

    assert result.returncode == 1, result.stderr
    assert "**Deploying head would be refused:** 1 error." in result.stdout


def test_cli_plan_unknown_ref_is_a_usage_error(tmp_path: Path) -> None:
    write_repo(tmp_path, {"workflows/hello.toml": flow()})

    result = weir(tmp_path, "plan", "--base", "mian")

    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"weir plan: ref 'mian' not found in {tmp_path} (did you mean 'main'?); "
        "pass a branch, tag or commit that exists (a remote branch needs a fetch first)\n"
    )
    assert result.stdout == ""
