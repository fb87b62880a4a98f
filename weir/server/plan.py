"""``weir plan`` over Git: read the head and base commits and describe what deploying head would change.

The diff itself is pure (``weir.workflows.plan``); this module only reaches Git for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from weir.connectors.registry import ConnectorRegistry
from weir.errors import GitSyncError
from weir.server.gitsync import merge_base, read_commit_tree, resolve_ref
from weir.workflows.findings import Severity
from weir.workflows.plan import DEFAULT_BASES, diff_revisions, render_plan
from weir.workflows.project import repository_root
from weir.workflows.source import display_prefix
from weir.workflows.validation import validate_tree


def plan_refs(
    repo_dir: Path,
    *,
    base: str | None,
    head: str,
    path: str,
    registry: ConnectorRegistry,
    now: datetime | None = None,
) -> tuple[str, bool]:
    """The plan of deploying ``head`` over its merge base with ``base``, as Markdown; ok is False when refused.

    ``base`` defaults to the first of ``DEFAULT_BASES`` that exists. Raises GitSyncError when
    the repository, a ref or head's automation directory cannot be read.
    """
    root = repository_root(repo_dir.resolve())
    if root is None:
        raise GitSyncError(f"{repo_dir} is not inside a Git repository; run weir plan in a clone of the repository")
    base_ref = base or _default_base(root)
    head_sha = resolve_ref(root, head)
    base_sha = resolve_ref(root, base_ref)
    fork = merge_base(root, base_sha, head_sha)
    directory = path.strip("/") or "."
    prefix = display_prefix(directory)

    head_result = validate_tree(read_commit_tree(root, head_sha, directory, prefix=prefix), registry)
    base_sha = fork or base_sha
    notes = [
        f"Deploying `{head}` (`{head_sha[:7]}`) over "
        + (f"its merge base with `{base_ref}`" if fork else f"`{base_ref}` (no common ancestor)")
        + f" (`{base_sha[:7]}`), directory `{directory}`."
    ]
    diff = None
    if head_result.ok():
        base_revision = None
        try:
            base_tree = read_commit_tree(root, base_sha, directory, prefix=prefix)
        except GitSyncError:  # the commit was read above, so the directory is missing there
            notes.append(f"`{directory}` does not exist at the base: everything in it is new.")
        else:
            base_result = validate_tree(base_tree, registry)
            base_revision = base_result.revision
            errors = sum(f.severity is Severity.ERROR for f in base_result.findings)
            if errors:
                notes.append(
                    f"The base has {errors} error{'s' * (errors != 1)}; "
                    "workflows that did not load there are shown as added."
                )
        diff = diff_revisions(base_revision, head_result.revision, now=now or datetime.now(UTC))
    text = render_plan(diff, base=base_sha[:7], head=head_sha[:7], findings=head_result.findings, notes=notes)
    return text, head_result.ok()


def _default_base(root: Path) -> str:
    for candidate in DEFAULT_BASES:
        try:
            resolve_ref(root, candidate)
        except GitSyncError:
            continue
        return candidate
    raise GitSyncError(f"no base to compare with: none of {', '.join(DEFAULT_BASES)} exists in {root}; pass --base REF")
