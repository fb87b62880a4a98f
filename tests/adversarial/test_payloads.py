"""Hostile webhook bodies against a real ``weir serve``: broken encodings, parser bombs, lying lengths.

A body weir cannot read as its type says is answered 400 with what is wrong and where, a body
over ``--max-body`` 413, however it is framed; neither stores a run. Bodies that are odd but
valid arrive in the run's ``trigger.payload`` exactly as the rules say (JSON, a form as a dict,
anything else as text). Some framing attacks never reach weir's code: the HTTP layer refuses them,
and the catalogue pins that too, since the guarantee is what a sender sees.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.adversarial.conftest import MAX_BODY, error_of, newest_run, run_count
from tests.server.serve_process import ServeProcess

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
UTF8_JSON = "JSON bodies must be UTF-8"
TOO_DEEP = "the JSON body nests arrays and objects more than 64 levels deep; flatten it"
TOO_LARGE = f"the body is larger than the server's limit of {MAX_BODY} bytes (--max-body)"


def nested(levels: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * levels + close * levels).encode()


BAD_BODIES: dict[str, tuple[str | None, bytes, str]] = {
    "json-invalid-utf8": (
        JSON,
        b'{"name": "caf\xe9"}',
        f"the body is not valid UTF-8 (bad byte at offset 13); {UTF8_JSON}",
    ),
    "json-utf16-despite-charset": (
        "application/json; charset=utf-16",
        '{"name": "ada"}'.encode("utf-16"),
        f"the body is not valid UTF-8 (bad byte at offset 0); {UTF8_JSON}",
    ),
    "json-overlong-utf8-slash": (
        JSON,
        b'{"path": "\xc0\xaf"}',
        f"the body is not valid UTF-8 (bad byte at offset 10); {UTF8_JSON}",
    ),
    "json-65-nested-arrays": (JSON, nested(65), TOO_DEEP),
    "json-65-nested-objects": (JSON, ('{"a":' * 65 + "1" + "}" * 65).encode(), TOO_DEEP),
    "json-30000-nested-arrays": (JSON, nested(30000), TOO_DEEP),
    "json-60000-unclosed-brackets": (JSON, b"[" * 60000, TOO_DEEP),
    "json-integer-of-5000-digits": (
        JSON,
        b'{"n": ' + b"7" * 5000 + b"}",
        "the JSON body has an integer of more than 4300 digits; send it as a string",
    ),
    "json-float-beyond-range": (
        JSON,
        b'{"n": 1e400}',
        "the JSON body has the number 1e400, too large for a float; send it as a string",
    ),
    "json-float-of-400-digits": (
        JSON,
        b'{"n": ' + b"9" * 400 + b".5}",
        "the JSON body has the number 99999999999999999999, too large for a float; send it as a string",
    ),
    "json-duplicate-key": (
        JSON,
        b'{"admin": false, "admin": true}',
        "the JSON body has the key 'admin' more than once in one object; send each key once",
    ),
    "json-duplicate-key-nested": (
        JSON,
        b'{"user": {"role": "viewer", "role": "owner"}}',
        "the JSON body has the key 'role' more than once in one object; send each key once",
    ),
    "json-duplicate-long-key": (
        JSON,
        b'{"' + b"k" * 200 + b'": 1, "' + b"k" * 200 + b'": 2}',
        f"the JSON body has the key '{'k' * 60}...' more than once in one object; send each key once",
    ),
    "json-nan": (JSON, b'{"n": NaN}', "the JSON body contains NaN, which is not JSON; send null or a string instead"),
    "json-infinity": (
        JSON,
        b'{"n": Infinity}',
        "the JSON body contains Infinity, which is not JSON; send null or a string instead",
    ),
    "json-minus-infinity": (
        JSON,
        b"[-Infinity]",
        "the JSON body contains -Infinity, which is not JSON; send null or a string instead",
    ),
    "json-unpaired-surrogate": (
        JSON,
        b'{"name": "\\ud800"}',
        "the JSON body has a string with an unpaired surrogate escape (\\ud800-\\udfff), which is not Unicode; "
        "send the character itself or a complete surrogate pair",
    ),
    "json-unpaired-surrogate-in-key": (
        JSON,
        b'[{"\\udfff": 1}]',
        "the JSON body has a string with an unpaired surrogate escape (\\ud800-\\udfff), which is not Unicode; "
        "send the character itself or a complete surrogate pair",
    ),
    "json-trailing-data": (JSON, b'{"a": 1} {"b": 2}', "the body is not valid JSON: Extra data at line 1, column 10"),
    "json-type-with-form-body": (JSON, b"a=1&b=2", "the body is not valid JSON: Expecting value at line 1, column 1"),
    "form-percent-escape-not-utf8": (
        FORM,
        b"name=%ff",
        "the form body has a %-escape that is not UTF-8 (invalid start byte); percent-encode UTF-8 bytes",
    ),
    "form-percent-encoded-surrogate": (
        FORM,
        b"name=%ED%A0%80",
        "the form body has a %-escape that is not UTF-8 (invalid continuation byte); percent-encode UTF-8 bytes",
    ),
    "form-latin1-despite-charset": (
        FORM + "; charset=iso-8859-1",
        b"name=caf\xe9",
        "the body is not valid UTF-8 (bad byte at offset 8); form bodies must be UTF-8",
    ),
    "text-invalid-utf8": (
        "text/plain",
        b"\xfe\xff",
        "the body is not valid UTF-8 (bad byte at offset 0); "
        "send UTF-8 text, or JSON or form data with its Content-Type",
    ),
}


@pytest.mark.parametrize(("content_type", "body", "message"), list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_webhook_refuses_a_body_it_cannot_read(
    hooks: httpx.Client, api: httpx.Client, content_type: str | None, body: bytes, message: str
) -> None:
    before = run_count(api, "echo")
    started = time.perf_counter()
    answer = hooks.post("/hooks/echo", content=body, headers={"Content-Type": content_type} if content_type else {})
    assert time.perf_counter() - started < 2  # parser bombs are refused before they cost anything
    assert error_of(answer) == (400, "bad_request", message)
    assert run_count(api, "echo") == before


ODD_BUT_VALID: dict[str, tuple[str | None, bytes, Any]] = {
    "json-sent-as-text-stays-text": ("text/plain", b'{"admin": true}', '{"admin": true}'),
    "json-without-content-type-stays-text": (None, b'{"admin": true}', '{"admin": true}'),
    "json-under-form-type-is-a-form-key": (FORM, b'{"admin": true}', {'{"admin": true}': ""}),
    "json-suffix-type-is-json": ("application/vnd.github+json", b'{"a": [1]}', {"a": [1]}),
    "json-type-in-upper-case": ("Application/JSON; Charset=UTF-8", b'{"a": 1}', {"a": 1}),
    "json-top-level-scalar": (JSON, b"42", 42),
    "json-64-nested-arrays": (JSON, nested(64), json.loads(nested(64))),
    "json-brackets-inside-strings": (JSON, json.dumps({"s": "[" * 1000}).encode(), {"s": "[" * 1000}),
    "json-paired-surrogate-escape": (JSON, b'{"e": "\\ud83d\\ude00"}', {"e": "\U0001f600"}),
    "json-nul-character": (JSON, b'{"s": "a\\u0000b"}', {"s": "a\x00b"}),
    "json-utf8-bom": (JSON, b'\xef\xbb\xbf{"a": 1}', {"a": 1}),
    "json-integer-of-4300-digits": (JSON, b"[" + b"7" * 4300 + b"]", [int("7" * 4300)]),
    "empty-json-body": (JSON, b"", None),
    "form-repeated-keys-become-a-list": (FORM, b"to=a&to=b&to=c", {"to": ["a", "b", "c"]}),
    "form-plus-and-escaped-plus": (FORM, b"q=a+b%2Bc", {"q": "a b+c"}),
    "form-semicolon-is-not-a-separator": (FORM, b"a=1;b=2", {"a": "1;b=2"}),
    "form-field-without-value": (FORM, b"flag&x=", {"flag": "", "x": ""}),
    "form-nul-escape": (FORM, b"s=a%00b", {"s": "a\x00b"}),
}


@pytest.mark.parametrize(("content_type", "body", "payload"), list(ODD_BUT_VALID.values()), ids=list(ODD_BUT_VALID))
def test_webhook_keeps_an_odd_but_valid_body_exactly(
    hooks: httpx.Client, api: httpx.Client, content_type: str | None, body: bytes, payload: Any
) -> None:
    before = run_count(api, "echo")
    answer = hooks.post("/hooks/echo", content=body, headers={"Content-Type": content_type} if content_type else {})
    assert answer.status_code == 202, answer.text
    run = api.get(f"/api/runs/{answer.json()['run_id']}")
    assert run.status_code == 200
    assert run.json()["trigger"]["payload"] == payload
    assert run_count(api, "echo") == before + 1


def test_webhook_form_with_six_thousand_fields_is_read_quickly(hooks: httpx.Client, api: httpx.Client) -> None:
    body = "&".join(f"k{i}=v" for i in range(6000)).encode()
    assert len(body) < MAX_BODY
    started = time.perf_counter()
    answer = hooks.post("/hooks/echo", content=body, headers={"Content-Type": FORM})
    assert answer.status_code == 202, answer.text
    assert time.perf_counter() - started < 2
    payload = newest_run(api, "echo")["trigger"]["payload"]  # type: ignore[index]
    assert len(payload) == 6000
    assert payload["k5999"] == "v"


def test_webhook_empty_body_fails_the_payload_schema(hooks: httpx.Client, api: httpx.Client) -> None:
    before = run_count(api, "typed")
    answer = hooks.post("/hooks/typed", content=b"", headers={"Content-Type": JSON})
    status, code, message = error_of(answer)
    assert (status, code) == (422, "invalid_payload")
    assert message == "the payload does not match the webhook's schema: at /: None is not of type 'object'"
    assert run_count(api, "typed") == before


def chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    """A body of ``total`` bytes sent chunked: a generator gives httpx no Content-Length."""
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield b"x" * piece
        sent += piece


@pytest.mark.parametrize("total", [MAX_BODY + 1, 16 * MAX_BODY], ids=["one-byte-over", "sixteen-times-over"])
def test_webhook_refuses_a_chunked_body_over_max_body(hooks: httpx.Client, api: httpx.Client, total: int) -> None:
    before = run_count(api, "echo")
    answer = hooks.post("/hooks/echo", content=chunks(total), headers={"Content-Type": "text/plain"})
    assert "content-length" not in answer.request.headers
    assert answer.request.headers["transfer-encoding"] == "chunked"
    assert error_of(answer) == (413, "payload_too_large", TOO_LARGE)
    assert run_count(api, "echo") == before


def test_webhook_accepts_a_chunked_body_of_exactly_max_body(hooks: httpx.Client, api: httpx.Client) -> None:
    answer = hooks.post("/hooks/echo", content=chunks(MAX_BODY), headers={"Content-Type": "text/plain"})
    assert answer.status_code == 202, answer.text
    assert api.get(f"/api/runs/{answer.json()['run_id']}").json()["trigger"]["payload"] == "x" * MAX_BODY


# -- framing: requests written byte by byte -------------------------------------------------------------


def exchange(server: ServeProcess, request: bytes, *, wait: float = 5.0, close_after_send: bool = False) -> bytes:
    """Send raw bytes and read until the server closes (or ``wait`` passes); the bytes it answered."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(request)
        if close_after_send:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer


def head(server: ServeProcess, *lines: str, keep_alive: bool = False) -> bytes:
    fields = ["POST /hooks/echo HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Content-Type: {JSON}", *lines]
    if not keep_alive:
        fields.append("Connection: close")
    return ("\r\n".join(fields) + "\r\n\r\n").encode()


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def one_response(sock: socket.socket) -> bytes:
    """Read exactly one response (head and Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head_, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head_, re.IGNORECASE).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head_ + b"\r\n\r\n" + body


def test_webhook_refuses_a_declared_length_over_max_body_before_reading_it(
    server: ServeProcess, api: httpx.Client
) -> None:
    before = run_count(api, "echo")
    started = time.perf_counter()
    answer = exchange(server, head(server, "Content-Length: 999999999999") + b"{}")
    assert time.perf_counter() - started < 2  # answered at once, not after waiting for a terabyte
    assert statuses(answer) == [413]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": {"code": "payload_too_large", "message": TOO_LARGE}}
    assert run_count(api, "echo") == before


def test_webhook_reads_only_the_declared_length_and_the_rest_is_not_a_request(
    server: ServeProcess, api: httpx.Client
) -> None:
    before = run_count(api, "echo")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head(server, "Content-Length: 8", keep_alive=True) + b'{"a": 1}')
        first = one_response(sock)
        sock.sendall(b', "admin": true}')  # what the sender claimed was not part of the body
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert statuses(first) == [202]
    assert statuses(rest) == [400]  # read as the next request, which is not HTTP
    assert rest.endswith(b"Invalid HTTP request received.")
    assert run_count(api, "echo") == before + 1
    assert newest_run(api, "echo")["trigger"]["payload"] == {"a": 1}  # type: ignore[index]


def test_webhook_stores_nothing_when_the_body_is_shorter_than_declared(server: ServeProcess, api: httpx.Client) -> None:
    before = run_count(api, "echo")
    answer = exchange(server, head(server, "Content-Length: 50") + b'{"a": 1}', wait=1, close_after_send=True)
    assert b"202" not in answer
    time.sleep(0.3)
    assert run_count(api, "echo") == before


FRAMING = {
    "content-length-and-chunked": ["Content-Length: 2", "Transfer-Encoding: chunked"],
    "content-length-twice": ["Content-Length: 2", "Content-Length: 8"],
    "content-length-not-a-number": ["Content-Length: two"],
    "content-length-negative": ["Content-Length: -1"],
}


@pytest.mark.parametrize("fields", list(FRAMING.values()), ids=list(FRAMING))
def test_webhook_ambiguous_framing_is_refused_by_the_http_layer(
    server: ServeProcess, api: httpx.Client, fields: list[str]
) -> None:
    before = run_count(api, "echo")
    answer = exchange(server, head(server, *fields) + b"2\r\n{}\r\n0\r\n\r\n")
    assert statuses(answer) == [400]
    assert answer.endswith(b"Invalid HTTP request received.")
    assert run_count(api, "echo") == before
