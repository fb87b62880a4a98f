"""The connector abstraction: a small declarative class per external system.

A connector names itself, declares the model of its connection settings, and
marks its actions with ``@action``. Each action takes an ``ActionContext`` and a
validated input model and returns its output (a pydantic model or plain JSON)::

    class SlackConnector(Connector[SlackConnection]):
        name = "slack"
        connection_model = SlackConnection

        @action("post_message", input=PostMessage, output=PostMessageResult)
        async def post_message(self, ctx: ActionContext, inp: PostMessage) -> PostMessageResult: ...

The engine creates one connector instance per connection (its settings rendered,
secrets resolved) and reuses it across steps, so instances hold pools and clients;
``aclose`` releases them. Failures are raised as ``TransientError`` (worth a retry)
or ``PermanentError`` from ``weir.errors``.
"""

from __future__ import annotations

import logging
from abc import ABC
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

from weir.schemas.common import parse_size

ConnT = TypeVar("ConnT", bound=BaseModel)
ActionFunc = Callable[[Any, "ActionContext", Any], Awaitable[Any]]


class ActionInput(BaseModel):
    """Base of action input models: unknown keys are errors, so typos in ``with`` are caught.

    Rendered inputs may hold secrets, so ``str(ValidationError)`` leaves the values out.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)


class ConnectionSettings(BaseModel):
    """Base of connection models: unknown keys are errors; use SecretStr for credentials.

    ``str(ValidationError)`` leaves the values out, so a bad setting never prints a secret.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}], "examples": ["10MiB"]}),
]
"""A number of bytes in a connection model, written as ``1048576``, ``"1MiB"`` or ``"512KiB"``."""


def format_size(size: int) -> str:
    """``10MiB``, ``512KiB`` or ``1000 bytes``: a size as users write it, for messages."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ActionContext:
    """What an action knows about the call it serves. New fields may be added; never positional."""

    run_id: str
    step_id: str
    attempt: int = 1
    item_index: int | None = None
    connection_name: str | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("weir.action"))
    clock: Callable[[], datetime] = _utcnow
    add_usage: Callable[[int, int], None] = field(default=lambda _i, _o: None)
    timeout: float | None = None
    phase: str = "main"
    """``main`` for the workflow's steps, ``compensate`` for an undo, ``on_failure`` for failure handlers."""

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and crash recovery: run id, step id and item index.

        A compensation or ``[[on_failure]]`` step has a key of its own (``…@compensate``): an undo
        is not a repeat of the step, and a service must not answer it with the step's result.
        """
        suffix = "" if self.item_index is None else f":{self.item_index}"
        phase = "" if self.phase == "main" else f"@{self.phase}"
        return f"{self.run_id}:{self.step_id}{suffix}{phase}"


@dataclass(frozen=True)
class ActionSpec:
    """A declared action: what ``uses`` resolves to."""

    connector: str
    name: str
    input_model: type[BaseModel]
    output_model: type[BaseModel] | None
    idempotent: bool
    needs_connection: bool
    description: str
    func: ActionFunc | None = None

    @property
    def uses(self) -> str:
        return f"{self.connector}.{self.name}" if self.connector else self.name


def action(
    name: str,
    *,
    input: type[BaseModel],
    output: type[BaseModel] | None = None,
    idempotent: bool = False,
) -> Callable[[ActionFunc], ActionFunc]:
    """Mark a connector method as the action ``name`` with its input and output models.

    ``idempotent`` says whether a call interrupted by a crash may be made again
    (true for reads); a step's ``idempotent`` key overrides it.
    """

    def mark(func: ActionFunc) -> ActionFunc:
        func.__weir_action__ = (name, input, output, idempotent)  # type: ignore[attr-defined]
        return func

    return mark


class Connector(ABC, Generic[ConnT]):
    """Base class of connectors. Subclasses set ``name`` and ``connection_model`` and mark actions."""

    name: ClassVar[str]
    connection_model: ClassVar[type[BaseModel]]
    connection_required: ClassVar[bool] = True
    """False when steps may use the connector without a ``connection`` (e.g. plain HTTP)."""
    actions: ClassVar[dict[str, ActionSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, ActionSpec] = {}
        for attr in vars(cls).values():
            mark = getattr(attr, "__weir_action__", None)
            if mark is None:
                continue
            action_name, input_model, output_model, idempotent = mark
            if action_name in found:
                raise TypeError(f"connector {cls.__qualname__} declares action '{action_name}' twice")
            found[action_name] = ActionSpec(
                connector=getattr(cls, "name", ""),
                name=action_name,
                input_model=input_model,
                output_model=output_model,
                idempotent=idempotent,
                needs_connection=cls.connection_required,
                description=(attr.__doc__ or "").strip().split("\n")[0],
                func=attr,
            )
        cls.actions = {**getattr(cls, "actions", {}), **found}

    def __init__(self, connection: ConnT, *, connection_name: str | None = None) -> None:
        self.connection = connection
        self.connection_name = connection_name

    async def call(self, action_name: str, ctx: ActionContext, inputs: dict[str, Any]) -> Any:
        """Validate ``inputs`` against the action's model, run it, and return JSON-ready output."""
        spec = self.actions[action_name]
        parsed = spec.input_model.model_validate(inputs)
        if spec.func is None:
            raise TypeError(f"action '{spec.uses}' has no implementation")
        result = await spec.func(self, ctx, parsed)
        if isinstance(result, BaseModel):
            return result.model_dump(mode="json", by_alias=True)
        return result

    async def aclose(self) -> None:
        """Release clients and pools. The default does nothing."""


AnyConnector = Connector[Any]
"""A connector of any connection model, as the registry hands them out."""
