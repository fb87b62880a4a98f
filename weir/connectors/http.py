"""The http connector: ``http.request`` on one pooled httpx client per connection.

Redirects are followed here, at most ``MAX_REDIRECTS`` times, so every hop passes
``allowed_hosts``. With ``deny_private_networks`` every new TCP connection resolves its
host, refuses non-public addresses and connects to the address it checked (so a DNS
answer cannot change between check and connect). httpx is imported on first use.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from base64 import b64encode
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from weir import __version__
from weir.connectors.base import (
    ActionContext,
    ActionInput,
    ConnectionSettings,
    Connector,
    Size,
    action,
    format_size,
)
from weir.connectors.wire import retry_after
from weir.errors import PermanentError, TransientError
from weir.schemas.common import Duration
from weir.secrets import mask_active

if TYPE_CHECKING:
    import httpcore
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_TIMEOUT = timedelta(seconds=30)
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024**2
MAX_REDIRECTS = 5
EXCERPT_CHARS = 500
_SENSITIVE_HEADER_WORDS = ("authorization", "cookie", "key", "token", "secret", "password")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token (RFC 9110 §5.1)."""
_HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters other than the tab, which RFC 9110 §5.5 forbids in a field value."""


class BearerAuth(ConnectionSettings):
    """``Authorization: Bearer <token>`` on every request."""

    type: Literal["bearer"] = Field(description="Send the token as a bearer token.")
    token: SecretStr = Field(description="The bearer token; use a secret, e.g. '{{ secrets.API_TOKEN }}'.")

    def header(self) -> tuple[str, str]:
        """The Authorization header value and the secret inside it."""
        return f"Bearer {self.token.get_secret_value()}", self.token.get_secret_value()


class BasicAuth(ConnectionSettings):
    """HTTP basic authentication on every request."""

    type: Literal["basic"] = Field(description="Send username and password with HTTP basic auth.")
    username: str = Field(description="The user name.")
    password: SecretStr = Field(description="The password; use a secret.")

    def header(self) -> tuple[str, str]:
        """The Authorization header value and the secret inside it."""
        pair = b64encode(f"{self.username}:{self.password.get_secret_value()}".encode()).decode()
        return f"Basic {pair}", self.password.get_secret_value()


class HttpConnection(ConnectionSettings):
    """Settings of an http connection; every key is optional."""

    base_url: str | None = Field(None, description="Root that relative `url` inputs are joined to.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers sent with every request.")
    auth: Annotated[BearerAuth | BasicAuth, Field(discriminator="type")] | None = Field(
        None, description='{type = "bearer", token} or {type = "basic", username, password}.'
    )
    timeout: Duration = Field(DEFAULT_TIMEOUT, description="Connect, read and write timeout. Default 30s.")
    verify: bool = Field(True, description="Verify TLS certificates. Default true.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names or patterns such as '*.example.com'; empty allows any host."
    )
    deny_private_networks: bool = Field(
        False, description="Refuse loopback, link-local, private and other non-public addresses after DNS resolution."
    )
    max_response_bytes: Size = Field(
        DEFAULT_MAX_RESPONSE_BYTES, description="Largest response body accepted, e.g. '1MiB'. Default 10MiB."
    )


QueryValue = str | int | float | bool | None | list[str | int | float | bool]


class HttpRequest(ActionInput):
    """Input of ``http.request``."""

    method: str = Field("GET", pattern=r"^[A-Za-z]+$", description="HTTP method. Default GET.")
    url: str = Field(description="Absolute URL, or a path relative to the connection's base_url.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    query: dict[str, QueryValue] = Field(default_factory=dict, description="Query parameters added to the URL.")
    json_: Any = Field(None, alias="json", description="A value sent as the JSON body.")
    body: str | None = Field(None, description="A text body; use either json or body.")
    expect: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list, description="Status codes that count as success. Default: any 2xx."
    )
    timeout: Duration | None = Field(None, description="Overrides the connection's timeout for this request.")
    idempotency_key: bool = Field(
        False, description="Send an Idempotency-Key header that stays the same across retries of this step."
    )

    @model_validator(mode="after")
    def _one_body(self) -> HttpRequest:
        if "json_" in self.model_fields_set and self.body is not None:
            raise ValueError("set either json or body, not both")
        return self


class HttpResponse(BaseModel):
    """Output of ``http.request``."""

    model_config = ConfigDict(populate_by_name=True)

    status: int = Field(description="The HTTP status code.")
    headers: dict[str, str] = Field(description="Response headers, names in lower case.")
    json_: Any = Field(None, alias="json", description="The parsed body when the response is JSON, else null.")
    text: str = Field(description="The body as text.")


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is globally routable and not multicast (IPv4-mapped IPv6 is judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_link_local)


class HttpConnector(Connector[HttpConnection]):
    """Calls HTTP APIs; one pooled client per connection, closed by ``aclose``."""

    name = "http"
    connection_model = HttpConnection
    connection_required = False

    _client: httpx.AsyncClient | None = None  # created on first use

    def allows_address(self, address: IPAddress) -> bool:
        """Whether ``deny_private_networks`` lets a connection go to ``address``; override to change the policy."""
        return is_public_address(address)

    @action("request", input=HttpRequest, output=HttpResponse)
    async def request(self, ctx: ActionContext, inp: HttpRequest) -> HttpResponse:
        """Send an HTTP request and return the response. GET and HEAD are reads; other methods may change things."""
        import httpx

        url = first = self._target(inp.url).copy_merge_params(inp.query)
        method, headers, body = inp.method.upper(), {**self.connection.headers, **inp.headers}, None
        self._check_headers(headers)
        if self.connection.auth is not None:
            headers["Authorization"] = self.connection.auth.header()[0]
        if inp.body is not None:
            body = inp.body.encode()
        elif "json_" in inp.model_fields_set:
            body = json.dumps(inp.json_, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        if inp.idempotency_key:
            headers["Idempotency-Key"] = ctx.idempotency_key
        timeout = (inp.timeout or self.connection.timeout).total_seconds()
        if ctx.timeout is not None:
            timeout = min(timeout, ctx.timeout)
        client, redact = self._http(), self._redactor(headers)
        for _hop in range(MAX_REDIRECTS + 1):
            self._check_host(url)
            what = f"{method} {_shown(url)}"
            try:
                response = await client.send(
                    client.build_request(method, url, headers=headers, content=body, timeout=timeout), stream=True
                )
                try:
                    if not response.is_redirect or response.status_code in inp.expect:
                        return self._result(ctx, inp, response, await self._read(response, what), what, redact)
                finally:
                    await response.aclose()
                method, url, headers, body = _redirect(response, method, url, headers, body)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise self._transport_error(exc, what, timeout, redact) from exc
        raise self._error(f"{inp.method.upper()} {_shown(first)} redirected more than {MAX_REDIRECTS} times")

    async def aclose(self) -> None:
        """Close the pooled client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            from http.cookiejar import CookieJar, DefaultCookiePolicy

            import httpcore
            import httpx

            ssl_context = httpx.create_ssl_context(verify=self.connection.verify, trust_env=False)
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
            transport = httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False, limits=limits)
            if self.connection.deny_private_networks:
                # httpx has no public way to pass a network backend; its transport delegates to ``_pool``.
                transport._pool = httpcore.AsyncConnectionPool(
                    ssl_context=ssl_context,
                    max_connections=limits.max_connections,
                    max_keepalive_connections=limits.max_keepalive_connections,
                    keepalive_expiry=limits.keepalive_expiry,
                    network_backend=_guarded_backend(self),
                )
            jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # steps must not share cookies
            self._client = httpx.AsyncClient(
                transport=transport, trust_env=False, cookies=jar, headers={"User-Agent": f"weir/{__version__}"}
            )
        return self._client

    def _target(self, raw: str) -> httpx.URL:
        import httpx

        try:
            url = httpx.URL(raw)
            if url.is_relative_url:
                if not self.connection.base_url:
                    raise self._error(f"url '{raw}' is relative and the connection has no base_url; give a full URL")
                base = httpx.URL(self.connection.base_url)
                if not base.raw_path.endswith(b"/"):
                    base = base.copy_with(raw_path=base.raw_path + b"/")
                url = base.join(raw.lstrip("/"))
        except httpx.InvalidURL as exc:
            raise self._error(f"url '{raw}' is not a valid URL: {exc}") from exc
        return url

    def _check_headers(self, headers: dict[str, str]) -> None:
        """Refuse a header that would split the request: a bad name, or CR, LF or another control character.

        Values often come from payloads through templates; sent as they are, a line break would
        start a header of the sender's choosing. The value is not shown: it may hold a credential.
        """
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise self._error(
                    f"header name {name!r} is not a valid HTTP header name; use letters, digits and - only"
                )
            if _HEADER_CONTROL.search(value):
                raise self._error(
                    f"header '{name}' has a line break or another control character in its value; a header value "
                    "is one line of text: remove them in the template, e.g. with | replace('\\n', ' ')"
                )

    def _check_host(self, url: httpx.URL) -> None:
        if url.scheme not in ("http", "https"):
            raise self._error(f"url '{_shown(url)}' must start with http:// or https://")
        patterns = self.connection.allowed_hosts
        if patterns and not any(fnmatch.fnmatchcase(url.host, p.lower()) for p in patterns):
            raise self._error(f"host '{url.host}' is not in the connection's allowed_hosts ({', '.join(patterns)})")

    def _redactor(self, headers: dict[str, str]) -> Callable[[str], str]:
        """A function that blanks credentials (auth, and headers named like keys or tokens) out of a text."""
        secrets = [v for k, v in headers.items() if any(word in k.lower() for word in _SENSITIVE_HEADER_WORDS)]
        if self.connection.auth is not None:
            secrets.append(self.connection.auth.header()[1])
        ordered = sorted(filter(None, secrets), key=len, reverse=True)

        def redact(text: str) -> str:
            for secret in ordered:
                text = text.replace(secret, "***")
            return text

        return redact

    async def _read(self, response: httpx.Response, what: str) -> bytes:
        cap = self.connection.max_response_bytes
        declared = response.headers.get("content-length", "")
        too_big = (
            f"{what} returned a body larger than max_response_bytes ({format_size(cap)}); raise it on the connection"
        )
        if declared.isdigit() and int(declared) > cap:
            raise self._error(too_big)
        content = bytearray()
        async for chunk in response.aiter_bytes():
            content += chunk
            if len(content) > cap:
                raise self._error(too_big)
        return bytes(content)

    def _result(
        self,
        ctx: ActionContext,
        inp: HttpRequest,
        response: httpx.Response,
        content: bytes,
        what: str,
        redact: Callable[[str], str],
    ) -> HttpResponse:
        status = response.status_code
        text = content.decode(response.encoding or "utf-8", errors="replace")
        if not (status in inp.expect if inp.expect else 200 <= status < 300):
            wanted = ", ".join(map(str, inp.expect)) if inp.expect else "2xx"
            excerpt = redact(mask_active(text.strip()))[:EXCERPT_CHARS]  # masked before the cut can split a secret
            message = f"{what} returned HTTP {status} (expected {wanted})" + (f": {excerpt}" if excerpt else "")
            if status == 429 or status >= 500:
                wait = retry_after(response.headers.get("retry-after"), ctx.clock())
                raise self._error(message, transient=True, retry_after=wait)
            raise self._error(message)
        data: Any = None
        if "json" in response.headers.get("content-type", "").lower() and text.strip():
            try:
                data = json.loads(text)
            except ValueError:
                data = None
        return HttpResponse(status=status, headers=dict(response.headers), json_=data, text=text)

    def _transport_error(
        self, exc: Exception, what: str, timeout: float, redact: Callable[[str], str]
    ) -> TransientError | PermanentError:
        import socket
        import ssl

        import httpx

        reason = redact(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            return self._error(f"{what} timed out after {timeout:g}s", timeout=True)
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return self._error(
                    f"{what}: the server's TLS certificate failed verification ({cause.verify_message}); fix the"
                    " certificate, or set verify = false on the connection if you trust this server"
                )
            if isinstance(cause, socket.gaierror):
                reason = f"could not resolve the host ({cause.strerror or cause})"
            elif isinstance(cause, ConnectionRefusedError):
                reason = "connection refused"
            cause = cause.__cause__ or cause.__context__
        if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol | httpx.DecodingError):
            return self._error(f"{what} failed: {reason}")
        return self._error(f"{what} failed: {reason}", transient=True)

    def _error(
        self, message: str, *, transient: bool = False, timeout: bool = False, retry_after: float | None = None
    ) -> PermanentError | TransientError:
        """A PermanentError, or a TransientError when ``transient`` or ``timeout``, naming this connection."""
        name = self.connection_name
        if transient or timeout:
            return TransientError(
                message, connection=name, action="http.request", retry_after=retry_after, timeout=timeout
            )
        return PermanentError(message, connection=name, action="http.request")


def _guarded_backend(connector: HttpConnector) -> httpcore.AsyncNetworkBackend:
    """A network backend that connects only to addresses the connector allows, and to the one it checked."""
    import socket

    import anyio
    import httpcore

    class GuardedBackend(httpcore.AnyIOBackend):
        async def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,  # noqa: ASYNC109  (httpcore's signature)
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> httpcore.AsyncNetworkStream:
            try:
                with anyio.fail_after(timeout):
                    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
            except OSError as exc:
                raise httpcore.ConnectError(f"could not resolve the host {host} ({exc})") from exc
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
            for address in addresses:
                if not connector.allows_address(ipaddress.ip_address(address)):
                    raise connector._error(
                        f"refused to connect to {host}: it resolves to {address}, which is not a public address"
                        " (the connection sets deny_private_networks = true)"
                    )
            return await super().connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    return GuardedBackend()


def _redirect(
    response: httpx.Response, method: str, url: httpx.URL, headers: dict[str, str], body: bytes | None
) -> tuple[str, httpx.URL, dict[str, str], bytes | None]:
    """The next hop as browsers take it: credentials stay with their origin; 303 (and POST on 301/302) -> GET."""
    target = url.join(response.headers["location"])
    dropped = (
        {"authorization", "cookie"}
        if (target.scheme, target.host, target.port) != (url.scheme, url.host, url.port)
        else set()
    )
    code = response.status_code
    if (code == 303 and method != "HEAD") or (code in (301, 302) and method == "POST"):
        method, body = "GET", None
        dropped |= {"content-type"}
    return method, target, {k: v for k, v in headers.items() if k.lower() not in dropped}, body


def _shown(url: httpx.URL) -> str:
    """The URL for messages: no user info, no query (either may hold credentials)."""
    port = f":{url.port}" if url.port else ""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}{port}{url.path}"
