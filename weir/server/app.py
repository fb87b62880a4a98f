"""``create_app``: the one place where ``weir serve`` is composed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from weir.connectors.registry import ConnectorRegistry
from weir.server.api import Api, TokenAuth, http_error
from weir.server.deploy import Deployer
from weir.server.follower import Follower
from weir.settings import ServeSettings

log = logging.getLogger("weir.server")


def create_app(settings: ServeSettings, *, registry: ConnectorRegistry | None = None) -> Starlette:
    """The server application: follows the repository and serves the API."""
    deployer = Deployer(registry or ConnectorRegistry())
    follower = Follower(settings, deployer)
    public_url = settings.public_url or f"http://{settings.host}:{settings.port}"
    api = Api(deployer, follower, public_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(follower.sync)
        stop = asyncio.Event()
        watcher = asyncio.create_task(follower.watch(stop))
        try:
            yield
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(watcher, timeout=5)

    token = settings.api_token.get_secret_value() if settings.api_token else None
    app = Starlette(
        routes=api.routes(),
        lifespan=lifespan,
        middleware=[Middleware(TokenAuth, token=token)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.deployer = deployer
    app.state.follower = follower
    return app
