"""Where the automation directory is, for commands run inside a repository checkout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from weir.connectors.registry import ConnectorRegistry
from weir.errors import ConfigError
from weir.workflows.findings import Finding
from weir.workflows.source import CONFIG_FILE, read_directory
from weir.workflows.validation import validate_tree

DEFAULT_PATH = "workflows"


def repository_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` that holds ``.git``."""
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def automation_dir_of(file: Path) -> Path:
    """The automation directory a workflow file belongs to.

    The nearest ancestor holding ``weir.toml``; else the repository's ``workflows/``
    when the file is inside it; else the file's own directory.
    """
    root = repository_root(file.parent)
    for candidate in file.parents:
        if (candidate / CONFIG_FILE).is_file():
            return candidate
        if candidate == root:
            break
    if root is not None and (root / DEFAULT_PATH) in file.parents:
        return root / DEFAULT_PATH
    return file.parent


def default_automation_dir(cwd: Path) -> Path:
    """``workflows/`` of the repository around ``cwd``; the current directory when that does not exist."""
    root = repository_root(cwd)
    for base in (cwd, root):
        if base is not None and (base / DEFAULT_PATH).is_dir():
            return base / DEFAULT_PATH
    return cwd


def _display_prefix(directory: Path, cwd: Path) -> str:
    try:
        rel = directory.resolve().relative_to(cwd.resolve())
    except ValueError:
        return f"{directory}/"
    return "" if str(rel) == "." else f"{rel.as_posix()}/"


def check_paths(paths: Sequence[str], registry: ConnectorRegistry, *, cwd: Path) -> tuple[list[Finding], int]:
    """Validate the automation directories named by ``paths`` (directories or files).

    A file is checked with the whole directory it belongs to, so subflows, connections
    and unique names are known, but only findings in the named files are returned.
    Returns the findings and the number of workflow/config files checked.
    """
    targets: dict[Path, set[str] | None] = {}
    for raw in paths or [str(default_automation_dir(cwd))]:
        path = (cwd / raw) if not Path(raw).is_absolute() else Path(raw)
        if path.is_dir():
            targets[path.resolve()] = None
        elif path.is_file():
            directory = automation_dir_of(path.resolve())
            selected = targets.setdefault(directory, set())
            if selected is not None:
                selected.add(path.resolve().relative_to(directory).as_posix())
        else:
            raise ConfigError(f"{raw}: no such file or directory; pass an automation directory or workflow files")
    findings: list[Finding] = []
    files = 0
    for directory, selected in targets.items():
        prefix = _display_prefix(directory, cwd)
        tree = read_directory(directory, prefix=prefix)
        result = validate_tree(tree, registry)
        if selected is None:
            findings.extend(result.findings)
            files += sum(1 for _ in tree.documents())
        else:
            shown = {tree.display(p) for p in selected}
            findings.extend(f for f in result.findings if f.location.file in shown)
            files += len(selected)
    return findings, files
