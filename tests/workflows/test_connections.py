"""ConnectionPool: settings rendered from secrets, one instance per connection, breaker and rate limit."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import serve_in_thread
from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, action
from weir.connectors.http import HttpConnector
from weir.connectors.registry import ConnectorRegistry
from weir.errors import CircuitOpen, ConfigError, PermanentError, TransientError
from weir.schemas.repo import RepoConfig
from weir.workflows.connections import ConnectionPool, TokenBucket
from weir.workflows.templating import Templates

pytestmark = pytest.mark.anyio
CTX = ActionContext(run_id="r1", step_id="s1")
SECRET = "s3cr3t-Value-42"


class FlakyConnection(ConnectionSettings):
    url: str
    token: SecretStr | None = None
    retries: int = 0
    fail_close: bool = False

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith("flaky://"):
            raise ValueError(f"url {value!r} must start with flaky://")  # echoes its input on purpose
        return value


class Work(ActionInput):
    fail: str | None = None
    wait: bool = False
    sleep: float = 0


class FlakyConnector(Connector[FlakyConnection]):
    name = "flaky"
    connection_model = FlakyConnection

    def __init__(self, connection: FlakyConnection, *, connection_name: str | None = None) -> None:
        super().__init__(connection, connection_name=connection_name)
        self.calls = 0
        self.closed = False
        self.gate = asyncio.Event()
        CREATED.append(self)

    @action("work", input=Work)
    async def work(self, ctx: ActionContext, inp: Work) -> dict[str, Any]:
        self.calls += 1
        if inp.wait:
            await self.gate.wait()
        await asyncio.sleep(inp.sleep)
        if inp.fail == "permanent":
            raise PermanentError("the service said no", connection=self.connection_name)
        if inp.fail == "transient":
            raise TransientError("the service is down", connection=self.connection_name)
        return {"url": self.connection.url, "connection": self.connection_name}

    async def aclose(self) -> None:
        self.closed = True
        if self.connection.fail_close:
            raise RuntimeError("socket already gone")


CREATED: list[FlakyConnector] = []
WORK = FlakyConnector.actions["work"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _forget_instances() -> None:
    CREATED.clear()


def make_pool(connections: dict[str, Any], secrets: object = None, **kwargs: Any) -> ConnectionPool:
    registry = ConnectorRegistry(discover=False, extra={"flaky": FlakyConnector, "http": HttpConnector})
    config = RepoConfig.model_validate({"connections": connections})
    scope = {"secrets": {"FLAKY_URL": "flaky://db", "TOKEN": SECRET} if secrets is None else secrets, "env": {}}
    return ConnectionPool(registry, config, templates=Templates(), scope=scope, **kwargs)


MAIN = {"type": "flaky", "url": "{{ secrets.FLAKY_URL }}", "token": "{{ secrets.TOKEN }}"}


async def test_pool_renders_settings_from_secrets_scope() -> None:
    pool = make_pool({"main": MAIN})
    assert await pool.call(WORK, "main", CTX, {}) == {"url": "flaky://db", "connection": "main"}
    [instance] = CREATED
    assert instance.connection.token is not None
    assert instance.connection.token.get_secret_value() == SECRET


async def test_pool_reuses_one_instance_across_calls() -> None:
    pool = make_pool({"main": MAIN, "other": {**MAIN, "url": "flaky://other"}})
    for _ in range(3):
        await pool.call(WORK, "main", CTX, {})
    await pool.call(WORK, "other", CTX, {})
    assert [(i.connection_name, i.calls) for i in CREATED] == [("main", 3), ("other", 1)]


async def test_pool_creates_one_instance_for_concurrent_first_calls() -> None:
    pool = make_pool({"main": MAIN})
    await asyncio.gather(*(pool.call(WORK, "main", CTX, {}) for _ in range(20)))
    assert [i.calls for i in CREATED] == [20]


async def test_pool_requires_connection_and_lists_fitting_ones() -> None:
    pool = make_pool({"b": MAIN, "a": MAIN, "mail": {"type": "http"}})
    with pytest.raises(ConfigError) as err:
        await pool.call(WORK, None, CTX, {})
    assert str(err.value) == (
        "'flaky.work' needs a connection: add connection = \"...\" to the step"
        " (flaky connections in weir.toml: 'b', 'a')"
    )
    with pytest.raises(ConfigError) as err:
        await make_pool({}).call(WORK, None, CTX, {})
    assert str(err.value) == (
        "'flaky.work' needs a connection: add connection = \"...\" to the step"
        ' (weir.toml has no flaky connection; add [connections.<name>] with type = "flaky")'
    )


async def test_pool_rejects_unknown_connection_and_wrong_type() -> None:
    pool = make_pool({"warehouse": MAIN, "api": {"type": "http"}})
    with pytest.raises(ConfigError) as err:
        await pool.call(WORK, "wharehouse", CTX, {})
    assert str(err.value) == "connection 'wharehouse' is not defined in weir.toml (did you mean 'warehouse'?)"
    with pytest.raises(ConfigError) as err:
        await pool.call(WORK, "api", CTX, {})
    assert str(err.value) == (
        "connection 'api' is of type 'http' but 'flaky.work' needs a flaky connection"
        " (flaky connections in weir.toml: 'warehouse')"
    )


async def test_pool_reports_bad_settings_by_key_without_secret_values() -> None:
    settings = {**MAIN, "url": "{{ secrets.TOKEN }}", "retries": "{{ secrets.TOKEN }}", "bogus": 1}
    # a scope whose secrets cannot be listed: what templates rendered is masked all the same
    pool = make_pool({"main": settings}, SimpleNamespace(TOKEN=SECRET))
    with pytest.raises(ConfigError) as err:
        await pool.call(WORK, "main", CTX, {})
    assert str(err.value) == (
        "connection 'main': setting 'url': Value error, url '***' must start with flaky://;"
        " setting 'retries': Input should be a valid integer, unable to parse string as an integer;"
        " setting 'bogus': Extra inputs are not permitted"
    )
    assert SECRET not in "".join(traceback.format_exception(err.value))


async def test_pool_retries_construction_once_the_secret_is_set() -> None:
    secrets: dict[str, str] = {}
    pool = make_pool({"main": MAIN}, secrets)
    with pytest.raises(ConfigError) as err:
        await pool.call(WORK, "main", CTX, {})
    assert str(err.value) == (
        "connection 'main': setting 'url': template error in '{{ secrets.FLAKY_URL }}':"
        " 'dict object' has no attribute 'FLAKY_URL'"
    )
    secrets.update(FLAKY_URL="flaky://db", TOKEN=SECRET)
    assert await pool.call(WORK, "main", CTX, {}) == {"url": "flaky://db", "connection": "main"}
    assert len(CREATED) == 1


def breaker_pool(clock: FakeClock, failures: int = 3) -> ConnectionPool:
    return make_pool({"main": {**MAIN, "circuit_breaker": {"failures": failures, "reset": "60s"}}}, clock=clock)


async def fail(pool: ConnectionPool, kind: str = "permanent") -> None:
    with pytest.raises(PermanentError if kind == "permanent" else TransientError):
        await pool.call(WORK, "main", CTX, {"fail": kind})


async def test_breaker_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = FakeClock()
    pool = breaker_pool(clock)
    for kind in ("permanent", "transient", "permanent"):
        await fail(pool, kind)
    clock.now += 18
    with pytest.raises(CircuitOpen) as err:
        await pool.call(WORK, "main", CTX, {})
    assert str(err.value) == "circuit of connection 'main' is open after 3 consecutive failures; calls resume in 42s"
    assert (err.value.connection, err.value.action, err.value.retry_after) == ("main", "flaky.work", 42)
    assert CREATED[0].calls == 3


async def test_breaker_success_resets_the_failure_count() -> None:
    pool = breaker_pool(FakeClock())
    for _ in range(3):
        await fail(pool)
        await fail(pool)
        await pool.call(WORK, "main", CTX, {})
    assert CREATED[0].calls == 9


async def test_breaker_half_open_trial_success_closes_the_circuit() -> None:
    clock = FakeClock()
    pool = breaker_pool(clock, failures=2)
    await fail(pool)
    await fail(pool)
    clock.now += 60
    await pool.call(WORK, "main", CTX, {})
    await fail(pool)  # one failure after closing does not open it again
    await pool.call(WORK, "main", CTX, {})
    assert CREATED[0].calls == 5


async def test_breaker_half_open_trial_failure_reopens_for_another_reset() -> None:
    clock = FakeClock()
    pool = breaker_pool(clock, failures=2)
    await fail(pool)
    await fail(pool)
    clock.now += 60
    await fail(pool, "transient")
    clock.now += 30
    with pytest.raises(CircuitOpen) as err:
        await pool.call(WORK, "main", CTX, {})
    assert str(err.value) == "circuit of connection 'main' is open after 3 consecutive failures; calls resume in 30s"
    assert CREATED[0].calls == 3


async def test_breaker_lets_one_trial_through_at_a_time() -> None:
    clock = FakeClock()
    pool = breaker_pool(clock, failures=1)
    await fail(pool)
    clock.now += 60
    trial = asyncio.create_task(pool.call(WORK, "main", CTX, {"wait": True}))
    await asyncio.sleep(0.01)
    with pytest.raises(CircuitOpen) as err:
        await pool.call(WORK, "main", CTX, {})
    assert (
        str(err.value) == "circuit of connection 'main' is open after 1 consecutive failure; a trial call is under way"
    )
    CREATED[0].gate.set()
    await trial
    await pool.call(WORK, "main", CTX, {})


async def test_breaker_ignores_bad_inputs() -> None:
    clock = FakeClock()
    pool = breaker_pool(clock, failures=1)
    for _ in range(3):
        with pytest.raises(ValidationError):
            await pool.call(WORK, "main", CTX, {"unknown": 1})
    await fail(pool)
    clock.now += 60
    with pytest.raises(ValidationError):  # a bad trial call gives the trial to the next call
        await pool.call(WORK, "main", CTX, {"sleep": "long"})
    await pool.call(WORK, "main", CTX, {})
    assert CREATED[0].calls == 2


async def test_breaker_counts_timeouts() -> None:
    pool = breaker_pool(FakeClock(), failures=1)
    ctx = ActionContext(run_id="r1", step_id="s1", timeout=0.01)
    with pytest.raises(TransientError) as err:
        await pool.call(WORK, "main", ctx, {"sleep": 5})
    assert (str(err.value), err.value.kind) == ("'flaky.work' timed out after 0.01s", "timeout")
    with pytest.raises(CircuitOpen):
        await pool.call(WORK, "main", CTX, {})


def test_token_bucket_computes_waits_from_the_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket("2/s", clock=clock)
    assert [bucket.reserve() for _ in range(4)] == [0, 0, 0.5, 1.0]
    clock.now += 1.0  # the two waiters have had their tokens; the bucket is empty again
    assert bucket.reserve() == 0.5
    clock.now += 10
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0.5]
    assert (TokenBucket("600/m", clock=clock).burst, TokenBucket("0.5/s", clock=clock).burst) == (10, 1)
    hourly = TokenBucket("1/h", clock=clock)
    assert [hourly.reserve(), hourly.reserve()] == [0, 3600]


async def test_pool_rate_limit_delays_calls_and_drops_none() -> None:
    pool = make_pool({"main": {**MAIN, "rate_limit": "20/s"}})
    start = time.monotonic()
    results = await asyncio.gather(*(pool.call(WORK, "main", CTX, {}) for _ in range(25)))
    elapsed = time.monotonic() - start
    assert len(results) == 25
    assert 0.2 <= elapsed < 2  # 20 at once, then 5 more at 50 ms intervals


async def test_pool_rejects_a_rate_limit_of_zero() -> None:
    pool = make_pool({"main": {**MAIN, "rate_limit": "0/s"}})
    with pytest.raises(ConfigError, match=r"^rate_limit '0/s' allows no calls; write e.g. '10/s'$"):
        await pool.call(WORK, "main", CTX, {})
    assert CREATED == []


async def test_pool_aclose_closes_all_even_when_one_fails(caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool({"a": {**MAIN, "fail_close": True}, "b": MAIN})
    await pool.call(WORK, "a", CTX, {})
    await pool.call(WORK, "b", CTX, {})
    with caplog.at_level(logging.ERROR, logger="weir.connections"):
        await pool.aclose()
    assert [(i.connection_name, i.closed) for i in CREATED] == [("a", True), ("b", True)]
    assert [r.getMessage() for r in caplog.records] == ["closing connection 'a' (flaky) failed"]


async def test_pool_reuses_one_http_client_for_default_and_named_connections() -> None:
    async def peer(request: Request) -> Response:
        assert request.client is not None
        return JSONResponse({"port": request.client.port})

    app = Starlette(routes=[Route("/peer", peer)])
    request = HttpConnector.actions["request"]
    with serve_in_thread(app) as url:
        pool = make_pool({"api": {"type": "http", "base_url": "{{ secrets.API_URL }}"}}, {"API_URL": url})
        try:
            default = [await pool.call(request, None, CTX, {"url": f"{url}/peer"}) for _ in range(3)]
            named = [await pool.call(request, "api", CTX, {"url": "peer"}) for _ in range(3)]
        finally:
            await pool.aclose()
    # one pooled client per connection: every call of a connection arrives over the same kept-alive socket
    assert len({r["json"]["port"] for r in default}) == 1
    assert len({r["json"]["port"] for r in named}) == 1
    assert default[0]["json"]["port"] != named[0]["json"]["port"]
