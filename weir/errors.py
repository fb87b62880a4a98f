"""The exceptions weir raises at run time.

Bad workflow files are not exceptions: validation returns findings (see
``weir.workflows.findings``). Exceptions are for failures while running::

    WeirError
     ├── ConfigError            bad command-line or repo settings
     │    └── SecretMissing     a template names a secret nobody provided
     ├── ConnectorNotFound      (also LookupError) ``uses`` names no installed connector
     ├── ActionError            an action failed; ``kind`` says how
     │    ├── TransientError    worth retrying: timeouts, connection errors, 429/5xx
     │    │    └── CircuitOpen  the connection's circuit breaker is open
     │    └── PermanentError    retrying will not help: 4xx, bad SQL, auth
     ├── TemplateError          a template failed to parse or render
     ├── WorkflowNotFound       (also LookupError) no workflow of that name in the revision
     ├── ParamsInvalid          params of a run do not fit the workflow's [params] (HTTP 422)
     ├── GitSyncError           the followed repository could not be read
     ├── StoreError             the run database failed
     └── RunCancelled           the run was cancelled while a step ran
"""

from __future__ import annotations


class WeirError(Exception):
    """Raised for any failure weir reports at run time; the root of the tree."""


class ConfigError(WeirError):
    """Raised when settings or repo configuration cannot be used as given."""


class SecretMissing(ConfigError):
    """Raised when a template refers to a secret that is neither in the environment nor the secrets file."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        self.where = where
        place = f" (used by {where})" if where else ""
        super().__init__(
            f"secret '{name}'{place} is not set: export WEIR_SECRET_{name} or add {name} to the --secrets-file"
        )


class ConnectorNotFound(WeirError, LookupError):
    """Raised when a step's ``uses`` names a connector or action that is not installed."""


class ActionError(WeirError):
    """Raised when an action fails; ``kind`` is what ``retry.on`` matches against."""

    kind = "permanent"

    def __init__(self, message: str, *, connection: str | None = None, action: str | None = None) -> None:
        super().__init__(message)
        self.connection = connection
        self.action = action


class TransientError(ActionError):
    """Raised for failures that may pass on a later attempt (timeouts, connection errors, HTTP 429/5xx)."""

    kind = "transient"

    def __init__(
        self,
        message: str,
        *,
        connection: str | None = None,
        action: str | None = None,
        retry_after: float | None = None,
        timeout: bool = False,
    ) -> None:
        super().__init__(message, connection=connection, action=action)
        self.retry_after = retry_after
        if timeout:
            self.kind = "timeout"


class CircuitOpen(TransientError):
    """Raised instead of calling a connection whose circuit breaker is open."""

    kind = "circuit_open"


class PermanentError(ActionError):
    """Raised for failures that the same call will hit again (HTTP 4xx, bad SQL, rejected credentials)."""

    kind = "permanent"


class TemplateError(WeirError):
    """Raised when a template or expression cannot be parsed or rendered."""


class WorkflowNotFound(WeirError, LookupError):
    """Raised when a run names a workflow that the revision does not have."""


class ParamsInvalid(WeirError):
    """Raised when the params of a run do not fit the workflow's ``[params]``; ``problems`` maps name to reason."""

    def __init__(self, workflow: str, problems: dict[str, str]) -> None:
        self.workflow = workflow
        self.problems = problems
        details = "; ".join(f"param '{name}' {reason}" for name, reason in problems.items())
        super().__init__(f"params of workflow '{workflow}' are invalid: {details}")


class GitSyncError(WeirError):
    """Raised when the followed repository cannot be cloned, fetched or read."""


class StoreError(WeirError):
    """Raised when the run database cannot be reached or refuses a write."""


class StoreUnavailable(StoreError):
    """Raised when the run database does not answer (down, restarting, unreachable): nothing was written.

    Callers answer 503 (webhooks, API) or leave a run to be resumed once its lease expires (executor).
    """


class RunCancelled(WeirError):
    """Raised inside a running step when its run has been cancelled."""
