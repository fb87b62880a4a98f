"""Find connectors through the ``weir.connectors`` entry-point group and load them on first use.

Built-in connectors register through the same group (see pyproject.toml), so a
third-party package is a peer of ours. A plugin that fails to import or to pass
validation is reported with its distribution and does not take the others down.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

from pydantic import BaseModel

from weir.connectors.base import ActionSpec, AnyConnector, Connector
from weir.errors import ConnectorNotFound
from weir.text import did_you_mean

GROUP = "weir.connectors"


class ConnectorRegistry:
    """Connector classes by name. Build one per process and pass it down."""

    def __init__(self, *, discover: bool = True, extra: Mapping[str, type[AnyConnector]] | None = None) -> None:
        self._entry_points: dict[str, EntryPoint] = {}
        if discover:
            for ep in entry_points(group=GROUP):
                self._entry_points.setdefault(ep.name, ep)
        self._loaded: dict[str, type[AnyConnector]] = {}
        self._errors: dict[str, str] = {}
        for name, cls in (extra or {}).items():
            self._loaded[name] = self._validated(name, cls, origin=cls.__module__)

    def names(self) -> list[str]:
        """Every connector name, loaded or not."""
        return sorted(set(self._entry_points) | set(self._loaded))

    def get(self, name: str) -> type[AnyConnector]:
        """The connector class called ``name``; raise ConnectorNotFound when absent or broken."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._errors:
            raise ConnectorNotFound(self._errors[name])
        ep = self._entry_points.get(name)
        if ep is None:
            raise ConnectorNotFound(
                f"no connector named '{name}' is installed{did_you_mean(name, self.names())};"
                " `weir connectors` lists the installed ones"
            )
        origin = f"{ep.value} from {ep.dist.name if ep.dist else 'an unknown distribution'}"
        try:
            cls = ep.load()
            self._loaded[name] = self._validated(name, cls, origin=origin)
        except Exception as exc:  # a broken plugin must not break the others
            self._errors[name] = f"connector '{name}' ({origin}) failed to load: {exc}"
            raise ConnectorNotFound(self._errors[name]) from exc
        return self._loaded[name]

    def errors(self) -> dict[str, str]:
        """Load every connector and return the ones that failed, with the reason."""
        for name in self.names():
            with contextlib.suppress(ConnectorNotFound):
                self.get(name)
        return dict(self._errors)

    def action(self, uses: str) -> ActionSpec:
        """The action that ``uses = "connector.action"`` names; raise ConnectorNotFound with a hint."""
        connector_name, _, action_name = uses.partition(".")
        cls = self.get(connector_name)
        spec = cls.actions.get(action_name)
        if spec is None:
            raise ConnectorNotFound(
                f"connector '{connector_name}' has no action '{action_name}'"
                f"{did_you_mean(action_name, cls.actions)}; it has: {', '.join(sorted(cls.actions))}"
            )
        return spec

    @staticmethod
    def _validated(name: str, cls: object, *, origin: str) -> type[AnyConnector]:
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise TypeError(f"{origin} is not a subclass of weir.connectors.base.Connector")
        if getattr(cls, "name", None) != name:
            raise TypeError(f"{origin} is registered as '{name}' but its class says name = {cls.name!r}")
        model = getattr(cls, "connection_model", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{origin} has no connection_model (a pydantic model)")
        if not cls.actions:
            raise TypeError(f"{origin} declares no actions; mark methods with @action")
        return cls
