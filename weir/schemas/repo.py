"""The repo config file ``weir.toml``: connections and defaults shared by every workflow."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import ConfigDict, Field

from weir.schemas.common import Defaults, Duration, StrictModel


class CircuitBreaker(StrictModel):
    """Stop calling a connection that keeps failing."""

    failures: int = Field(5, ge=1, description="Consecutive failures that open the circuit. Default 5.")
    reset: Duration = Field(timedelta(seconds=60), description="How long the circuit stays open. Default 60s.")


class Connection(StrictModel):
    """A named connection. ``type`` picks the connector; the other keys are that connector's settings."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="The connector: http, db, email, slack, pagerduty, llm or an installed plugin.")
    circuit_breaker: CircuitBreaker | None = Field(
        None, description="Open the circuit after N consecutive failures; steps then fail at once."
    )
    rate_limit: str | None = Field(
        None, pattern=r"^\d+(\.\d+)?/(s|m|h)$", description="At most this many calls, e.g. '10/s' or '600/m'."
    )

    def settings(self) -> dict[str, Any]:
        """The connector-specific keys, without type, circuit_breaker and rate_limit."""
        return dict(self.model_extra or {})


class RepoConfig(StrictModel):
    """The optional ``weir.toml`` at the top of the automation directory."""

    schema_url: str | None = Field(None, alias="$schema", description="JSON Schema of this file, for editors.")
    connections: dict[str, Connection] = Field(
        default_factory=dict, description='Connections steps refer to by name with `connection = "name"`.'
    )
    defaults: Defaults | None = Field(None, description="Defaults for every workflow; a workflow's own win.")
    exclude: list[str] = Field(
        default_factory=list,
        description="Glob patterns of *.toml/*.json files that are not workflows, e.g. 'scripts/**/package.json'.",
    )
