"""Webhook triggers at ``/hooks/{path}``: authenticate, parse, check, map to params, start a run.

Each applied revision builds a ``HookTable`` (path → ``HookRoute``) once: secrets in ``auth`` are
rendered and payload schemas compiled then, so a request only verifies, renders the params
mapping and stores its run. The table is swapped whole when a revision applies, so a request
is served entirely by the revision it started on.

Request data (payload, headers, query) is only ever a value in the template scope: the
templates come from the revision's files and are never built from what a sender wrote.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from weir.errors import ParamsInvalid, StoreUnavailable, TemplateError, WeirError, WorkflowNotFound
from weir.records import RunRecord
from weir.schemas.workflow import NoAuth, TokenAuth, Webhook
from weir.server.api import STORE_RETRY_AFTER_SECONDS
from weir.server.hookauth import HookRejected, parse_body, verify
from weir.workflows.engine import Engine
from weir.workflows.executor import FinishedRuns
from weir.workflows.templating import base_scope
from weir.workflows.validation import Revision

log = logging.getLogger("weir.hooks")

STORED_HEADERS_DROPPED = frozenset({"authorization", "cookie", "proxy-authorization"})
"""Credentials are not kept in a run's trigger (the other headers are, for templates and the UI)."""
MAX_SCHEMA_ERRORS = 20
RETRY_AFTER_SECONDS = 30
"""What a webhook refused for a full queue is told to wait (about how long a large backlog takes to shrink)."""
QUEUE_COUNT_SECONDS = 1.0
"""How often the server counts the queued runs in the database for ``--max-queued``."""


@dataclass(frozen=True)  # not slotted: cached_property keeps its values in the instance's __dict__
class HookRoute:
    """One ``[[on.webhook]]`` of the applied revision, ready to serve."""

    path: str
    workflow: str
    hook: Webhook
    secret: str | None
    """The rendered secret or token of ``hook.auth`` (None for ``none``)."""
    validator: Any
    """A compiled ``jsonschema`` validator of ``hook.payload_schema``, or None: the authority, and its messages."""
    enabled: bool
    quick: Any = None
    """The same schema compiled by ``jsonschema_rs`` (offline, formats not asserted, like ``jsonschema``), when
    it compiles: it tells a valid payload in under a microsecond, where ``jsonschema`` takes about 50."""

    @functools.cached_property
    def dropped_headers(self) -> frozenset[str]:
        """Headers not kept in the run's trigger: credentials, the token header of token auth included."""
        if isinstance(self.hook.auth, TokenAuth):
            return STORED_HEADERS_DROPPED | {self.hook.auth.header.lower()}
        return STORED_HEADERS_DROPPED

    def schema_errors(self, payload: Any) -> list[dict[str, str]]:
        """The payload's schema violations (path and message, first by path), empty when it is valid."""
        if self.validator is None:
            return []
        if self.quick is not None:
            try:
                if self.quick.is_valid(payload):
                    return []
            except Exception:  # noqa: S110 - e.g. an integer wider than 64 bits: jsonschema decides alone
                pass
        errors = sorted(self.validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
        return [
            {"path": "/" + "/".join(str(p) for p in e.absolute_path), "message": e.message}
            for e in errors[:MAX_SCHEMA_ERRORS]
        ]


class HookTable:
    """The webhook routes of one revision, by normalised path."""

    def __init__(self, routes: Mapping[str, HookRoute] | None = None) -> None:
        self.routes = dict(routes or {})

    @classmethod
    def build(cls, revision: Revision, engine: Engine) -> HookTable:
        from jsonschema.validators import validator_for

        scope = {"secrets": engine.secrets.scope(), "env": engine.env}
        routes: dict[str, HookRoute] = {}
        for name, loaded in revision.workflows.items():
            for hook in loaded.model.on.webhook:
                secret_template = getattr(hook.auth, "secret", None) or getattr(hook.auth, "token", None)
                secret = None
                if secret_template is not None:
                    try:
                        secret = engine.templates.render_text(secret_template, scope)
                    except WeirError as exc:  # e.g. a secret that is not set: the hook answers 503
                        log.warning(
                            "webhook /hooks/%s of %s answers 503 until its secret is set: %s", hook.path, name, exc
                        )
                validator = quick = None
                if hook.payload_schema is not None:
                    schema = hook.payload_schema
                    validator = validator_for(schema)(schema)
                    quick = _quick_validator(schema)
                path = normalise(hook.path)
                routes[path] = HookRoute(path, name, hook, secret, validator, loaded.model.enabled, quick)
        return cls(routes)


def _quick_validator(schema: Any) -> Any:
    try:
        import jsonschema_rs

        return jsonschema_rs.validator_for(schema, validate_formats=False, offline=True)
    except Exception:  # a schema it does not take: jsonschema alone validates
        log.debug("payload schema left to jsonschema alone", exc_info=True)
        return None


def normalise(path: str) -> str:
    return path.strip("/")


def header_pairs(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """ASGI header pairs as text (names in lower case, duplicates kept), for ``hookauth.verify`` and templates."""
    return [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw]


class RunWaiter(FinishedRuns):
    """Lets a sync webhook wait for the run it started."""

    async def wait(self, engine: Engine, run_id: str, seconds: float) -> RunRecord | None:
        """The run once it finished within ``seconds``, else None.

        Another process may execute the run, so the store is looked at every second as well.
        """
        event = self.events.setdefault(run_id, asyncio.Event())
        deadline = time.monotonic() + seconds
        try:
            while True:
                run = await engine.store.get_run(run_id)
                if run is not None and run.finished:
                    return run
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(event.wait(), timeout=min(left, 1.0))
                except TimeoutError:
                    continue
        finally:
            self.events.pop(run_id, None)


class HookRoutes:
    """ASGI middleware in front of the whole app (see ``HookedStarlette``) that answers ``/hooks/*`` first.

    Webhooks are the hot path: they are matched by prefix here and served on the raw ASGI
    messages, skipping Starlette's middleware (error, token and exception middleware: hooks have
    their own auth and error answers), its route table and its request and response objects.
    ``/hooks/_git`` and requests before the server started go on to the app's routes.
    """

    PREFIX = "/hooks/"

    def __init__(self, app: ASGIApp, hooks: Callable[[], Hooks | None]) -> None:
        self.app = app
        self.hooks = hooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hooks = self.hooks()
        path: str = scope.get("path", "")
        if hooks is None or scope["type"] != "http" or not path.startswith(self.PREFIX) or path == "/hooks/_git":
            await self.app(scope, receive, send)
            return
        await hooks(scope, receive, send)


class HookedStarlette(Starlette):
    """Starlette with ``HookRoutes`` in front of its middleware stack."""

    def __init__(self, *args: Any, hooks: Callable[[], Hooks | None], **kwargs: Any) -> None:
        self.hooks = hooks
        super().__init__(*args, **kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return HookRoutes(super().build_middleware_stack(), self.hooks)


class HooksEndpoint:
    """The ``/hooks/{path}`` route, for what ``HookRoutes`` passes on: the webhooks once started, else 503."""

    def __init__(self, hooks: Callable[[], Hooks | None]) -> None:
        self.hooks = hooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hooks = self.hooks()
        if hooks is None:
            await problem(503, "unavailable", "the server is starting; try again in a moment").send(send)
        else:
            await hooks(scope, receive, send)


class Disconnected(Exception):
    """The sender went away before its body arrived: there is nobody to answer and nothing was stored."""


class Incoming:
    """A webhook request as the ASGI server handed it over: method, headers, query and the body on demand."""

    __slots__ = ("headers", "method", "pairs", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.pairs = header_pairs(scope["headers"])
        """The header pairs as received (duplicates kept), for ``hookauth.verify``."""
        self.headers = dict(self.pairs)
        """One value per header name (the last one sent), for templates and the run's trigger."""

    def query(self) -> dict[str, str]:
        raw: bytes = self.scope.get("query_string", b"")
        return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}

    async def body(self, limit: int, too_large: Callable[[], str]) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HookRejected(413, "payload_too_large", too_large())
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise HookRejected(413, "payload_too_large", too_large())
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Answer:
    """A webhook's JSON answer, written as Starlette's ``JSONResponse`` writes it."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] | None = None

    async def send(self, send: Send) -> None:
        content = json.dumps(self.body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        if self.headers:
            extra = self.headers.items()
            headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def reply(status: int, body: dict[str, Any]) -> Answer:
    return Answer(status, body)


def problem(status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any) -> Answer:
    return Answer(status, {"error": {"code": code, "message": message, **extra}}, headers)


class Hooks:
    """The ``/hooks/{path}`` endpoint over the current ``HookTable``."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_body: int,
        waiter: RunWaiter,
        max_queued: int = 0,
        count: Callable[[str, int], None] = lambda _path, _status: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.max_body = max_body
        self.max_queued = max_queued
        self.queued = 0
        """Queued runs: counted in the store every second (``Runtime``), plus the runs accepted since."""
        self.waiter = waiter
        self.count = count
        self.clock = clock
        self.table: HookTable | None = None
        """None until a revision applied: requests get 503."""
        self._fixed_scope = {
            **base_scope(failed=False, clock=engine.clock),
            "secrets": engine.secrets.scope(),
            "env": engine.env,
        }
        """The names of the webhook templates' scope that are the same for every request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = await self.answer(Incoming(scope, receive))
        except Disconnected:
            return
        await answer.send(send)

    async def answer(self, request: Incoming) -> Answer:
        table = self.table
        path = normalise(request.scope["path"].removeprefix("/hooks/"))
        if table is None:
            answer = problem(503, "unavailable", "no revision has been applied yet; see /api/status")
            self.count("(none)", answer.status)
            return answer
        route = table.routes.get(path)
        if route is None:
            from weir.text import did_you_mean

            hint = did_you_mean(path, table.routes)
            answer = problem(404, "not_found", f"no webhook at /hooks/{path}{hint}")
            self.count("(unknown)", answer.status)
            return answer
        try:
            answer = await self._serve(request, route)
        except HookRejected as exc:
            answer = problem(exc.status, exc.code, exc.message)
        except Disconnected:
            raise
        except Exception:  # a bug: the sender learns that it failed (nothing was answered yet), the log says why
            log.exception("webhook /hooks/%s failed", route.path)
            answer = problem(500, "internal", "the server failed while handling this webhook; its log says why")
        self.count(route.path, answer.status)
        return answer

    async def _serve(self, request: Incoming, route: HookRoute) -> Answer:
        hook = route.hook
        if request.method not in hook.methods:
            allowed = ", ".join(hook.methods)
            message = f"/hooks/{route.path} accepts {allowed}, not {request.method}"
            return problem(405, "method_not_allowed", message, headers={"Allow": allowed})
        if not route.enabled:
            return problem(
                404, "not_found", f"the webhook /hooks/{route.path} belongs to '{route.workflow}', which is disabled"
            )
        if self.max_queued and self.queued >= self.max_queued:
            message = (
                f"{self.queued} runs are queued, the server's limit is {self.max_queued} "
                "(--max-queued); nothing was stored, send it again later"
            )
            return problem(503, "overloaded", message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        body = await request.body(self.max_body, self._too_large)
        if not isinstance(hook.auth, NoAuth):
            if not route.secret:
                return problem(
                    503,
                    "unavailable",
                    f"the webhook's {hook.auth.type} secret is not set on the server; "
                    "set the secret its auth names (WEIR_SECRET_* or --secrets-file)",
                )
            verify(hook.auth, route.secret, request.pairs, body, self.clock())
        payload = parse_body(request.headers.get("content-type"), body)
        details = route.schema_errors(payload)
        if details:
            first = details[0]
            return problem(
                422,
                "invalid_payload",
                f"the payload does not match the webhook's schema: at {first['path']}: {first['message']}",
                details=details,
            )
        headers = request.headers
        query = request.query()
        scope = {**self._fixed_scope, "payload": payload, "headers": headers, "query": query}
        if hook.filter is not None:
            try:
                matched = self.engine.templates.evaluate(hook.filter, scope)
            except TemplateError as exc:  # e.g. a key this kind of event does not have: not a match
                return reply(202, {"ignored": True, "reason": f"the filter could not be evaluated: {exc}"})
            if not matched:
                return reply(202, {"ignored": True})
        try:
            params = self.engine.templates.render_value(hook.params, scope)
            key = None
            if hook.idempotency_key is not None:
                rendered = self.engine.templates.render_text(hook.idempotency_key, scope)
                key = f"hook:{route.path}:{rendered}" if rendered else None
        except TemplateError as exc:
            return problem(422, "invalid_payload", f"the webhook's templates cannot use this request: {exc}")
        trigger = {
            "type": "webhook",
            "path": route.path,
            "method": request.method,
            "payload": payload,
            "headers": {k: v for k, v in headers.items() if k not in route.dropped_headers},
            "query": query,
        }
        try:
            submitted = await self.engine.submit(route.workflow, params, trigger=trigger, dedup_key=key)
        except ParamsInvalid as exc:
            return problem(422, "invalid_params", str(exc), params=exc.problems)
        except WorkflowNotFound as exc:
            return problem(503, "unavailable", str(exc))
        except StoreUnavailable as exc:
            message = f"{exc}; nothing was stored, send it again later"
            return problem(503, "unavailable", message, headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})
        if submitted.run is None:
            return reply(202, {"skipped": True})
        run = submitted.run
        if submitted.duplicate:
            return reply(200, {"run_id": run.id, "duplicate": True})
        self.queued += 1
        if hook.response == "sync":
            finished = await self.waiter.wait(self.engine, run.id, hook.timeout.total_seconds())
            if finished is not None:
                return reply(200, {"run_id": run.id, "status": str(finished.status), "outputs": finished.outputs})
            return reply(202, {"run_id": run.id, "status": "running"})
        return reply(202, {"run_id": run.id})

    def _too_large(self) -> str:
        return f"the body is larger than the server's limit of {self.max_body} bytes (--max-body)"
