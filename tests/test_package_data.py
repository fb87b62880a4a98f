"""Every file the package needs at run time is installed with it (package data in pyproject.toml)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_non_python_file_of_the_package_is_listed_as_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["weir"]
    package = ROOT / "weir"
    missing = [
        str(path.relative_to(package))
        for path in package.rglob("*")
        if path.is_file()
        and path.suffix not in (".py", ".pyc")
        and "__pycache__" not in path.parts
        and not any(fnmatch.fnmatch(path.name, pattern.removeprefix("**/")) for pattern in patterns)
    ]
    assert missing == [], f"not installed with the package (add a pattern to package-data): {missing}"
