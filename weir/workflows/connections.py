"""Connector instances for the steps of a revision, and the guards around every call to them.

A ``ConnectionPool`` belongs to one revision's ``weir.toml``. On first use of a connection it
renders the settings (``url = "{{ secrets.WAREHOUSE_URL }}"``), validates them with the
connector's ``connection_model`` and creates the instance; later steps and runs reuse it, so
clients and database pools are shared. Each call then passes the connection's guards:

- ``rate_limit = "10/s"``: a token bucket (burst: the per-second rate rounded up, at least 1).
  A call waits for its token in arrival order; none is dropped.
- ``circuit_breaker = {failures = 5, reset = "60s"}``: that many consecutive failures of the
  connector (``ActionError``, timeouts) open the circuit, and calls fail at once with
  ``CircuitOpen``. After ``reset`` one trial call goes through: success closes the circuit,
  failure opens it for another ``reset``. Bad ``with`` inputs are not the connector's failure.

Guards and instances live in the process: with several replicas, each has its own buckets and
breakers, so a limit of ``10/s`` allows up to 10/s per replica.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from weir.connectors.base import ActionContext, ActionSpec, AnyConnector
from weir.connectors.registry import ConnectorRegistry
from weir.errors import ActionError, CircuitOpen, ConfigError, TransientError, WeirError
from weir.schemas.repo import CircuitBreaker, RepoConfig
from weir.text import did_you_mean
from weir.workflows.templating import Templates

logger = logging.getLogger("weir.connections")

_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_MIN_MASKED = 4  # shorter strings would mask ordinary words of the message


class TokenBucket:
    """The ``rate_limit`` of one connection: ``"10/s"``, ``"600/m"`` or ``"1/h"``."""

    def __init__(self, rate_limit: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        count, _, unit = rate_limit.partition("/")
        self.rate = float(count) / _RATE_UNITS[unit]
        """Tokens added per second."""
        if self.rate <= 0:
            raise ConfigError(f"rate_limit '{rate_limit}' allows no calls; write e.g. '10/s'")
        self.burst = max(1, math.ceil(self.rate))
        """Calls that may go at once after a quiet spell: the per-second rate rounded up, at least 1."""
        self._clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()

    def reserve(self) -> float:
        """Take the next token and return the seconds to wait before using it (0 when one is ready).

        The count may go below zero: each waiter holds its own place, so waits are served in order.
        """
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class _Breaker:
    def __init__(self, name: str, policy: CircuitBreaker) -> None:
        self.name, self.threshold, self.reset = name, policy.failures, policy.reset.total_seconds()
        self.failures = 0
        self.open_until: float | None = None
        self.trial = False  # the half-open trial call is under way

    def admit(self, now: float, uses: str) -> bool:
        """Raise CircuitOpen, or let the call through; True when it is the half-open trial."""
        if self.open_until is None:
            return False
        if now >= self.open_until and not self.trial:
            self.trial = True
            return True
        left = self.open_until - now
        when = "a trial call is under way" if left <= 0 else f"calls resume in {math.ceil(left)}s"
        raise CircuitOpen(
            f"circuit of connection '{self.name}' is open after {self.failures} consecutive"
            f" failure{'s' if self.failures != 1 else ''}; {when}",
            connection=self.name,
            action=uses,
            retry_after=max(left, 0.0),
        )

    def succeeded(self) -> None:
        self.failures, self.open_until, self.trial = 0, None, False

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.trial or self.failures >= self.threshold:
            if self.open_until is None:
                logger.warning("circuit of connection '%s' opened after %d failures", self.name, self.failures)
            self.open_until, self.trial = now + self.reset, False


class ConnectionPool:
    """Connector instances for one revision's weir.toml, created on first use and reused across steps and runs."""

    def __init__(
        self,
        registry: ConnectorRegistry,
        config: RepoConfig,
        *,
        templates: Templates,
        scope: Mapping[str, Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry, self._config, self._templates, self._scope = registry, config, templates, scope
        self._clock = clock
        self._instances: dict[tuple[str, str | None], AnyConnector] = {}
        self._locks: dict[tuple[str, str | None], asyncio.Lock] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._breakers: dict[str, _Breaker] = {}

    async def call(self, spec: ActionSpec, connection: str | None, ctx: ActionContext, inputs: dict[str, Any]) -> Any:
        """Run ``spec`` on the instance for ``connection`` behind its circuit breaker and rate limit.

        Raises ConfigError when the connection is missing, unknown, of another type or badly set,
        CircuitOpen while its circuit is open, and whatever the action raises (pydantic's
        ValidationError for bad inputs, ActionError for failures). With ``ctx.timeout`` set, a
        call that takes longer is cancelled and raises TransientError of kind ``timeout``.
        """
        instance = await self._instance(spec, connection)
        breaker = self._breakers.get(connection) if connection else None
        bucket = self._buckets.get(connection) if connection else None
        is_trial = breaker is not None and breaker.admit(self._clock(), spec.uses)
        outcome: bool | None = None  # None: the connector was not at fault either way
        try:
            if bucket is not None and (wait := bucket.reserve()) > 0:
                await asyncio.sleep(wait)
            try:
                async with asyncio.timeout(ctx.timeout):
                    result = await instance.call(spec.name, ctx, inputs)
            except TimeoutError as exc:
                outcome = False
                after = f" after {ctx.timeout:g}s" if ctx.timeout is not None else ""
                raise TransientError(
                    f"'{spec.uses}' timed out{after}", connection=connection, action=spec.uses, timeout=True
                ) from exc
            except ActionError:
                outcome = False
                raise
            outcome = True
            return result
        finally:
            if breaker is not None:
                if outcome is True:
                    breaker.succeeded()
                elif outcome is False:
                    breaker.failed(self._clock())
                elif is_trial:
                    breaker.trial = False  # bad inputs or cancellation: let another call be the trial

    async def aclose(self) -> None:
        """Close every instance created so far; one that fails to close does not stop the others."""
        instances, self._instances = self._instances, {}
        for (_, name), instance in instances.items():
            try:
                await instance.aclose()
            except Exception:
                logger.exception("closing connection '%s' (%s) failed", name or "default", instance.name)

    async def _instance(self, spec: ActionSpec, connection: str | None) -> AnyConnector:
        key = (spec.connector, connection)
        instance = self._instances.get(key)
        if instance is not None:
            return instance
        async with self._locks.setdefault(key, asyncio.Lock()):
            instance = self._instances.get(key)
            if instance is None:
                instance = self._create(spec, connection)
                self._instances[key] = instance
            return instance

    def _create(self, spec: ActionSpec, name: str | None) -> AnyConnector:
        cls = self._registry.get(spec.connector)
        if name is None:
            if cls.connection_required:
                raise ConfigError(
                    f"'{spec.uses}' needs a connection: add connection = \"...\" to the step ({self._fitting(spec)})"
                )
            return cls(cls.connection_model(), connection_name=None)
        conn = self._config.connections.get(name)
        if conn is None:
            raise ConfigError(
                f"connection '{name}' is not defined in weir.toml{did_you_mean(name, self._config.connections)}"
            )
        if conn.type != spec.connector:
            raise ConfigError(
                f"connection '{name}' is of type '{conn.type}' but '{spec.uses}' needs a {spec.connector} connection"
                f" ({self._fitting(spec)})"
            )
        source = conn.settings()
        rendered = self._render(name, source)
        try:
            settings = cls.connection_model.model_validate(rendered)
        except ValidationError as exc:
            # loc and msg only, and not chained: a validator's msg or the input may hold a secret
            problems = "; ".join(
                f"setting '{'.'.join(map(str, e['loc']))}': {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors(include_url=False, include_input=False)
            )
            shown = _strings(rendered) - _strings(source)  # what templates put in, secrets among it
            raise ConfigError(self._masked(f"connection '{name}': {problems}", shown)) from None
        if conn.rate_limit:
            self._buckets[name] = TokenBucket(conn.rate_limit, clock=self._clock)
        instance = cls(settings, connection_name=name)
        if conn.circuit_breaker is not None:
            self._breakers.setdefault(name, _Breaker(name, conn.circuit_breaker))
        return instance

    def _render(self, name: str, source: dict[str, Any]) -> dict[str, Any]:
        rendered: dict[str, Any] = {}
        for key, value in source.items():
            try:
                rendered[key] = self._templates.render_value(value, self._scope)
            except WeirError as exc:  # not chained, for the same reason as validation errors
                shown = _strings(rendered) - _strings(source)
                raise ConfigError(self._masked(f"connection '{name}': setting '{key}': {exc}", shown)) from None
        return rendered

    def _fitting(self, spec: ActionSpec) -> str:
        names = [n for n, c in self._config.connections.items() if c.type == spec.connector]
        if not names:
            kind = spec.connector
            return f'weir.toml has no {kind} connection; add [connections.<name>] with type = "{kind}"'
        return f"{spec.connector} connections in weir.toml: {', '.join(repr(n) for n in names)}"

    def _masked(self, text: str, rendered: set[str]) -> str:
        """``text`` without the strings templates rendered, nor the secrets when the scope can list them."""
        values = set(rendered)
        secrets = self._scope.get("secrets")
        if isinstance(secrets, Mapping):
            values.update(value for value in secrets.values() if isinstance(value, str))
        for value in sorted(values, key=len, reverse=True):
            if len(value) >= _MIN_MASKED:
                text = text.replace(value, "***")
        return text


def _strings(value: Any) -> set[str]:
    """Every string inside ``value`` (dict values, list and tuple items)."""
    if isinstance(value, str):
        return {value}
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
    return set().union(*map(_strings, items))
