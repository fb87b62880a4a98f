"""The README's server (the example workflows) renders every UI page a newcomer opens first."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.helpers import write_repo
from tests.server.serve_process import ServeProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "workflows"


def test_the_example_repository_renders_its_workflow_pages(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo / "workflows")
    write_repo(repo, {}, message="examples")
    process = ServeProcess(repo, tmp_path / "state").start()
    try:
        home = httpx.get(f"{process.url}/")
        assert home.status_code == 200
        names = [p.stem for p in (repo / "workflows").rglob("*.toml") if p.name != "weir.toml"]
        assert all(name in home.text for name in names)
        assert "every" in home.text  # interval schedules render as well as cron ones
        for name in ("event-stats", "hello", "refund-approval"):
            assert httpx.get(f"{process.url}/workflows/{name}").status_code == 200
        assert httpx.get(f"{process.url}/runs").status_code == 200
    finally:
        process.kill()
