"""Who may use the UI, and proof that a form was posted by the UI itself.

With an ``--api-token`` the UI asks for it once on a login page. The browser then keeps a
session cookie (HttpOnly, SameSite=Strict): ``<expiry>.<HMAC of the expiry under a key derived
from the token>``. Every replica with the same token accepts it, no state is stored, the API
token itself never sits in the browser, and changing the token ends every session. Without a
token the server is loopback-only and the UI is open; the cookie is then a random nonce that
only anchors the CSRF token.

Every form carries a CSRF token, the HMAC of the session cookie, and every POST is checked for
it (constant time) and for a same-origin ``Origin`` or ``Referer`` header when the browser sends
one.

Wrong tokens are limited per client address (``LoginThrottle``): a token of any useful length
cannot be guessed anyway, but a login form that answers every guess at full speed invites
trying, and fills the log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "weir_session"
CSRF_FIELD = "csrf"
SESSION_SECONDS = 7 * 24 * 3600
"""How long a login lasts (7 days)."""


@dataclass(frozen=True)
class Session:
    """What a request carries: its cookie value (None when it has none or it is not valid) and the CSRF token."""

    cookie: str | None
    csrf: str
    new: bool = False
    """The cookie was made for this request and must be set on the response (open UI only)."""


class LoginThrottle:
    """At most ``LIMIT`` wrong tokens per client address in ``WINDOW`` seconds; then every login from it waits.

    Kept in memory per process (a replica counts its own), for at most ``TRACKED`` addresses, the
    least recently seen forgotten first. Behind a proxy the address is the one the proxy forwards
    when uvicorn trusts it (the ``FORWARDED_ALLOW_IPS`` environment variable), else the proxy's own.
    """

    LIMIT = 10
    WINDOW = 60.0
    TRACKED = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        failures = self._failures.get(address)
        if failures is None:
            return 0.0
        now = self.clock()
        while failures and failures[0] <= now - self.WINDOW:
            failures.popleft()
        if len(failures) < self.LIMIT:
            return 0.0
        return failures[0] + self.WINDOW - now

    def failed(self, address: str) -> None:
        failures = self._failures.pop(address, None) or deque(maxlen=self.LIMIT)
        failures.append(self.clock())
        self._failures[address] = failures  # now the most recently seen
        while len(self._failures) > self.TRACKED:
            self._failures.popitem(last=False)


class Sessions:
    """Login sessions and CSRF tokens; ``token`` is the server's --api-token (None: the UI is open)."""

    def __init__(self, token: str | None, public_url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.token = token.encode() if token else None
        # The token-derived key makes sessions portable across replicas; the open UI needs no such thing.
        self.key = (
            hmac.new(self.token, b"weir-ui-session-key", hashlib.sha256).digest()
            if self.token
            else secrets.token_bytes(32)
        )
        public = urlsplit(public_url)
        self.public_origin = f"{public.scheme}://{public.netloc}".lower()
        self.secure = public.scheme == "https"
        self.clock = clock
        self.throttle = LoginThrottle()

    @property
    def login_required(self) -> bool:
        return self.token is not None

    # -- login ------------------------------------------------------------------------------------

    def token_matches(self, given: str) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest(given.strip().encode(), self.token)

    def new_cookie(self) -> str:
        if self.token is None:
            return secrets.token_urlsafe(24)
        expires = str(int(self.clock()) + SESSION_SECONDS)
        return f"{expires}.{self._mac('session:' + expires)}"

    def valid_cookie(self, value: str | None) -> bool:
        if not value:
            return False
        if self.token is None:
            return 16 <= len(value) <= 64
        expires, _, mac = value.partition(".")
        if not expires.isdigit() or not hmac.compare_digest(mac.encode(), self._mac("session:" + expires).encode()):
            return False
        return int(expires) > self.clock()

    def session(self, request: Request) -> Session | None:
        """The request's session; None when login is required and the request has no valid one."""
        cookie = request.cookies.get(COOKIE)
        if self.valid_cookie(cookie):
            assert cookie is not None  # noqa: S101 - valid_cookie says so
            return Session(cookie, self.csrf_token(cookie))
        if self.token is not None:
            return None
        fresh = self.new_cookie()
        return Session(fresh, self.csrf_token(fresh), new=True)

    def set_cookie(self, response: Response, value: str, request: Request) -> None:
        response.set_cookie(
            COOKIE,
            value,
            max_age=SESSION_SECONDS if self.token else None,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure or request.url.scheme == "https",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")

    # -- forgery ----------------------------------------------------------------------------------

    def csrf_token(self, cookie: str) -> str:
        return self._mac("csrf:" + cookie)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest((given or "").encode(), session.csrf.encode())

    def same_origin(self, request: Request) -> bool:
        """False when the browser says the POST comes from another site (Origin, else Referer)."""
        own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
        allowed = {own, self.public_origin}
        origin = request.headers.get("origin")
        if origin is not None:
            return origin.lower() in allowed
        referer = request.headers.get("referer")
        if referer:
            parts = urlsplit(referer)
            return f"{parts.scheme}://{parts.netloc}".lower() in allowed
        return True  # not a browser, or one that sends neither: the CSRF token still has to match

    def _mac(self, message: str) -> str:
        return hmac.new(self.key, message.encode(), hashlib.sha256).hexdigest()


def safe_next(target: str | None) -> str:
    """Where to go after login: a path on this server only (no ``//host`` or scheme tricks)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
