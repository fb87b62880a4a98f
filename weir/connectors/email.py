"""The email connector: ``email.send`` over SMTP with aiosmtplib.

Each send opens a connection (implicit TLS, STARTTLS or plain), logs in when a
username is set, sends one message and quits. Addresses, the subject and extra
headers may not contain line breaks, so a value can never add headers of its own.
aiosmtplib is imported on first use.
"""

from __future__ import annotations

import re
from datetime import timedelta
from email.utils import getaddresses, parseaddr
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator

from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action
from weir.errors import PermanentError, TransientError
from weir.schemas.common import Duration

if TYPE_CHECKING:
    from email.message import EmailMessage

Security = Literal["starttls", "ssl", "none"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}
DEFAULT_TIMEOUT = timedelta(seconds=30)
RESERVED_HEADERS = frozenset(
    [
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "reply-to",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    ]
)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def _no_line_breaks(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} must not contain line breaks (CR or LF): they would let the value add headers")
    return value


def _addresses(value: str | list[str] | None, what: str) -> list[str]:
    """Check each entry ("a@example.com" or "Ann <a@example.com>", several may share a string) and list them."""
    entries = [value] if isinstance(value, str) else list(value or [])
    for entry in entries:
        _no_line_breaks(entry, what)
        parsed = getaddresses([entry])
        if not parsed or any("@" not in address for _name, address in parsed):
            raise ValueError(f"{what} has '{entry}', which is not an email address")
    return entries


class EmailConnection(ConnectionSettings):
    """Settings of an SMTP server connection."""

    host: str = Field(description="SMTP server host name.")
    port: int | None = Field(
        None, ge=1, le=65535, description="SMTP port. Default 587 for starttls, 465 for ssl, 25 for none."
    )
    security: Security = Field(
        "starttls", description="'starttls' (default): upgrade to TLS; 'ssl': TLS from the start; 'none': plain."
    )
    username: str | None = Field(None, description="User to log in as; leave out for servers without AUTH.")
    password: SecretStr | None = Field(None, description="Password of the user; use a secret.")
    from_: str = Field(alias="from", description="Sender address, e.g. 'Weir <weir@example.com>'.")
    timeout: Duration = Field(DEFAULT_TIMEOUT, description="Timeout of each SMTP command. Default 30s.")
    verify: bool = Field(True, description="Verify the server's TLS certificate. Default true.")
    ca_file: str | None = Field(None, description="PEM file of the CA(s) to trust instead of the system store.")

    @field_validator("from_")
    @classmethod
    def _sender(cls, value: str) -> str:
        return _addresses(value, "from")[0]

    @model_validator(mode="after")
    def _credentials(self) -> EmailConnection:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")
        return self

    @property
    def port_number(self) -> int:
        """The port to connect to: ``port`` or the default of ``security``."""
        return self.port or DEFAULT_PORTS[self.security]


class Attachment(ActionInput):
    """A file attached to the message."""

    filename: str = Field(description="File name shown to the recipient.")
    content: str | None = Field(None, description="Text content (sent as UTF-8).")
    content_base64: str | None = Field(None, description="Binary content, base64-encoded.")
    content_type: str | None = Field(
        None, pattern=r"^[\w.+-]+/[\w.+-]+$", description="MIME type; guessed from the file name when left out."
    )

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        return _no_line_breaks(value, "an attachment's filename")

    @model_validator(mode="after")
    def _one_content(self) -> Attachment:
        if (self.content is None) == (self.content_base64 is None):
            raise ValueError(f"attachment '{self.filename}' needs either content or content_base64")
        if self.content_base64 is not None:
            _decoded(self.content_base64, self.filename)
        return self


class EmailSend(ActionInput):
    """Input of ``email.send``."""

    to: str | list[str] = Field(description="Recipient address or addresses.")
    cc: str | list[str] = Field(default_factory=list, description="Copy recipients.")
    bcc: str | list[str] = Field(default_factory=list, description="Blind copy recipients (not shown in headers).")
    subject: str = Field("", description="Subject line.")
    text: str | None = Field(None, description="Plain-text body.")
    html: str | None = Field(None, description="HTML body; with text, the message offers both.")
    attachments: list[Attachment] = Field(default_factory=list, description="Files to attach.")
    reply_to: str | None = Field(None, description="Address replies go to.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers, e.g. {X-Run = '...'}.")

    @field_validator("to", "cc", "bcc", "reply_to")
    @classmethod
    def _address_fields(cls, value: str | list[str] | None, info: ValidationInfo) -> str | list[str] | None:
        _addresses(value, info.field_name or "an address")
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return _no_line_breaks(value, "subject")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"'{name}' is not a header name: use letters, digits and '-'")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header '{name}' is set by weir; use the action's own inputs")
            _no_line_breaks(header, f"header '{name}'")
        return value

    @model_validator(mode="after")
    def _body(self) -> EmailSend:
        if self.text is None and self.html is None:
            raise ValueError("give the message a body: text, html or both")
        if not _addresses(self.to, "to"):
            raise ValueError("to needs at least one address")
        return self


class EmailSent(BaseModel):
    """Output of ``email.send``."""

    message_id: str = Field(description="The Message-ID header of the sent message.")
    refused: dict[str, str] = Field(
        default_factory=dict, description="Recipients the server refused while accepting others, with its reply."
    )


class EmailConnector(Connector[EmailConnection]):
    """Sends mail through one SMTP server."""

    name = "email"
    connection_model = EmailConnection

    @action("send", input=EmailSend, output=EmailSent)
    async def send(self, ctx: ActionContext, inp: EmailSend) -> EmailSent:
        """Send one message to its recipients; the server refusing some of them is reported in ``refused``."""
        message = build_message(self.connection.from_, inp, ctx)
        recipients = [address for _name, address in getaddresses([*_all(inp.to), *_all(inp.cc), *_all(inp.bcc)])]
        refused = await self._deliver(message, recipients, ctx)
        return EmailSent(message_id=str(message["Message-ID"]), refused=refused)

    async def _deliver(self, message: EmailMessage, recipients: list[str], ctx: ActionContext) -> dict[str, str]:
        import aiosmtplib

        conn = self.connection
        timeout = (
            conn.timeout.total_seconds() if ctx.timeout is None else min(conn.timeout.total_seconds(), ctx.timeout)
        )
        smtp = aiosmtplib.SMTP(
            hostname=conn.host,
            port=conn.port_number,
            username=conn.username,
            password=conn.password.get_secret_value() if conn.password else None,
            use_tls=conn.security == "ssl",
            start_tls=conn.security == "starttls",
            validate_certs=conn.verify,
            cert_bundle=conn.ca_file,
            timeout=timeout,
        )
        try:
            await smtp.connect()
            try:
                errors, _reply = await smtp.send_message(
                    message, sender=parseaddr(conn.from_)[1], recipients=recipients
                )
            finally:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()  # the message is sent or failed already; a bad goodbye changes nothing
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._classified(exc, timeout) from exc
        return {address: f"{reply.code} {reply.message}" for address, reply in errors.items()}

    def _classified(self, exc: Exception, timeout: float) -> TransientError | PermanentError:
        """4xx replies, timeouts and lost connections are transient; 5xx replies, TLS and auth failures permanent."""
        import ssl

        import aiosmtplib

        server = f"SMTP server {self.connection.host}:{self.connection.port_number}"
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            replies = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            return self._error(
                f"{server} refused every recipient: {replies}", any(r.code < 500 for r in exc.recipients)
            )
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            what = {
                aiosmtplib.SMTPAuthenticationError: f"refused the login of '{self.connection.username}'",
                aiosmtplib.SMTPSenderRefused: "refused the sender",
                aiosmtplib.SMTPDataError: "refused the message",
            }.get(type(exc), "answered")
            return self._error(f"{server} {what}: {exc.code} {exc.message}", 400 <= exc.code < 500)
        if isinstance(exc, TimeoutError):
            return self._error(f"{server} did not answer within {timeout:g}s", True, timeout=True)
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return self._error(
                    f"{server}: its TLS certificate failed verification ({cause.verify_message}); set ca_file to"
                    " the CA that signed it, or verify = false on the connection if you trust this server",
                    False,
                )
            cause = cause.__cause__ or cause.__context__
        if isinstance(exc, OSError):  # refused or lost connections (aiosmtplib's are ConnectionErrors too)
            return self._error(f"{server}: connection failed: {getattr(exc, 'message', exc)}", True)
        # what is left is a mismatch between settings and server: no STARTTLS, no AUTH, no common mechanism
        return self._error(f"{server}: {getattr(exc, 'message', exc)}; check the connection's security setting", False)

    def _error(self, message: str, transient: bool, *, timeout: bool = False) -> TransientError | PermanentError:
        password = self.connection.password.get_secret_value() if self.connection.password else ""
        if password:
            message = message.replace(password, "***")
        if transient:
            return TransientError(message, connection=self.connection_name, action="email.send", timeout=timeout)
        return PermanentError(message, connection=self.connection_name, action="email.send")


def build_message(sender: str, inp: EmailSend, ctx: ActionContext) -> EmailMessage:
    """The MIME message for ``inp``: text and html become multipart/alternative, attachments multipart/mixed."""
    import base64
    import mimetypes
    from email.message import EmailMessage
    from email.utils import format_datetime, make_msgid

    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(_all(inp.to))
    if inp.cc:
        message["Cc"] = ", ".join(_all(inp.cc))
    if inp.reply_to:
        message["Reply-To"] = inp.reply_to
    message["Subject"] = inp.subject
    message["Date"] = format_datetime(ctx.clock())
    message["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].rpartition("@")[2])
    for name, value in inp.headers.items():
        message[name] = value
    if inp.text is not None:
        message.set_content(inp.text)
        if inp.html is not None:
            message.add_alternative(inp.html, subtype="html")
    elif inp.html is not None:
        message.set_content(inp.html, subtype="html")
    for item in inp.attachments:
        guessed = mimetypes.guess_type(item.filename)[0]
        fallback = "text/plain" if item.content is not None else "application/octet-stream"
        maintype, _, subtype = (item.content_type or guessed or fallback).partition("/")
        if item.content is not None and maintype == "text":
            message.add_attachment(item.content, subtype=subtype, filename=item.filename)
        else:
            data = item.content.encode() if item.content is not None else base64.b64decode(item.content_base64 or "")
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=item.filename)
    return message


def _all(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _decoded(text: str, filename: str) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"attachment '{filename}': content_base64 is not valid base64") from None
