"""The UI's routes, and the checks every one of them makes (login, CSRF, same origin) before its handler runs."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from weir.server.ui.actions import Actions
from weir.server.ui.forms import MAX_FORM_BYTES, parse_form
from weir.server.ui.pages import Pages
from weir.server.ui.render import Renderer
from weir.server.ui.session import COOKIE, CSRF_FIELD, Session, Sessions, safe_next

if TYPE_CHECKING:
    from weir.server.app import Runtime

STATIC = Path(__file__).parent / "static"

Page = Callable[[Request], Awaitable[Response]]
Action = Callable[[Request, dict[str, str]], Awaitable[Response]]


def ui_routes(runtime: Runtime) -> list[BaseRoute]:
    """The web UI: pages at /, /workflows/{name}, /runs, /runs/{id}, their form posts, login, and /static."""
    token = runtime.settings.api_token.get_secret_value() if runtime.settings.api_token else None
    return Ui(runtime, Sessions(token, runtime.public_url)).routes()


class Ui:
    def __init__(self, runtime: Runtime, sessions: Sessions) -> None:
        self.sessions = sessions
        self.render = Renderer()
        self.pages = Pages(runtime, self.render)
        self.actions = Actions(runtime, self.pages)

    def routes(self) -> list[BaseRoute]:
        pages, actions, page, action = self.pages, self.actions, self.page, self.action
        routes = [
            ("/", page(pages.workflows), ["GET"], "workflows"),
            ("/workflows/{name}", page(pages.workflow), ["GET"], "workflow"),
            ("/workflows/{name}/run", action(actions.start), ["POST"], "start"),
            ("/runs", page(pages.runs), ["GET"], "runs"),
            ("/runs/{run_id}", page(pages.run), ["GET"], "run"),
            ("/runs/{run_id}/live", page(pages.live, json=True), ["GET"], "live"),
            ("/runs/{run_id}/cancel", action(actions.cancel), ["POST"], "cancel"),
            ("/runs/{run_id}/rerun", action(actions.rerun), ["POST"], "rerun"),
            ("/runs/{run_id}/steps/{step_id}/resume", action(actions.resume), ["POST"], "resume"),
            ("/login", self.login, ["GET", "POST"], "login"),
            ("/logout", action(self.logout), ["POST"], "logout"),
        ]
        # Every name starts with "ui:", which tells them apart from the API's routes (the OpenAPI document).
        return [
            *[Route(path, endpoint, methods=methods, name=f"ui:{name}") for path, endpoint, methods, name in routes],
            Mount("/static", StaticFiles(directory=STATIC), name="ui:static"),
        ]

    # -- the checks ------------------------------------------------------------------------------------

    def page(self, handler: Page, *, json: bool = False) -> Page:
        async def endpoint(request: Request) -> Response:
            session = self._enter(request)
            if session is None:
                if json:
                    return JSONResponse({"error": "log in again"}, status_code=401)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
            return self._leave(request, session, await handler(request))

        return endpoint

    def action(self, handler: Action) -> Page:
        async def endpoint(request: Request) -> Response:
            session = self._enter(request)
            if session is None:
                return self._refused(request, "Your session has ended: log in again, then repeat what you did.", 401)
            if not self.sessions.same_origin(request):
                return self._refused(request, "This form was posted from another site; weir refused it.", 403)
            body = await _read_form(request)
            if body is None:
                return self._refused(request, "The form is too large.", 413)
            if session.new or not self.sessions.csrf_ok(session, body.get(CSRF_FIELD)):
                message = "The form's security token is missing or stale: reload the page and try again."
                return self._refused(request, message, 403)
            return self._leave(request, session, await handler(request, body))

        return endpoint

    def _enter(self, request: Request) -> Session | None:
        session = self.sessions.session(request)
        if session is not None:
            request.scope["weir_ui"] = {"csrf": session.csrf, "login_required": self.sessions.login_required}
        return session

    def _leave(self, request: Request, session: Session, response: Response) -> Response:
        if session.new and session.cookie:
            self.sessions.set_cookie(response, session.cookie, request)
        return response

    def _refused(self, request: Request, message: str, status: int) -> Response:
        return self.render.page(request, "refused.html", {"message": message}, status_code=status)

    # -- login --------------------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if not self.sessions.login_required or self.sessions.valid_cookie(request.cookies.get(COOKIE)):
            return RedirectResponse(target, status_code=303)
        if request.method == "GET":
            return self.render.page(request, "login.html", {"next": target, "error": None})
        if not self.sessions.same_origin(request):
            return self._refused(request, "This form was posted from another site; weir refused it.", 403)
        form = await _read_form(request) or {}
        target = safe_next(form.get("next"))
        address = request.client.host if request.client else ""
        wait = self.sessions.throttle.wait(address)
        if wait > 0:  # even the right token waits: otherwise the limit would not slow down guessing
            seconds = math.ceil(wait)
            error = f"Too many wrong tokens from your address; try again in {seconds} s."
            refused = self.render.page(request, "login.html", {"next": target, "error": error}, status_code=429)
            refused.headers["Retry-After"] = str(seconds)
            return refused
        if not self.sessions.token_matches(form.get("token", "")):
            self.sessions.throttle.failed(address)
            error = "That is not the server's API token."
            return self.render.page(request, "login.html", {"next": target, "error": error}, status_code=401)
        response = RedirectResponse(target, status_code=303)
        self.sessions.set_cookie(response, self.sessions.new_cookie(), request)
        return response

    async def logout(self, request: Request, form: dict[str, str]) -> Response:
        response = RedirectResponse("/login" if self.sessions.login_required else "/", status_code=303)
        self.sessions.clear_cookie(response)
        return response


async def _read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded form of a POST, or None when it is larger than MAX_FORM_BYTES."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return parse_form(bytes(body))
