"""A connector from a third-party package is found through its entry point and works like a built-in.

The test writes a tiny distribution, ``weir-greeter``, into a temporary folder: its own
``pyproject.toml`` declares the connector under ``[project.entry-points."weir.connectors"]``, as
weir's own pyproject does for the built-ins. pip installs it into a folder of its own
(``--target``); the ``weir`` command then runs in a subprocess with that folder on
``PYTHONPATH``, so the connector can only be found the way an installed plugin is: through the
distribution's metadata (``importlib.metadata``).

The package builds with a PEP 517 backend of a few lines that ships inside it
(``backend-path``), so neither setuptools nor wheel has to be installed, nor anything fetched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weir.testing import write_files

PACKAGE = {
    "pyproject.toml": """
        [build-system]
        requires = []
        build-backend = "wheelmaker"
        backend-path = ["_build"]

        [project]
        name = "weir-greeter"
        version = "1.2.0"
        description = "Greets people: a third-party connector for weir"
        requires-python = ">=3.11"

        [project.entry-points."weir.connectors"]
        greeter = "weir_greeter:GreeterConnector"
    """,
    "weir_greeter/__init__.py": '''
        """The greeter connector: ``greeter.greet`` says hello with the connection's greeting."""

        from pydantic import BaseModel, Field

        from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action


        class GreeterConnection(ConnectionSettings):
            """Settings of a greeter connection."""

            greeting: str = Field("Hello", description="The word to greet with. Default Hello.")


        class Greet(ActionInput):
            """Input of greeter.greet."""

            name: str = Field(description="Who to greet.")
            times: int = Field(1, ge=1, le=3, description="How often to say it (1 to 3).")


        class Greeting(BaseModel):
            """Output of greeter.greet."""

            text: str = Field(description="The greeting.")
            step: str = Field(description="The step that asked for it.")


        class GreeterConnector(Connector[GreeterConnection]):
            """Greets people."""

            name = "greeter"
            connection_model = GreeterConnection

            @action("greet", input=Greet, output=Greeting, idempotent=True)
            async def greet(self, ctx: ActionContext, inp: Greet) -> Greeting:
                """Greet someone by name."""
                text = " ".join([f"{self.connection.greeting}, {inp.name}!"] * inp.times)
                return Greeting(text=text, step=ctx.step_id)
    ''',
    "_build/wheelmaker.py": '''
        """A PEP 517 backend that builds this package's wheel from pyproject.toml with the standard library."""

        import base64
        import hashlib
        import tomllib
        import zipfile
        from pathlib import Path


        def get_requires_for_build_wheel(config_settings=None):
            return []


        def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
            project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
            module, version = project["name"].replace("-", "_"), project["version"]
            info = f"{module}-{version}.dist-info"
            files = {path.as_posix(): path.read_bytes() for path in sorted(Path(module).rglob("*.py"))}
            files[f"{info}/METADATA"] = (
                f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {version}\\n"
                f"Summary: {project['description']}\\n"
            ).encode()
            files[f"{info}/WHEEL"] = (
                b"Wheel-Version: 1.0\\nGenerator: wheelmaker\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
            )
            files[f"{info}/entry_points.txt"] = "".join(
                f"[{group}]\\n" + "".join(f"{name} = {target}\\n" for name, target in targets.items()) + "\\n"
                for group, targets in project["entry-points"].items()
            ).encode()
            record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in files.items()]
            files[f"{info}/RECORD"] = "\\n".join([*record, f"{info}/RECORD,,", ""]).encode()
            name = f"{module}-{version}-py3-none-any.whl"
            with zipfile.ZipFile(Path(wheel_directory) / name, "w") as wheel:
                for path, data in files.items():
                    wheel.writestr(path, data)
            return name


        def _digest(data):
            return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    ''',
}

CONFIG = """
    [connections.friendly]
    type = "greeter"
    greeting = "Howdy"
"""

GREET = """
    [params.name]
    type = "string"
    required = true

    [[steps]]
    id = "hello"
    uses = "greeter.greet"
    connection = "friendly"
    with = {{ name = "{{{{ params.name }}}}", {extra} }}

    [outputs]
    text = "{{{{ steps.hello.output.text }}}}"
    step = "{{{{ steps.hello.output.step }}}}"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that holds weir-greeter as pip installed it."""
    root = tmp_path_factory.mktemp("third-party")
    package, target = root / "weir-greeter", root / "site"
    write_files(package, PACKAGE)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation"]
    result = subprocess.run(
        [*pip, "--disable-pip-version-check", "--target", str(target), str(package)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def weir(site: Path | None, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``weir`` command; with ``site``, the installed package is on its path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WEIR_", "PYTHONPATH"))}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-m", "weir", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=60
    )


def test_third_party_package_is_installed_with_its_entry_point(site: Path) -> None:
    installed = sorted(path.name for path in site.iterdir() if not path.name.startswith("__"))
    assert installed == ["weir_greeter", "weir_greeter-1.2.0.dist-info"]
    entry_points = (site / "weir_greeter-1.2.0.dist-info" / "entry_points.txt").read_text()
    assert entry_points.splitlines()[:2] == ["[weir.connectors]", "greeter = weir_greeter:GreeterConnector"]


def test_third_party_connector_is_listed_with_its_input_schema(site: Path, tmp_path: Path) -> None:
    listing = weir(site, "connectors", cwd=tmp_path)
    detail = weir(site, "connectors", "greeter", "--json", cwd=tmp_path)

    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert 'greeter (connection type "greeter"):' in lines
    assert "  greeter.greet            Greet someone by name." in lines
    assert 'slack (connection type "slack"):' in lines  # next to the built-ins
    assert detail.returncode == 0, detail.stderr
    [connector] = json.loads(detail.stdout)["connectors"].values()
    assert connector["connection_schema"]["properties"]["greeting"]["default"] == "Hello"
    greet = connector["actions"]["greet"]
    assert (greet["uses"], greet["description"], greet["idempotent"]) == (
        "greeter.greet",
        "Greet someone by name.",
        True,
    )
    schema = greet["input_schema"]
    assert schema["required"] == ["name"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["name"] == {"description": "Who to greet.", "title": "Name", "type": "string"}
    assert schema["properties"]["times"] == {
        "default": 1,
        "description": "How often to say it (1 to 3).",
        "maximum": 3,
        "minimum": 1,
        "title": "Times",
        "type": "integer",
    }


def test_third_party_connector_inputs_are_checked_against_its_model(site: Path, tmp_path: Path) -> None:
    write_files(
        tmp_path / "workflows",
        {
            "weir.toml": CONFIG,
            "typo.toml": GREET.format(extra="tiems = 2"),
            "too-many.toml": GREET.format(extra="times = 4"),
        },
    )
    checked = weir(site, "check", "workflows", cwd=tmp_path)
    without = weir(None, "check", "workflows", cwd=tmp_path)

    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        "workflows/too-many.toml:10:38: error W501 key 'times' in 'with' of step 'hello' (greeter.greet):"
        " Input should be less than or equal to 3",
        "workflows/typo.toml:10:38: error W501 unknown key 'tiems' in 'with' of step 'hello' (greeter.greet)"
        " (did you mean 'times'?)",
    ]
    # without the package on the path, the same files name a connector nobody installed
    assert without.returncode == 1
    assert "error W601 " in without.stdout
    assert "error W500 " in without.stdout


def test_third_party_connector_runs_in_a_workflow(site: Path, tmp_path: Path) -> None:
    write_files(tmp_path / "workflows", {"weir.toml": CONFIG, "greet.toml": GREET.format(extra="times = 2")})
    run = weir(site, "run", "greet", "-p", "name=Ada", "--path", "workflows", cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {"text": "Howdy, Ada! Howdy, Ada!", "step": "hello"}
