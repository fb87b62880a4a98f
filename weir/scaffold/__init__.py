"""``weir init``: a new automation repository with an example workflow and CI that runs ``weir check``."""

from __future__ import annotations

import subprocess
from importlib.resources import files
from pathlib import Path

from weir.errors import ConfigError
from weir.schemas.export import SCHEMA_FILES

# source file in weir/scaffold/files -> path in the new repository
LAYOUT = {
    "weir.toml": "workflows/weir.toml",
    "hello.toml": "workflows/hello.toml",
    "github-check.yml": ".github/workflows/weir-check.yml",
    "pre-commit-config.yaml": ".pre-commit-config.yaml",
}


def scaffold(target: Path) -> list[Path]:
    """Write the starter files into ``target`` (created if needed) and ``git init`` it when it is no repository.

    Refuses to overwrite: when any file already exists, nothing is written.
    """
    existing = [rel for rel in LAYOUT.values() if (target / rel).exists()]
    existing += [f"schemas/{name}" for name in SCHEMA_FILES if (target / "schemas" / name).exists()]
    if existing:
        raise ConfigError(
            f"{target}: {', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "weir init writes only into a directory without them"
        )
    source = files("weir.scaffold") / "files"
    created = []
    for name, rel in LAYOUT.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
        created.append(path)
    from weir.schemas.export import write_schemas

    created.extend(write_schemas(target / "schemas"))  # for the #:schema / $schema lines of editors
    if not _inside_git(target):
        subprocess.run(["git", "init", "-q", str(target)], check=True)  # noqa: S603, S607 - fixed argv, no shell
    return created


def _inside_git(path: Path) -> bool:
    return any((candidate / ".git").exists() for candidate in (path.resolve(), *path.resolve().parents))
