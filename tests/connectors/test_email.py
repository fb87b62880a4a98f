"""email.send against aiosmtpd servers on loopback: plain, STARTTLS, implicit TLS and AUTH."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from tests.fakes.server import free_port
from weir.connectors.base import ActionContext
from weir.connectors.email import EmailConnection, EmailConnector
from weir.errors import PermanentError, TransientError

pytestmark = pytest.mark.anyio
CTX = ActionContext(run_id="r1", step_id="s1", clock=lambda: datetime(2024, 5, 1, 12, 0, tzinfo=UTC))


class Mailbox:
    """An aiosmtpd handler that keeps what it receives; some addresses get scripted refusals."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str, options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("busy@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def last(self) -> EmailMessage:
        raw = (self.envelopes[-1].original_content or b"").replace(b"\r\n", b"\n")
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


def authenticate(server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"ann", b"s3cret-pw")
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@contextmanager
def smtp_server(**options: Any) -> Iterator[tuple[Mailbox, int]]:
    """Run aiosmtpd on a free loopback port until the block ends."""
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def plain() -> Iterator[tuple[Mailbox, int]]:
    with smtp_server() as served:
        yield served


def connection(port: int, **settings: Any) -> EmailConnection:
    return EmailConnection.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from": "Weir <weir@example.com>",
            "timeout": "5s",
            **settings,
        }
    )


async def send(conn: EmailConnection, **inputs: Any) -> Any:
    return await EmailConnector(conn, connection_name="mail").call("send", CTX, {"subject": "Hi", **inputs})


async def test_send_plain_text_to_every_recipient(plain: tuple[Mailbox, int]) -> None:
    mailbox, port = plain
    out = await send(
        connection(port), to="ann@example.com", cc=["Bob <bob@example.com>"], bcc="eve@example.com", text="hello"
    )
    envelope, message = mailbox.envelopes[-1], mailbox.last()
    assert out == {"message_id": message["Message-ID"], "refused": {}}
    assert out["message_id"].endswith("@example.com>")
    assert envelope.mail_from == "weir@example.com"
    assert envelope.rcpt_tos == ["ann@example.com", "bob@example.com", "eve@example.com"]
    assert (message["From"], message["To"], message["Cc"]) == (
        "Weir <weir@example.com>",
        "ann@example.com",
        "Bob <bob@example.com>",
    )
    assert message["Bcc"] is None
    assert (message["Subject"], message["Date"]) == ("Hi", "Wed, 01 May 2024 12:00:00 +0000")
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "hello\n"


async def test_send_text_and_html_as_alternatives(plain: tuple[Mailbox, int]) -> None:
    mailbox, port = plain
    await send(
        connection(port),
        to="ann@example.com",
        text="plain body",
        html="<p>html body</p>",
        reply_to="ops@example.com",
        headers={"X-Run": "r1"},
    )
    message = mailbox.last()
    assert message.get_content_type() == "multipart/alternative"
    parts = [(part.get_content_type(), part.get_content()) for part in message.iter_parts()]
    assert parts == [("text/plain", "plain body\n"), ("text/html", "<p>html body</p>\n")]
    assert (message["Reply-To"], message["X-Run"]) == ("ops@example.com", "r1")


async def test_send_html_only(plain: tuple[Mailbox, int]) -> None:
    mailbox, port = plain
    await send(connection(port), to="ann@example.com", html="<b>hi</b>")
    assert (mailbox.last().get_content_type(), mailbox.last().get_content()) == ("text/html", "<b>hi</b>\n")


async def test_send_attachments_text_and_base64(plain: tuple[Mailbox, int]) -> None:
    mailbox, port = plain
    attachments = [
        {"filename": "report.csv", "content": "a,b\n1,2\n"},
        {"filename": "logo.png", "content_base64": "iVBORw0KGgo="},
        {"filename": "data.bin", "content": "raw text", "content_type": "application/x-custom"},
    ]
    await send(connection(port), to="ann@example.com", text="see attached", html="<p>see</p>", attachments=attachments)
    message = mailbox.last()
    assert message.get_content_type() == "multipart/mixed"
    body, *files = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [(f.get_filename(), f.get_content_type(), f.get_content()) for f in files] == [
        ("report.csv", "text/csv", "a,b\n1,2\n"),
        ("logo.png", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("data.bin", "application/x-custom", b"raw text"),
    ]


async def test_send_reports_recipients_refused_among_accepted(plain: tuple[Mailbox, int]) -> None:
    mailbox, port = plain
    out = await send(connection(port), to=["ann@example.com", "nobody@example.com"], text="x")
    assert out["refused"] == {"nobody@example.com": "550 5.1.1 mailbox unavailable"}
    assert mailbox.envelopes[-1].rcpt_tos == ["ann@example.com"]


async def test_send_every_recipient_refused_is_permanent(plain: tuple[Mailbox, int]) -> None:
    _mailbox, port = plain
    with pytest.raises(PermanentError) as info:
        await send(connection(port), to="nobody@example.com", text="x")
    assert str(info.value) == (
        f"SMTP server 127.0.0.1:{port} refused every recipient: nobody@example.com: 550 5.1.1 mailbox unavailable"
    )
    assert (info.value.connection, info.value.action) == ("mail", "email.send")


async def test_send_4xx_reply_is_transient(plain: tuple[Mailbox, int]) -> None:
    _mailbox, port = plain
    with pytest.raises(TransientError) as info:
        await send(connection(port), to="busy@example.com", text="x")
    assert str(info.value) == (
        f"SMTP server 127.0.0.1:{port} refused every recipient: busy@example.com: 451 4.3.0 try again later"
    )
    assert info.value.kind == "transient"


async def test_send_connection_refused_is_transient() -> None:
    port = free_port()
    with pytest.raises(TransientError) as info:
        await send(connection(port), to="ann@example.com", text="x")
    assert str(info.value).startswith(f"SMTP server 127.0.0.1:{port}: connection failed: Error connecting to")
    assert info.value.kind == "transient"


async def test_send_silent_server_is_transient_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(TransientError) as info:
            await send(connection(port, timeout="200ms"), to="ann@example.com", text="x")
    assert str(info.value) == f"SMTP server 127.0.0.1:{port} did not answer within 0.2s"
    assert info.value.kind == "timeout"


async def test_send_starttls_with_ca_file(server_tls: ssl.SSLContext, ca_file: str) -> None:
    with smtp_server(tls_context=server_tls, require_starttls=True) as (mailbox, port):
        conn = connection(port, security="starttls", ca_file=ca_file)
        await send(conn, to="ann@example.com", text="secret")
        assert mailbox.last().get_content() == "secret\n"


async def test_send_starttls_untrusted_certificate_is_permanent(server_tls: ssl.SSLContext) -> None:
    with smtp_server(tls_context=server_tls, require_starttls=True) as (mailbox, port):
        with pytest.raises(PermanentError) as info:
            await send(connection(port, security="starttls"), to="ann@example.com", text="x")
        assert str(info.value) == (
            f"SMTP server 127.0.0.1:{port}: its TLS certificate failed verification (unable to get local issuer"
            " certificate); set ca_file to the CA that signed it, or verify = false on the connection if you trust"
            " this server"
        )
        await send(connection(port, security="starttls", verify=False), to="ann@example.com", text="x")
        assert len(mailbox.envelopes) == 1


async def test_send_starttls_unsupported_by_server_is_permanent(plain: tuple[Mailbox, int]) -> None:
    _mailbox, port = plain
    with pytest.raises(PermanentError) as info:
        await send(connection(port, security="starttls"), to="ann@example.com", text="x")
    assert str(info.value) == (
        f"SMTP server 127.0.0.1:{port}: SMTP STARTTLS extension not supported by server.; check the connection's"
        " security setting"
    )


async def test_send_implicit_tls(server_tls: ssl.SSLContext, ca_file: str) -> None:
    with smtp_server(ssl_context=server_tls) as (mailbox, port):
        await send(connection(port, security="ssl", ca_file=ca_file), to="ann@example.com", text="over tls")
        assert mailbox.last().get_content() == "over tls\n"


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_send_logs_in(server_tls: ssl.SSLContext, ca_file: str, mechanism: str) -> None:
    other = {"LOGIN": "PLAIN", "PLAIN": "LOGIN"}[mechanism]
    options = {
        "tls_context": server_tls,
        "authenticator": authenticate,
        "auth_required": True,
        "auth_exclude_mechanism": [other],
    }
    with smtp_server(**options) as (mailbox, port):
        conn = connection(port, security="starttls", ca_file=ca_file, username="ann", password="s3cret-pw")
        await send(conn, to="ann@example.com", text="authenticated")
        assert mailbox.last().get_content() == "authenticated\n"
        wrong = connection(port, security="starttls", ca_file=ca_file, username="ann", password="wrong-pw")
        with pytest.raises(PermanentError) as info:
            await send(wrong, to="ann@example.com", text="x")
    assert str(info.value) == (
        f"SMTP server 127.0.0.1:{port} refused the login of 'ann': 535 5.7.8 Authentication credentials invalid"
    )
    assert "wrong-pw" not in str(info.value)
    assert len(mailbox.envelopes) == 1


@pytest.mark.parametrize(
    ("inputs", "error"),
    [
        ({"subject": "Hi\r\nBcc: evil@example.com"}, "subject must not contain line breaks (CR or LF)"),
        ({"to": "ann@example.com\nBcc: evil@example.com"}, "to must not contain line breaks (CR or LF)"),
        ({"cc": ["ok@example.com", "x@example.com\r"]}, "cc must not contain line breaks (CR or LF)"),
        ({"reply_to": "a@example.com\n"}, "reply_to must not contain line breaks (CR or LF)"),
        (
            {"headers": {"X-Tag": "a\r\nBcc: evil@example.com"}},
            "header 'X-Tag' must not contain line breaks (CR or LF)",
        ),
        ({"headers": {"X-Bad: y": "v"}}, "'X-Bad: y' is not a header name: use letters, digits and '-'"),
        ({"headers": {"bcc": "evil@example.com"}}, "header 'bcc' is set by weir; use the action's own inputs"),
        (
            {"attachments": [{"filename": "a\r\n.txt", "content": "x"}]},
            "an attachment's filename must not contain line breaks",
        ),
        ({"attachments": [{"filename": "a.txt"}]}, "attachment 'a.txt' needs either content or content_base64"),
        (
            {"attachments": [{"filename": "a.bin", "content_base64": "%%%"}]},
            "attachment 'a.bin': content_base64 is not valid base64",
        ),
        ({"to": "not-an-address"}, "to has 'not-an-address', which is not an email address"),
        ({"to": []}, "to needs at least one address"),
        ({"text": None}, "give the message a body: text, html or both"),
    ],
)
async def test_send_refuses_header_injection_and_bad_input(inputs: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as info:
        await send(connection(1), **{"to": "ann@example.com", "text": "x", **inputs})
    assert error in str(info.value)


def test_connection_defaults_port_by_security_and_hides_password() -> None:
    ports = [connection(None, security=s).port_number for s in ("starttls", "ssl", "none")]
    assert ports == [587, 465, 25]
    conn = connection(None, username="ann", password="s3cret-pw")
    assert "s3cret-pw" not in repr(conn)
    with pytest.raises(ValidationError, match="set both username and password, or neither"):
        connection(None, username="ann")
