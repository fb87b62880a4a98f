"""Process settings of ``weir serve`` and ``weir worker``: command-line flags > WEIR_* environment > defaults.

Built once in ``weir.cli`` and passed down; nothing below reads the environment for them.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from weir.errors import ConfigError
from weir.schemas.common import Duration, parse_size

Size = Annotated[int, BeforeValidator(parse_size)]


class ServeSettings(BaseSettings):
    """Everything ``weir serve`` needs to start."""

    model_config = SettingsConfigDict(env_prefix="WEIR_", extra="ignore", frozen=True)

    repo: str = Field(".", description="Local repository path or remote URL to follow.")
    branch: str | None = Field(None, description="Branch to follow; default: the repository's current branch.")
    path: str = Field("workflows", description="Automation directory inside the repository ('.' for the root).")
    db: str | None = Field(None, description="Database URL; default: SQLite in the state directory.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on.")
    workers: int = Field(4, ge=1, description="Runs executed at once by this process.")
    state_dir: Path = Field(Path(".weir"), description="Where the SQLite database and clones live.")
    secrets_file: Path | None = Field(None, description="TOML or .env file with secrets.")
    api_token: SecretStr | None = Field(None, description="Bearer token required by /api/*.")
    metrics_token: SecretStr | None = Field(None, description="Bearer token required by /metrics.")
    dev: bool = Field(False, description="Follow the working tree instead of commits and reload on save.")
    poll: Duration = Field(timedelta(seconds=60), description="How often a remote repository is fetched.")
    git_webhook_secret: SecretStr | None = Field(None, description="Secret of GitHub push events on /hooks/_git.")
    lease: Duration = Field(
        timedelta(seconds=30),
        description="How long a claimed run stays with its process without renewal (renewed every third of it); "
        "a dead replica's runs are taken over once it passed.",
    )
    db_wait: Duration = Field(
        timedelta(seconds=60), description="How long to wait at start for a database that does not answer yet."
    )
    max_body: Size = Field(1024 * 1024, description="Largest webhook body accepted.")
    max_queued: int = Field(
        50_000, ge=0, description="Queued runs above which webhooks are refused with 503 and Retry-After (0: no limit)."
    )
    keep_runs: Duration = Field(timedelta(days=30), description="Finished runs older than this are pruned.")
    public_url: str | None = Field(None, description="Base URL of this server as callers see it.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")

    @model_validator(mode="after")
    def _lease_long_enough(self) -> ServeSettings:
        if self.lease < timedelta(seconds=1):
            raise ValueError(f"--lease {self.lease.total_seconds():g}s is too short: use 1s or more (default 30s)")
        return self

    @model_validator(mode="after")
    def _token_for_public_host(self) -> ServeSettings:
        if self.api_token is None and not is_loopback(self.host):
            raise ValueError(
                f"--host {self.host} would expose the API without a token: set --api-token (or WEIR_API_TOKEN), "
                "or listen on 127.0.0.1"
            )
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_settings(**flags: Any) -> ServeSettings:
    """Settings from command-line flags (None means not given) over WEIR_* variables and defaults."""
    given = {key: value for key, value in flags.items() if value is not None and value is not False}
    try:
        return ServeSettings(**given)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {str(e['msg']).removeprefix('Value error, ')}"
                for e in errors()
            )
            raise ConfigError(problems) from None
        raise ConfigError(str(exc)) from None
