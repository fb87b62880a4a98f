"""The db connector: ``db.query`` and ``db.execute`` on SQLite, PostgreSQL and MySQL/MariaDB.

Each connection gets one synchronous SQLAlchemy engine, created on first use and
disposed by ``aclose``. Statements run in worker threads, at most ``pool_size`` at a
time. SQL is static text; values travel only as bound parameters (``:name``).
SQLAlchemy and the drivers are imported on first use.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, Field, SecretStr, model_validator

from weir.connectors.base import ActionContext, ActionInput, ConnectionSettings, Connector, Size, action, format_size
from weir.errors import PermanentError, TransientError
from weir.schemas.common import Duration

if TYPE_CHECKING:
    import anyio
    from sqlalchemy.engine import Engine

T = TypeVar("T")
InT = TypeVar("InT", bound=ActionInput)
DEFAULT_TIMEOUT = timedelta(seconds=30)
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_RESULT_BYTES = 10 * 1024**2
_FETCH_ROWS = 500  # rows fetched at a time, so an oversized result stops early
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_EXTRAS = {"psycopg": "postgres", "pymysql": "mysql"}
# SQLSTATE classes worth a retry: connection, transaction rollback (deadlock, serialization),
# insufficient resources, operator intervention (statement timeout, shutdown), system error.
_TRANSIENT_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58"}
# MySQL server errors worth a retry: lock wait timeout, deadlock, too many connections,
# server shutting down, max_execution_time exceeded. Client errors (2000-2999) are all transient.
_TRANSIENT_MYSQL_CODES = {1040, 1053, 1205, 1213, 3024}
_TIMEOUT_MARKERS = ("timeout", "timed out", "canceling statement", "lock wait")


class DbConnection(ConnectionSettings):
    """Settings of a database connection."""

    url: SecretStr = Field(
        description="SQLAlchemy URL, e.g. 'postgresql://user:pass@host/db', 'mysql://...', 'sqlite:///path.db'."
    )
    pool_size: int = Field(5, ge=1, le=100, description="Connections kept open and statements run at once. Default 5.")
    timeout: Duration = Field(DEFAULT_TIMEOUT, description="Connect and statement timeout. Default 30s.")
    max_result_bytes: Size = Field(
        DEFAULT_MAX_RESULT_BYTES,
        gt=0,
        description="Largest db.query result accepted, measured as the JSON of its rows, e.g. '1MiB'; a bigger"
        " result fails the step (the output is stored with the run). Default 10MiB.",
    )


class DbQuery(ActionInput):
    """Input of ``db.query``."""

    sql: str = Field(
        description=r"One static SQL statement; refer to values as :name and pass them in params (write \: for a"
        " literal colon before a word)."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Values bound to the :name placeholders.")
    max_rows: int = Field(
        DEFAULT_MAX_ROWS, ge=1, description="Fail instead of returning more rows than this. Default 10000."
    )


class DbQueryResult(BaseModel):
    """Output of ``db.query``."""

    rows: list[dict[str, Any]] = Field(description="The rows, each an object keyed by column name.")
    row_count: int = Field(description="How many rows were returned.")


class DbExecute(ActionInput):
    """Input of ``db.execute``."""

    sql: str = Field(description="One static SQL statement; refer to values as :name.")
    params: dict[str, Any] | None = Field(None, description="Values bound to the :name placeholders.")
    many: list[dict[str, Any]] | None = Field(
        None, description="Run the statement once per parameter set, all in one transaction."
    )

    @model_validator(mode="after")
    def _params_or_many(self) -> DbExecute:
        if self.params is not None and self.many is not None:
            raise ValueError("set either params or many, not both")
        return self


class DbExecuteResult(BaseModel):
    """Output of ``db.execute``."""

    row_count: int = Field(description="Rows the statement changed, as the database reports it (-1 if unknown).")


class DbConnector(Connector[DbConnection]):
    """Runs SQL through SQLAlchemy in worker threads; one engine per connection."""

    name = "db"
    connection_model = DbConnection

    def __init__(self, connection: DbConnection, *, connection_name: str | None = None) -> None:
        super().__init__(connection, connection_name=connection_name)
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    @action("query", input=DbQuery, output=DbQueryResult, idempotent=True)
    async def query(self, ctx: ActionContext, inp: DbQuery) -> DbQueryResult:
        """Run a statement that returns rows; its transaction is rolled back, so use db.execute to write."""
        rows = await self._run("db.query", self._query_sync, inp)
        return DbQueryResult(rows=rows, row_count=len(rows))

    @action("execute", input=DbExecute, output=DbExecuteResult)
    async def execute(self, ctx: ActionContext, inp: DbExecute) -> DbExecuteResult:
        """Run a statement that changes data (once, or once per ``many`` item) and commit."""
        if inp.many == []:
            return DbExecuteResult(row_count=0)
        return DbExecuteResult(row_count=await self._run("db.execute", self._execute_sync, inp))

    async def aclose(self) -> None:
        """Dispose of the engine and its pooled connections."""
        import anyio

        engine, self._engine = self._engine, None
        if engine is not None:
            await anyio.to_thread.run_sync(engine.dispose)

    async def _run(self, uses: str, func: Callable[[Engine, InT], T], inp: InT) -> T:
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.connection.pool_size)
        return await anyio.to_thread.run_sync(self._guarded, uses, func, inp, limiter=self._limiter)

    def _guarded(self, uses: str, func: Callable[[Engine, InT], T], inp: InT) -> T:
        """Run ``func`` in this worker thread and turn database failures into weir errors."""
        from sqlalchemy import exc as sa_exc

        try:
            return func(self._get_engine(uses), inp)
        except sa_exc.DBAPIError as exc:
            raise self._classified(uses, exc) from exc
        except sa_exc.TimeoutError as exc:  # no pooled connection came free in time
            raise TransientError(f"{uses} failed: {exc.args[0]}", **self._where(uses), timeout=True) from exc
        except sa_exc.SQLAlchemyError as exc:  # e.g. a bind parameter without a value
            raise PermanentError(f"{uses} failed: {self._message(exc)}", **self._where(uses)) from exc

    def _query_sync(self, engine: Engine, inp: DbQuery) -> list[dict[str, Any]]:
        from sqlalchemy import text

        with engine.connect() as conn:
            result = conn.execute(text(inp.sql), inp.params)
            if not result.returns_rows:
                raise PermanentError(
                    "db.query ran a statement that returns no rows (and rolled it back); use db.execute for writes",
                    **self._where("db.query"),
                )
            keys = list(result.keys())
            rows: list[dict[str, Any]] = []
            size, cap = 2, self.connection.max_result_bytes  # 2: the brackets of the JSON list
            while batch := result.fetchmany(min(_FETCH_ROWS, inp.max_rows + 1 - len(rows))):
                for raw in batch:
                    row = {key: to_json(value) for key, value in zip(keys, raw, strict=True)}
                    size += len(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()) + 1
                    if size > cap:
                        raise PermanentError(
                            f"db.query returned more than max_result_bytes ({format_size(cap)}) of rows as JSON"
                            f" (the limit was passed at row {len(rows) + 1}); select fewer rows or columns, or raise"
                            " max_result_bytes on the connection",
                            **self._where("db.query"),
                        )
                    rows.append(row)
                if len(rows) > inp.max_rows:
                    raise PermanentError(
                        f"db.query returned more than max_rows ({inp.max_rows}) rows; add LIMIT to the query or raise"
                        " max_rows",
                        **self._where("db.query"),
                    )
            return rows

    def _execute_sync(self, engine: Engine, inp: DbExecute) -> int:
        from sqlalchemy import text

        with engine.begin() as conn:
            result = conn.execute(text(inp.sql), inp.many if inp.many is not None else (inp.params or {}))
            return int(result.rowcount)

    def _get_engine(self, uses: str) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._create_engine(uses)
            return self._engine

    def _create_engine(self, uses: str) -> Engine:
        from sqlalchemy import create_engine, exc as sa_exc
        from sqlalchemy.engine import make_url

        try:
            url = make_url(self.connection.url.get_secret_value())
        except sa_exc.ArgumentError:
            raise PermanentError(
                "the connection's url is not a SQLAlchemy URL; write e.g. 'postgresql://user:pass@host/db'",
                **self._where(uses),
            ) from None  # the parser's message would show the URL, password and all
        url = url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))
        seconds = max(1, round(self.connection.timeout.total_seconds()))
        options: dict[str, Any] = {"pool_pre_ping": True}
        backend = url.get_backend_name()
        if backend == "postgresql":
            # The URL's own ``options`` (e.g. ``-csearch_path=app``) would be replaced by ours: keep both.
            given = url.query.get("options")
            given = " ".join(given) if isinstance(given, tuple) else given
            url = url.difference_update_query(["options"])
            timeout_option = f"-c statement_timeout={seconds * 1000}"
            connect_args = {
                "connect_timeout": seconds,
                "options": f"{given} {timeout_option}" if given else timeout_option,
            }
        elif backend in ("mysql", "mariadb"):
            connect_args = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
        elif backend == "sqlite":
            connect_args = {"timeout": seconds}
        else:
            connect_args = {}
        if backend != "sqlite":
            options |= {"pool_size": self.connection.pool_size, "max_overflow": 0, "pool_timeout": seconds}
        try:
            return create_engine(url, connect_args=connect_args, **options)
        except ImportError as exc:
            extra = _EXTRAS.get(url.get_driver_name())
            hint = f"pip install 'weir[{extra}]'" if extra else f"install the {url.get_driver_name()} driver"
            raise PermanentError(
                f"the database driver {url.get_driver_name()} is not installed ({exc}); {hint}", **self._where(uses)
            ) from exc
        except sa_exc.NoSuchModuleError as exc:
            raise PermanentError(
                f"SQLAlchemy knows no database '{url.drivername}'; use sqlite, postgresql or mysql",
                **self._where(uses),
            ) from exc

    def _classified(self, uses: str, exc: Any) -> TransientError | PermanentError:
        """A TransientError for lost connections, timeouts, deadlocks and locks; PermanentError otherwise."""
        from sqlalchemy import exc as sa_exc

        orig, message = exc.orig, self._message(exc)
        sqlstate = getattr(orig, "sqlstate", None)
        code = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
        if exc.connection_invalidated:
            transient = True
        elif hasattr(orig, "sqlstate"):  # psycopg: connection failures carry no SQLSTATE
            transient = (
                sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES if sqlstate else isinstance(exc, sa_exc.OperationalError)
            )
        elif code is not None:  # pymysql: (code, message)
            transient = code in _TRANSIENT_MYSQL_CODES or 2000 <= code < 3000
        else:  # sqlite and others: busy or locked databases and unreachable servers are worth a retry
            transient = isinstance(exc, sa_exc.OperationalError) and any(
                marker in message.lower() for marker in ("locked", "busy", "unable to open", "disk i/o", "connect")
            )
        text = f"{uses} failed: {message}"
        if transient:
            timeout = sqlstate == "57014" or code == 3024 or any(m in message.lower() for m in _TIMEOUT_MARKERS)
            return TransientError(text, **self._where(uses), timeout=timeout)
        return PermanentError(text, **self._where(uses))

    def _message(self, exc: Any) -> str:
        """The database's own message, without SQLAlchemy's decoration and without the URL's password."""
        orig = getattr(exc, "orig", None) or exc
        args: tuple[Any, ...] = getattr(orig, "args", ())
        if len(args) >= 2 and isinstance(args[0], int):
            message = f"{args[1]} (error {args[0]})"
        elif args and isinstance(args[0], str):
            message = args[0]
        else:
            message = str(orig)
        password = _password(self.connection.url.get_secret_value())
        return (message.replace(password, "***") if password else message).strip()

    def _where(self, uses: str) -> dict[str, Any]:
        return {"connection": self.connection_name, "action": uses}


def _password(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def to_json(value: Any) -> Any:
    """``value`` as JSON: whole Decimals become int, others float; times ISO strings; bytes base64; UUIDs str."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    return str(value)
