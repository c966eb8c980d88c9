"""Read-only SQL over the catalog for ``POST /v1/query``: one SELECT, no files, no settings.

Defence in layers, each enough on its own for the cases it names:

1. Parse: DuckDB's own parser must find exactly one statement and it must be a SELECT (so no
   COPY, ATTACH, INSTALL, LOAD, PRAGMA, SET, CREATE, EXPORT, CALL, ...).
2. Connection: a fresh in-memory DuckDB that attaches ``WS/catalog.duckdb`` READ_ONLY, then
   allows file reads only under the workspace's table folders (what the views read), turns
   ``enable_external_access`` off (no read_csv('/etc/passwd'), glob('/*'), read_text, httpfs) and
   locks the configuration, so a query cannot undo any of it. An in-memory database, not
   ``duckdb.connect(catalog)``: DuckDB shares one instance per file in a process, and the engine's
   plain read-only connections (stats, concepts) must not inherit these settings or clash with them.
3. Limits: a memory limit, a row cap (``LIMIT cap + 1`` on top, to tell a truncated result) and a
   timer that calls ``con.interrupt()`` when the time limit passes.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import threading
import uuid
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from engine import schema
from engine.workspace import Workspace


class QueryError(ValueError):
    """A query the sandbox refuses or that failed; ``code`` says which (invalid_sql, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class QueryLimits:
    max_rows: int = 10_000
    max_bytes: int = 32 << 20
    timeout_s: float = 10.0
    memory_limit: str = "1GB"
    threads: int = 2


@dataclass
class QueryResult:
    columns: list[dict]  # [{"name", "type"}] in result order
    rows: list[list]  # JSON-safe values
    truncated: bool  # more rows existed than the cap


def check_statement(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise QueryError unless ``sql`` parses as exactly one SELECT."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError("invalid_sql", f"cannot parse: {first_line(e)}") from None
    if len(statements) != 1:
        raise QueryError("invalid_sql", f"send exactly one statement, not {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        kind = statements[0].type.name
        raise QueryError("read_only", f"only SELECT is allowed, not {kind}")


def open_sandbox(ws: Workspace, limits: QueryLimits) -> duckdb.DuckDBPyConnection:
    """The locked-down connection described in the module docstring."""
    # DuckDB adds its spill folder to the allowed directories (default: ./.tmp of the server's
    # working directory): keep it inside the workspace's scratch folder instead.
    config = {
        "memory_limit": limits.memory_limit,
        "threads": max(1, limits.threads),
        "temp_directory": ws.path(ws.tmp, "duckdb-query"),
    }
    con = duckdb.connect(":memory:", config=config)
    try:
        con.execute("ATTACH ? AS catalog (READ_ONLY)", [ws.path(ws.catalog_file)])
        con.execute("USE catalog")
        tables = [ws.local_uri(name) + "/" for name in schema.TABLES]
        con.execute("SET allowed_directories = ?", [tables])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def run_query(ws: Workspace, sql: str, limits: QueryLimits) -> QueryResult:
    """Run one read-only SELECT over the catalog within ``limits``."""
    con = open_sandbox(ws, limits)
    timer = threading.Timer(limits.timeout_s, con.interrupt)
    try:
        check_statement(con, sql)
        timer.start()
        try:
            relation = con.sql(sql)
            table = relation.limit(limits.max_rows + 1).to_arrow_table()
        except duckdb.InterruptException:
            raise QueryError("query_timeout", f"interrupted after {limits.timeout_s:g} s") from None
        except duckdb.Error as e:
            raise QueryError("query_failed", first_line(e)) from None
    finally:
        timer.cancel()
        con.close()
    if table.nbytes > limits.max_bytes:
        raise QueryError("result_too_large", f"result is {table.nbytes} bytes, the limit {limits.max_bytes}")
    truncated = table.num_rows > limits.max_rows
    table = table.slice(0, limits.max_rows)
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    rows = [list(row) for row in zip(*(json_values(c) for c in table.columns), strict=True)]
    if table.num_columns == 0:
        rows = []
    return QueryResult(columns, rows, truncated)


def json_values(column: pa.ChunkedArray) -> list:
    return [json_safe(v) for v in column.to_pylist()]


def json_safe(value):
    """A Python value from Arrow -> one JSON can carry: NaN/inf -> null, bytes -> base64, dates ->
    ISO 8601, decimals -> float, structs/maps/lists recursively; anything else -> str."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):  # lists, and maps (Arrow gives [(key, value), ...])
        return [json_safe(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return json_safe(float(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
