"""``create_app``: the one place where ``weir serve`` is composed.

At start (the app's lifespan) the server opens the run database (migrating it), applies the
branch head, starts the executor and the scheduler, and follows the repository. Each applied
revision is stored in the database, becomes the engine's current revision, and replaces the
webhook table and the schedule jobs in place. At shutdown (SIGTERM) uvicorn stops accepting and
finishes the requests in flight; then the scheduler stops, runs in flight get a grace period to
finish, and the rest are handed back to the database to resume at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weir.connectors.registry import ConnectorRegistry
from weir.errors import StoreUnavailable
from weir.records import StoredRevision
from weir.schemas.workflow import GithubAuth
from weir.secrets import SecretResolver
from weir.server.api import Api, TokenAuth, error, http_error, store_unavailable
from weir.server.deploy import Applied, Deployer, Rejected
from weir.server.follower import Follower
from weir.server.hookauth import HookRejected, verify
from weir.server.hooks import (
    QUEUE_COUNT_SECONDS,
    HookedStarlette,
    Hooks,
    HooksEndpoint,
    HookTable,
    RunWaiter,
    header_pairs,
)
from weir.server.metrics import Metrics
from weir.server.runs_api import BadRequest, NotFound, RunsApi, api_errors
from weir.server.schedules import Scheduler
from weir.server.ui import ui_routes
from weir.settings import ServeSettings
from weir.store.database import open_database
from weir.store.runs import SqlRunStore
from weir.types import RunStatus
from weir.workflows.engine import Engine
from weir.workflows.executor import Executor
from weir.workflows.source import files_digest

log = logging.getLogger("weir.server")

SHUTDOWN_GRACE_SECONDS = 10.0
"""How long runs in flight may go on after SIGTERM before they are handed back."""
PRUNE_EVERY_SECONDS = 3600.0
APPLY_TIMEOUT_SECONDS = 120.0


class Runtime:
    """Everything one server process runs, built at start and torn down at stop."""

    def __init__(
        self, settings: ServeSettings, registry: ConnectorRegistry, *, worker: bool = False, follow: bool = True
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.worker = worker
        """``weir worker``: the executor alone, no webhooks, schedules or API."""
        self.metrics = Metrics()
        self.deployer = Deployer(registry)
        self.deployer.listeners.append(self._applied)
        self.deployer.rejected_listeners.append(self._rejected)
        self.follower: Follower | None = None
        if follow:
            self.follower = Follower(settings, self.deployer)
            self.follower.on_error = lambda _message: self.metrics.sync_errors.inc()
        self.public_url = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
        self.waiter = RunWaiter()
        self.engine: Engine | None = None
        self.executor: Executor | None = None
        self.scheduler: Scheduler | None = None
        self.hooks: Hooks | None = None
        self.runs: RunsApi | None = None
        self.store: SqlRunStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._background: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._log_filter: logging.Filter | None = None

    # -- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        database = await open_database(
            settings.db, Path(settings.state_dir), migrate=True, wait=settings.db_wait.total_seconds()
        )
        self.store = store = SqlRunStore(database)
        resolver = SecretResolver(os.environ, settings.secrets_file)
        for warning in resolver.file_warnings():
            log.warning("%s", warning)
        key = await store.shared_value("resume_signing_key", secrets.token_hex(32))
        self.engine = engine = Engine(
            store,
            self.registry,
            secrets=resolver,
            environ=os.environ,
            public_url=self.public_url,
            signing_key=bytes.fromhex(key),
            listeners=[self.metrics, self.waiter],
        )
        # Whatever reaches the log output (a library's message, a traceback) is masked like run data.
        self._log_filter = engine.masker.logging_filter()
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._log_filter)
        if not self.worker:
            self.hooks = Hooks(
                engine,
                max_body=settings.max_body,
                waiter=self.waiter,
                max_queued=settings.max_queued,
                count=self.metrics.webhook,
            )
            self.runs = RunsApi(engine, sync=self.follower.sync_now if self.follower else None)
            self.scheduler = Scheduler(engine, self.metrics)
            self.scheduler.start()
        self._stop.clear()
        self._background = [asyncio.create_task(self._prune_loop(), name="weir-prune")]
        if self.hooks is not None and settings.max_queued:
            self._background.append(asyncio.create_task(self._queue_loop(self.hooks), name="weir-queue"))
        if self.follower is not None:
            await asyncio.to_thread(self.follower.sync)
            self._background.append(asyncio.create_task(self.follower.watch(self._stop), name="weir-follow"))
        self.executor = Executor(engine, max_runs=settings.workers, lease_seconds=settings.lease.total_seconds())
        await self.executor.start()
        where = database.url.render_as_string(hide_password=True)
        source = self.follower.source if self.follower else "stored revisions"
        what = "worker executing runs of" if self.worker else "serving"
        log.info("weir %s %s on %s (runs in %s)", what, source, self.public_url, where)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._background:
            if task.get_name() == "weir-prune":
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._background, return_exceptions=True), timeout=5)
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.executor is not None:
            await self.executor.stop(grace=SHUTDOWN_GRACE_SECONDS)
        if self.engine is not None:
            await self.engine.aclose()
        if self.store is not None:
            await self.store.close()
        log.info("weir stopped")
        if self._log_filter is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._log_filter)

    # -- revisions ------------------------------------------------------------------------------

    def _applied(self, applied: Applied) -> None:
        """Deployer listener (called in the sync thread): store and switch to the revision before returning."""
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._apply(applied), self._loop)
        if threading.get_ident() != self._loop_thread:
            future.result(timeout=APPLY_TIMEOUT_SECONDS)

    def _rejected(self, rejected: Rejected) -> None:
        self.metrics.revisions.labels("rejected").inc()
        self.metrics.rejected.set(1)

    async def _apply(self, applied: Applied) -> None:
        engine = self.engine
        if engine is None:
            return  # stopped meanwhile
        info, revision = applied.info, applied.revision
        files = await asyncio.to_thread(revision.tree.files)
        sha = info.sha
        if self.settings.dev:  # the working tree has no sha: name it by its content
            sha = "dev-" + files_digest(files)
        stored = StoredRevision(sha, files, info.message, info.author, info.committed_at)
        table = HookTable.build(revision, engine) if self.hooks is not None else None
        await engine.publish(stored, revision)
        if self.hooks is not None and table is not None:
            self.hooks.table = table
        if self.scheduler is not None:
            await self.scheduler.apply(revision)
        self.metrics.revisions.labels("applied").inc()
        self.metrics.rejected.set(0)

    async def _prune_loop(self) -> None:
        while True:
            if self.store is not None:
                before = datetime.now(UTC) - self.settings.keep_runs
                try:
                    pruned = await self.store.prune_runs(before)
                    if pruned:
                        log.info("pruned %d run(s) finished before %s (--keep-runs)", pruned, before.isoformat())
                except Exception:
                    log.exception("pruning old runs failed; trying again in an hour")
            await asyncio.sleep(PRUNE_EVERY_SECONDS)

    async def _queue_loop(self, hooks: Hooks) -> None:
        """Keep the webhooks' count of queued runs (for ``--max-queued``) close to the store's."""
        assert self.store is not None  # noqa: S101 - started before this task
        while not self._stop.is_set():
            try:
                counts = await self.store.count_runs(RunStatus.QUEUED)
                hooks.queued = counts.get(str(RunStatus.QUEUED), 0)
            except Exception:  # the database is away: keep the last count; /readyz tells
                log.debug("counting queued runs failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), QUEUE_COUNT_SECONDS)

    # -- endpoints that need the started runtime ---------------------------------------------------

    def delegate(self, attr: str, method: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            component = getattr(self, attr)
            if component is None:
                return error(503, "the server is starting; try again in a moment")
            handler: Callable[[Request], Awaitable[Response]] = getattr(component, method)
            return await handler(request)

        return endpoint

    async def readyz(self, request: Request) -> Response:
        if self.store is None or self.deployer.active is None:
            return error(503, "not ready: no valid revision applied yet (see /api/status)")
        try:
            await self.store.ping()
        except Exception as exc:
            return error(503, f"not ready: the run database does not answer ({type(exc).__name__})")
        return JSONResponse({"status": "ready", "revision": self.deployer.active.info.sha})

    async def metrics_endpoint(self, request: Request) -> Response:
        token = self.settings.metrics_token
        if token is not None:
            header = request.headers.get("authorization", "")
            if not secrets.compare_digest(header.encode(), f"Bearer {token.get_secret_value()}".encode()):
                return error(401, "send 'Authorization: Bearer <token>' with the server's --metrics-token")
        if self.store is not None:
            with contextlib.suppress(Exception):  # a scrape still answers when the database does not
                oldest = await self.store.oldest_queued()
                waited = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
                self.metrics.set_queue(await self.store.count_runs(), max(0.0, waited))
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def git_push(self, request: Request) -> Response:
        secret = self.settings.git_webhook_secret
        if secret is None:
            return error(404, "push notifications are off: start the server with --git-webhook-secret")
        body = await request.body()
        try:
            push_auth = GithubAuth(type="github", secret="--git-webhook-secret")  # noqa: S106 - a label, not a secret
            verify(push_auth, secret.get_secret_value(), header_pairs(request.headers.raw), body, 0.0)
        except HookRejected as exc:
            return error(exc.status, exc.message, exc.code)
        if request.headers.get("x-github-event") == "ping":
            return JSONResponse({"pong": True})
        if self.follower is not None:
            self.follower.request_sync()
        return JSONResponse({"sync": "requested"}, status_code=202)


def create_app(settings: ServeSettings, *, registry: ConnectorRegistry | None = None) -> Starlette:
    """The server application: follows the repository, runs workflows, serves webhooks and the API."""
    runtime = Runtime(settings, registry or ConnectorRegistry())
    assert runtime.follower is not None  # noqa: S101 - a server always follows its repository
    api = Api(
        runtime.deployer,
        runtime.follower,
        runtime.public_url,
        runs=_RunSummaries(runtime),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    hook_methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    routes = [
        Route("/readyz", runtime.readyz),
        Route("/metrics", runtime.metrics_endpoint),
        Route("/hooks/_git", runtime.git_push, methods=["POST"]),
        # HookRoutes serves these once the runtime started; this route answers before, and for /hooks/_git
        # with another method than POST.
        Route("/hooks/{path:path}", HooksEndpoint(lambda: runtime.hooks), methods=hook_methods),
        *[route for route in api.routes() if route.path != "/readyz"],
        *[Route(path, runtime.delegate("runs", name), methods=[method]) for path, name, method in RunsApi.ROUTES],
        *ui_routes(runtime),
    ]
    token = settings.api_token.get_secret_value() if settings.api_token else None
    app = HookedStarlette(
        routes=routes,
        lifespan=lifespan,
        hooks=lambda: runtime.hooks,
        middleware=[Middleware(TokenAuth, token=token)],
        exception_handlers={
            HTTPException: http_error,
            NotFound: api_errors,
            BadRequest: api_errors,
            StoreUnavailable: store_unavailable,
        },
    )
    app.state.runtime = runtime
    app.state.deployer = runtime.deployer
    app.state.follower = runtime.follower
    return app


class _RunSummaries:
    """The runs the workflows API shows, as the runs API summarises them (none before the store opened)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def recent(self, workflow: str, limit: int) -> list[dict[str, object]]:
        from weir.server.views import run_summary

        if self.runtime.store is None:
            return []
        page = await self.runtime.store.list_runs(workflow=workflow, limit=limit)
        return [run_summary(run) for run in page.runs]

    async def last(self, workflows: list[str]) -> dict[str, dict[str, object]]:
        from weir.server.views import run_summary

        if self.runtime.store is None:
            return {}
        return {name: run_summary(run) for name, run in (await self.runtime.store.last_runs(workflows)).items()}


def prepare_database(settings: ServeSettings) -> None:
    """Wait up to ``--db-wait`` for the run database; migrate it to the newest schema in a child process.

    Migrating needs alembic, about 11 MB that the server would keep for its whole life; a database
    already at the newest schema (every start but the first after an upgrade) needs no child.
    Raises StoreError with a clear message when the database cannot be opened or migrated.
    """
    import subprocess
    import sys

    from weir.errors import StoreError
    from weir.store.database import SCHEMA_HEAD, schema_revision

    state_dir = Path(settings.state_dir)
    if asyncio.run(schema_revision(settings.db, state_dir, wait=settings.db_wait.total_seconds())) == SCHEMA_HEAD:
        return
    log.info("migrating the run database to schema %s", SCHEMA_HEAD)
    env = {**os.environ, "WEIR_DB": settings.db or ""}
    command = [sys.executable, "-m", "weir", "db", "upgrade", "--state-dir", str(state_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - our own CLI
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        raise StoreError(reason.removeprefix("weir db: "))


async def run_worker(settings: ServeSettings, *, follow: bool, registry: ConnectorRegistry | None = None) -> None:
    """``weir worker``: execute runs from the database until SIGTERM or SIGINT, then stop like the server."""
    import signal

    runtime = Runtime(settings, registry or ConnectorRegistry(), worker=True, follow=follow)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runtime.start()
    try:
        await stop.wait()
        log.info("stopping: runs in flight get %.0fs to finish", SHUTDOWN_GRACE_SECONDS)
    finally:
        await runtime.stop()
