"""Fakes of the business APIs the example workflows (``workflows/``) call, in one Starlette app.

Each API lives under its own prefix and checks its credentials like the real one would (401
otherwise); the connections of ``workflows/weir.toml`` point their ``base_url`` at the prefix:

- ``/shop``: the web shop (bearer ``SHOP_TOKEN``): the product catalog, inventory availability and
  reservations, shipments, order confirmation, search reindexing;
- ``/crm`` (bearer ``CRM_TOKEN``): accounts, customers, company enrichment;
- ``/analytics`` (``X-Api-Key: ANALYTICS_KEY``): engagement numbers;
- ``/payments`` (bearer ``PAYMENTS_KEY``): payment methods by country, charges, refunds, settlements;
- ``/store`` (basic auth ``STORE_USER``/``STORE_PASSWORD``): an HTTP object store; ``PUT /<key>`` keeps
  the raw body and its content type in ``objects``, ``GET /<key>`` returns it.

Every request is recorded in ``calls`` (path below the prefix, query, JSON body, raw body, headers,
start and end on ``time.monotonic``). A test sets the data the APIs serve (``accounts``, ``customers``,
``products``, ...), scripts error answers with ``fail``, and slows endpoints down with ``slow``.
Call ``reset()`` between tests.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SHOP_TOKEN = "shop-api-token-4711"
CRM_TOKEN = "crm-api-token-0815"
ANALYTICS_KEY = "analytics-key-1234"
PAYMENTS_KEY = "payments-key-9876"
STORE_USER, STORE_PASSWORD = "exporter", "store-pass-2468"
_STORE_AUTH = "Basic " + base64.b64encode(f"{STORE_USER}:{STORE_PASSWORD}".encode()).decode()
_CREDENTIALS = {
    "shop": ("authorization", f"Bearer {SHOP_TOKEN}"),
    "crm": ("authorization", f"Bearer {CRM_TOKEN}"),
    "analytics": ("x-api-key", ANALYTICS_KEY),
    "payments": ("authorization", f"Bearer {PAYMENTS_KEY}"),
    "store": ("authorization", _STORE_AUTH),
}
_RAW_BODIES = {"store"}
"""APIs that take any body (files), not JSON."""


@dataclass
class Call:
    """One request as the fake saw it."""

    api: str
    method: str
    path: str
    """Below the API's prefix, e.g. ``/accounts``."""
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    started: float
    ended: float = 0.0
    body: bytes = b""
    """The raw request body."""

    @property
    def line(self) -> str:
        """``"POST /charges"``: what a test usually compares."""
        return f"{self.method} {self.path}"


@dataclass
class _Rule:
    api: str
    method: str
    path: str
    status: int
    body: Any
    times: int | None


@dataclass
class FakeApis:
    """State of the fake; ``app`` serves it."""

    calls: list[Call] = field(default_factory=list)
    accounts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """CRM: the accounts of each segment (``GET /accounts?segment=``)."""
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """CRM: customer profiles by id; ``PATCH`` merges into them."""
    companies: dict[str, dict[str, Any]] = field(default_factory=dict)
    """CRM enrichment: company data by email domain; unknown domains answer 404."""
    engagement: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Analytics: engagement numbers by user id."""
    stock: dict[str, int] = field(default_factory=dict)
    """Shop: units in stock by SKU."""
    documents: dict[tuple[str, int], int] = field(default_factory=dict)
    """Shop search: documents indexed per (region, shard)."""
    settlements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Payments: settlements by day."""
    payment_methods: dict[str, list[str]] = field(default_factory=dict)
    """Payments: the methods offered per country (``GET /payment-methods?country=``); others get card only."""
    products: list[dict[str, Any]] = field(default_factory=list)
    """Shop: the catalog (``GET /products``)."""
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    """Store: body and content type of each object, by key (the path below ``/store``)."""
    max_in_flight: dict[str, int] = field(default_factory=dict)
    """Most requests in flight at once, per ``"METHOD /path"``."""
    _rules: list[_Rule] = field(default_factory=list)
    _slow: dict[tuple[str, str, str], float] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        self.app = Starlette(routes=[Route("/{api}/{path:path}", self._handle, methods=methods)])

    def reset(self) -> None:
        for value in (self.calls, self.accounts, self.customers, self.companies, self.engagement, self.stock):
            value.clear()
        for other in (self.documents, self.settlements, self.max_in_flight, self._rules, self._slow):
            other.clear()
        for more in (self.payment_methods, self.products, self.objects):
            more.clear()
        self._in_flight.clear()
        self._ids = itertools.count(1)

    def fail(self, api: str, method: str, path: str, status: int, body: Any = None, *, times: int | None = 1) -> None:
        """Answer ``method path`` of ``api`` with ``status`` and ``body`` the next ``times`` times (None: always)."""
        self._rules.append(_Rule(api, method.upper(), path, status, body, times))

    def heal(self) -> None:
        """Forget every scripted failure: the service works again."""
        self._rules.clear()

    def slow(self, api: str, method: str, path: str, seconds: float) -> None:
        """Let ``method path`` of ``api`` take ``seconds`` before it answers."""
        self._slow[(api, method.upper(), path)] = seconds

    def made(self, api: str) -> list[str]:
        """``"METHOD /path"`` of every call to ``api``, in order."""
        return [call.line for call in self.calls if call.api == api]

    def of(self, api: str, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if (c.api, c.method, c.path) == (api, method.upper(), path)]

    # -- serving -----------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        api, path = request.path_params["api"], "/" + request.path_params["path"]
        if api not in _CREDENTIALS:
            return JSONResponse({"error": f"no API at /{api}"}, 404)
        body = await request.body()
        try:
            data = json.loads(body) if body and api not in _RAW_BODIES else None
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, 400)
        call = Call(
            api,
            request.method,
            path,
            dict(request.query_params),
            data,
            dict(request.headers),
            time.monotonic(),
            0.0,
            body,
        )
        self.calls.append(call)
        header, expected = _CREDENTIALS[api]
        if request.headers.get(header) != expected:
            call.ended = time.monotonic()
            return JSONResponse({"error": "unauthorized"}, 401)
        kind = call.line
        self._in_flight[kind] = self._in_flight.get(kind, 0) + 1
        self.max_in_flight[kind] = max(self.max_in_flight.get(kind, 0), self._in_flight[kind])
        try:
            delay = self._slow.get((api, request.method, path))
            if delay:
                await asyncio.sleep(delay)
            rule = next(
                (r for r in self._rules if (r.api, r.method, r.path) == (api, request.method, path) and r.times != 0),
                None,
            )
            if rule is not None:
                if rule.times is not None:
                    rule.times -= 1
                return JSONResponse(rule.body if rule.body is not None else {"error": "scripted failure"}, rule.status)
            response = getattr(self, f"_{api}")(request.method, path, call)
            assert isinstance(response, Response)
            return response
        finally:
            self._in_flight[kind] -= 1
            call.ended = time.monotonic()

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def _shop(self, method: str, path: str, call: Call) -> Response:
        body = call.json or {}
        if (method, path) == ("POST", "/inventory/availability"):
            missing = [
                {"sku": line["sku"], "qty": line["qty"] - self.stock.get(line["sku"], 0)}
                for line in body["lines"]
                if self.stock.get(line["sku"], 0) < line["qty"]
            ]
            return JSONResponse({"in_stock": not missing, "missing": missing})
        if (method, path) == ("POST", "/inventory/reservations"):
            return JSONResponse({"id": self._next_id("res"), "order_id": body["order_id"], "hold": body["hold"]}, 201)
        if method == "DELETE" and path.startswith("/inventory/reservations/"):
            return Response(status_code=204)
        if (method, path) == ("POST", "/shipments"):
            shipment = self._next_id("shp")
            return JSONResponse({"id": shipment, "carrier": "DHL", "tracking_number": f"JD0146{shipment[-4:]}"}, 201)
        if method == "POST" and re.fullmatch(r"/orders/[^/]+/confirm", path):
            return JSONResponse({"order_id": path.split("/")[2], "status": "confirmed"})
        if (method, path) == ("GET", "/products"):
            return JSONResponse({"products": self.products, "page": 1, "per_page": int(call.query.get("per_page", 50))})
        if (method, path) == ("POST", "/admin/search/reindex"):
            documents = self.documents.get((body["region"], body["shard"]), 0)
            return JSONResponse({"region": body["region"], "shard": body["shard"], "documents": documents})
        return JSONResponse({"error": f"shop has no {method} {path}"}, 404)

    def _crm(self, method: str, path: str, call: Call) -> Response:
        if (method, path) == ("GET", "/accounts"):
            return JSONResponse({"accounts": self.accounts.get(call.query.get("segment", "all"), [])})
        if (method, path) == ("POST", "/accounts"):
            account = {"id": self._next_id("acc"), **(call.json or {})}
            return JSONResponse(account, 201)
        if (method, path) == ("GET", "/enrichment/companies"):
            company = self.companies.get(call.query.get("domain", ""))
            if company is None:
                return JSONResponse({"error": "unknown company"}, 404)
            return JSONResponse(company)
        match = re.fullmatch(r"/customers/([^/]+)", path)
        if match and match[1] in self.customers:
            if method == "PATCH":
                self.customers[match[1]].update(call.json or {})
            if method in ("GET", "PATCH"):
                return JSONResponse(self.customers[match[1]])
        return JSONResponse({"error": f"crm has no {method} {path}"}, 404)

    def _analytics(self, method: str, path: str, call: Call) -> Response:
        match = re.fullmatch(r"/v1/users/([^/]+)/engagement", path)
        if method == "GET" and match and match[1] in self.engagement:
            return JSONResponse({"window": call.query.get("window"), **self.engagement[match[1]]})
        return JSONResponse({"error": f"analytics has no {method} {path}"}, 404)

    def _payments(self, method: str, path: str, call: Call) -> Response:
        body = call.json or {}
        if (method, path) == ("GET", "/payment-methods"):
            country = call.query.get("country", "")
            return JSONResponse({"country": country, "methods": self.payment_methods.get(country, ["card"])})
        if (method, path) == ("POST", "/charges"):
            charge = {"id": self._next_id("ch"), "status": "succeeded", "amount": body["amount"]}
            return JSONResponse(charge, 201)
        if (method, path) == ("POST", "/refunds"):
            return JSONResponse({"id": self._next_id("re"), "charge": body["charge"], "status": "succeeded"}, 201)
        if (method, path) == ("GET", "/settlements"):
            return JSONResponse({"settlements": self.settlements.get(call.query.get("date", ""), [])})
        return JSONResponse({"error": f"payments has no {method} {path}"}, 404)

    def _store(self, method: str, path: str, call: Call) -> Response:
        if method == "PUT":
            created = path not in self.objects
            self.objects[path] = (call.body, call.headers.get("content-type", "application/octet-stream"))
            return JSONResponse({"key": path, "size": len(call.body)}, 201 if created else 200)
        if method == "GET" and path in self.objects:
            content, content_type = self.objects[path]
            return Response(content, media_type=content_type)
        return JSONResponse({"error": f"no object {path}"}, 404)
