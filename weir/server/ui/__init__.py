"""The web UI served by ``weir serve`` at ``/``: server-rendered pages over the same runtime as the API.

    routes.py    the routes, and the login / CSRF / same-origin checks in front of every handler
    session.py   login sessions (a signed cookie) and CSRF tokens
    pages.py     GET pages: workflows and revisions, a workflow, runs, a run (and its live state)
    actions.py   form posts: run a workflow, cancel, rerun, resume; each redirects back
    forms.py     the params form: fields from ``[params]``, form strings back to typed values
    render.py    the autoescaping Jinja2 environment of templates/ and its display filters

Templates and the CSS and script under static/ ship in the package; nothing is fetched from the
internet and there is no build step.
"""

from weir.server.ui.routes import ui_routes

__all__ = ["ui_routes"]
